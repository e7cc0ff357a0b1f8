//! The checkpointer: a thread with a connection of its own that folds the write-ahead log
//! into the database, so that the engine's thread only appends to the log.
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
//! engine's connection itself, waiting for the checkpointer, and starts the log over. The
//! checkpointer has copied most of it by then: that checkpoint copies the rest only.

use std::os::raw::c_int;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, OnceLock};
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

/// What the checkpointer is asked.
enum Wake {
    Checkpoint,
    Stop,
}

/// The checkpointer's thread, and how to wake it. Dropping it stops the thread (after the
/// checkpoint it may be running) and closes its connection.
pub(super) struct Checkpointer {
    wake: SyncSender<Wake>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer").finish_non_exhaustive()
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
    ) -> Result<Checkpointer, rusqlite::Error> {
        let own = Connection::open_with_flags(
            file,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        own.execute_batch(&format!("PRAGMA synchronous = {synchronous};"))?;
        own.busy_timeout(Duration::from_millis(500))?;
        // At most one request waits: a commit finding one there adds nothing to it.
        let (wake, woken) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("broker-checkpoint".into())
            .spawn(move || {
                while let Ok(Wake::Checkpoint) = woken.recv() {
                    let started = Instant::now();
                    match own.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        Ok(()) => {
                            if let Some(m) = metrics.get() {
                                m.store_synced(started.elapsed());
                            }
                        }
                        // The log keeps its pages for the next one (and stays bounded:
                        // see the module docs).
                        Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
                    }
                }
            })
            .map_err(|e| {
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("starting the checkpointer thread: {e}")),
                )
            })?;
        let asks = wake.clone();
        // The log's length when a checkpoint was last asked for.
        let mut asked_at: c_int = 0;
        conn.wal_hook(Some(move |wal: &mut Wal, pages: c_int| {
            if pages < asked_at {
                // The log started over.
                asked_at = 0;
            }
            if pages >= WAL_BOUND_PAGES {
                // Errors are not the commit's (it is done): the next commit tries again.
                let _ = wal.checkpoint_v2(CheckpointMode::RESTART);
                asked_at = 0;
            } else if pages - asked_at >= CHECKPOINT_PAGES {
                let _ = asks.try_send(Wake::Checkpoint);
                asked_at = pages;
            }
            Ok(())
        }))?;
        Ok(Checkpointer {
            wake,
            thread: Some(thread),
        })
    }

    /// Asks for a checkpoint now (`durability = "interval"`: it syncs the log), unless one
    /// is asked for already.
    pub(super) fn ask(&self) {
        let _ = self.wake.try_send(Wake::Checkpoint);
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // The hook's sender keeps the channel open: stop the thread by asking.
        let _ = self.wake.send(Wake::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
