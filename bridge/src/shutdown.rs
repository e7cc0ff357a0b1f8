//! Graceful shutdown: the signals that start it, and the bookkeeping that lets it wait for
//! connection tasks and then drop the ones that do not end. Also SIGHUP, which asks for a
//! reload (see `reload` in main.rs) and stops nothing.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long shutdown lets connections finish by themselves (write the DISCONNECT the broker
/// queued, end an HTTP request) before the rest are dropped.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How long dropped connections get to go away after that.
pub(crate) const ABORT_GRACE: Duration = Duration::from_secs(1);

/// Shutdown bookkeeping, cloned into every connection task.
///
/// Shutdown first lets the broker close the sessions it knows, which queues DISCONNECT
/// 0x8B for 5.0 clients; connection tasks then end by themselves. What is still running
/// after [`DRAIN_GRACE`] (a socket that never sent CONNECT, a half-sent HTTP request) is
/// dropped through `abort`.
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    /// Dropped with the task; shutdown waits until every clone is gone.
    alive: mpsc::Sender<()>,
    /// Cancelled when the drain grace is over.
    pub(crate) abort: CancellationToken,
}

impl Tracker {
    pub(crate) fn new() -> (Tracker, mpsc::Receiver<()>) {
        let (alive, finished) = mpsc::channel(1);
        let tracker = Tracker {
            alive,
            abort: CancellationToken::new(),
        };
        (tracker, finished)
    }

    /// A handle for the router: it lives as long as the HTTP connections do, which shutdown
    /// does not wait for, so it must not keep shutdown waiting.
    pub(crate) fn downgrade(&self) -> WeakTracker {
        WeakTracker {
            alive: self.alive.downgrade(),
            abort: self.abort.clone(),
        }
    }

    /// Runs the future `task` makes until it ends or shutdown aborts it, holding `self`
    /// meanwhile.
    ///
    /// Takes a maker rather than the future: an `async fn` keeps its arguments for its whole
    /// life, so a future passed in would be held twice (the argument, and its moved copy in
    /// the `select!`), and every connection task, idle or not, would be twice its size (a
    /// plain TCP connection's: 4 688 bytes instead of 2 400 in the debug build).
    pub(crate) async fn run<F>(self, task: impl FnOnce() -> F)
    where
        F: std::future::Future<Output = ()>,
    {
        tokio::select! {
            () = task() => {}
            () = self.abort.cancelled() => tracing::debug!("connection dropped at shutdown"),
        }
    }
}

/// A [`Tracker`] that does not count as a running task.
#[derive(Debug, Clone)]
pub(crate) struct WeakTracker {
    alive: mpsc::WeakSender<()>,
    abort: CancellationToken,
}

impl WeakTracker {
    /// A tracker for a new task; `None` once every task has ended and shutdown is final.
    pub(crate) fn upgrade(&self) -> Option<Tracker> {
        Some(Tracker {
            alive: self.alive.upgrade()?,
            abort: self.abort.clone(),
        })
    }
}

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// SIGINT or SIGTERM (named): shut down.
    Stop(&'static str),
    /// SIGHUP: read the files that can change while running again (certificates), keep
    /// serving.
    Reload,
}

/// SIGINT, SIGTERM and SIGHUP, installed up front (so SIGHUP no longer ends the process).
#[derive(Debug)]
pub(crate) struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    pub(crate) fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    #[cfg(not(unix))]
    pub(crate) fn new() -> std::io::Result<Signals> {
        Ok(Signals {})
    }

    /// Waits for the next signal.
    #[cfg(unix)]
    pub(crate) async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.interrupt.recv() => Signal::Stop("SIGINT"),
            _ = self.terminate.recv() => Signal::Stop("SIGTERM"),
            _ = self.hangup.recv() => Signal::Reload,
        }
    }

    #[cfg(not(unix))]
    pub(crate) async fn recv(&mut self) -> Signal {
        let _ = tokio::signal::ctrl_c().await;
        Signal::Stop("Ctrl-C")
    }
}
