//! The checkpointer: a thread with a connection of its own that folds the write-ahead log
//! into the database, so that the engine's thread mostly only appends to the log.
//!
//! A checkpoint copies every page the log holds into the database file and (unless
//! `durability = "none"`) syncs both. Run by the committing connection, as SQLite's
//! automatic checkpoints are, it stalled the engine: with `durability = "interval"` a
//! run of 10 000 messages to 100 offline sessions went 30 % faster with checkpoints held
//! off (BENCHMARKS.md, section 6). Here the engine's connection asks for one after each
//! [`CHECKPOINT_PAGES`] pages its commits add to the log (a `wal_hook`, which replaces the
//! automatic checkpoint), and the checkpointer runs it beside the engine: a passive
//! checkpoint never blocks the writer.
//!
//! The log stays bounded: SQLite starts it over at the first commit after a checkpoint
//! that copied all of it, which a busy writer keeps from happening (it commits while the
//! checkpoint runs), so a commit that leaves [`WAL_BOUND_PAGES`] pages checkpoints on the
//! engine's connection itself and starts the log over. It waits for a checkpoint the
//! checkpointer is running (SQLite would refuse it at once: its checkpoint lock calls no
//! busy handler, so the two take a lock of ours first), which has copied most of the log
//! by then: this one copies the rest.
//!
//! `durability = "interval"` must know when what it acknowledged is synced: the store
//! counts its commits ([`Checkpointer::committed`]), and a checkpoint that copied the whole
//! log (a passive one that found no reader in its way) marks every commit counted before it
//! began as synced. Until all are, each due tick asks again ([`Checkpointer::synced_all`]).

use std::os::raw::c_int;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, OpenFlags};

use crate::Metrics;

/// Pages added to the log after which a commit asks for a checkpoint. A page rewritten by
/// many batches in between is copied once.
pub(super) const CHECKPOINT_PAGES: c_int = 1000;

/// Pages in the log (4 KB each: 16 MB) after which the engine's connection checkpoints
/// itself, waiting for the checkpointer if it is running one, and starts the log over.
pub(super) const WAL_BOUND_PAGES: c_int = 4 * CHECKPOINT_PAGES;

/// At most one warning about failed checkpoints per this long (a failure repeats at every
/// tick while its cause lasts).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What the checkpointer is asked.
enum Wake {
    Checkpoint,
    Stop,
}

/// What the store, its hook and the thread share.
#[derive(Default)]
struct Shared {
    /// Commits of the store so far.
    committed: AtomicU64,
    /// Commits known synced: counted before a checkpoint that copied the whole log began.
    synced: AtomicU64,
    /// Held while either connection checkpoints (see the module docs).
    checkpointing: Mutex<()>,
    /// When a failed checkpoint was last logged.
    warned: Mutex<Option<Instant>>,
}

impl Shared {
    fn checkpointing(&self) -> std::sync::MutexGuard<'_, ()> {
        // Nothing it guards can be left half-done by a panic.
        self.checkpointing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks the commits counted before `covers` was read as synced.
    /// What a checkpoint that began when `covers` commits were counted did (`done`: it
    /// finished, and the log's and the copied pages): with the whole log copied, those
    /// commits are synced (true); held up by a reader, or failed, it is warned about.
    fn checked(
        &self,
        covers: u64,
        done: rusqlite::Result<(bool, c_int, c_int)>,
        what: &str,
    ) -> bool {
        match done {
            Ok((true, log, copied)) if log == copied => {
                self.synced.fetch_max(covers, Ordering::AcqRel);
                true
            }
            Ok((_, log, copied)) => {
                self.warn(
                    &format!("{what} was held up by a reader of the database"),
                    &format!("{copied} of {log} pages copied"),
                );
                false
            }
            Err(e) => {
                self.warn(&format!("{what} failed"), &e);
                false
            }
        }
    }

    fn warn(&self, what: &str, detail: &dyn std::fmt::Display) {
        let mut warned = self
            .warned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *warned = Some(Instant::now());
            tracing::warn!(%detail, "{what}; the next checkpoint tries again");
        }
    }
}

/// The checkpointer's thread, and how to wake it. Dropping it stops the thread (after the
/// checkpoint it is running and one more if asked for) and closes its connection.
pub(super) struct Checkpointer {
    wake: SyncSender<Wake>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer").finish_non_exhaustive()
    }
}

/// Why the checkpointer could not start.
pub(super) enum StartError {
    Sql(rusqlite::Error),
    Thread(std::io::Error),
}

impl From<rusqlite::Error> for StartError {
    fn from(e: rusqlite::Error) -> Self {
        StartError::Sql(e)
    }
}

impl Checkpointer {
    /// Opens a second connection to `file` (synced as `synchronous` says) and starts the
    /// thread; hooks `conn`'s commits to it. Checkpoint times go to `metrics` once set.
    pub(super) fn start(
        conn: &mut Connection,
        file: &std::path::Path,
        synchronous: &str,
        metrics: Arc<OnceLock<Arc<Metrics>>>,
    ) -> Result<Checkpointer, StartError> {
        let own = Connection::open_with_flags(
            file,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        own.execute_batch(&format!("PRAGMA synchronous = {synchronous};"))?;
        own.busy_timeout(Duration::from_millis(500))?;
        let shared = Arc::new(Shared::default());
        // At most one request waits: a commit finding one there adds nothing to it.
        let (wake, woken) = sync_channel(1);
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("broker-checkpoint".into())
                .spawn(move || {
                    while let Ok(Wake::Checkpoint) = woken.recv() {
                        let covers = shared.committed.load(Ordering::Acquire);
                        let started = Instant::now();
                        let _guard = shared.checkpointing();
                        // (busy, pages in the log, pages copied)
                        let done = own.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                            Ok((
                                row.get::<_, c_int>(0)?,
                                row.get::<_, c_int>(1)?,
                                row.get::<_, c_int>(2)?,
                            ))
                        });
                        let done = done.map(|(busy, log, copied)| (busy == 0, log, copied));
                        if shared.checked(covers, done, "a WAL checkpoint") {
                            if let Some(m) = metrics.get() {
                                m.store_synced(started.elapsed());
                            }
                        }
                    }
                })
                .map_err(StartError::Thread)?
        };
        let asks = wake.clone();
        let hooked = shared.clone();
        // The log's length when a checkpoint was last asked for.
        let mut asked_at: c_int = 0;
        conn.wal_hook(Some(move |wal: &mut Wal, pages: c_int| {
            if pages < asked_at {
                // The log started over.
                asked_at = 0;
            }
            if pages >= WAL_BOUND_PAGES {
                let covers = hooked.committed.load(Ordering::Acquire);
                let _guard = hooked.checkpointing();
                // Errors are not the commit's (it is done): the next commit tries again.
                let done = wal
                    .checkpoint_v2(CheckpointMode::RESTART)
                    .map(|(log, copied)| (true, log, copied));
                hooked.checked(covers, done, "the engine's WAL checkpoint");
                asked_at = 0;
            } else if pages - asked_at >= CHECKPOINT_PAGES {
                let _ = asks.try_send(Wake::Checkpoint);
                asked_at = pages;
            }
            Ok(())
        }))?;
        Ok(Checkpointer {
            wake,
            shared,
            thread: Some(thread),
        })
    }

    /// Counts a commit of the store's.
    pub(super) fn committed(&self) {
        self.shared.committed.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether every commit counted so far is known synced.
    pub(super) fn synced_all(&self) -> bool {
        self.shared.synced.load(Ordering::Acquire) >= self.shared.committed.load(Ordering::Acquire)
    }

    /// Asks for a checkpoint now (`durability = "interval"`: it syncs the log), unless one
    /// is asked for already.
    pub(super) fn ask(&self) {
        let _ = self.wake.try_send(Wake::Checkpoint);
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // The hook's sender keeps the channel open: stop the thread by asking (behind a
        // request that may be waiting).
        let _ = self.wake.send(Wake::Stop);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the WAL checkpointer's thread panicked");
            }
        }
    }
}
