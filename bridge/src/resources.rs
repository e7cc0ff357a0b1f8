//! What the process asks of the machine: the allocator, the open-files limit, and the share
//! of descriptors HTTP may take.
//!
//! At start the soft limit on open files is raised to the hard limit, and HTTP is held
//! under a quarter of it ([`http_share`]), so a flood of HTTP sockets cannot take the
//! descriptors MQTT clients need. Both accept loops outlive "Too many open files".
//!
//! The global allocator is jemalloc with its background purging threads on: freed pages go
//! back to the OS within about ten seconds (its default `dirty_decay_ms`), whichever thread
//! freed them and whether or not that thread allocates again. With glibc's malloc the peak
//! of a burst stayed in its per-thread arenas for good, and mimalloc kept most of it too
//! (measured: `bench/idle_rss.py`, numbers in the README).

/// See the module docs.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Turns on jemalloc's background threads, which return freed pages to the OS over
/// `dirty_decay_ms` even while every other thread is idle; without them jemalloc purges only
/// when an arena is used again, and an idle bridge would keep the peak of its last burst.
pub(crate) fn start_memory_purging() {
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "cannot start jemalloc's background threads: freed memory \
                                    may stay resident after a burst");
    }
}

/// Raises the soft limit on open files to the hard limit; the limit in force, if known.
pub(crate) fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(files) => {
                tracing::debug!(open_files = files, "open-files limit");
                Some(files)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read or raise the open-files limit");
                None
            }
        }
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The HTTP connection cap in force: `configured`, but never more than a quarter of the
/// open-files limit, so HTTP leaves three quarters of the descriptors to MQTT, the store
/// and the rest. At least one.
pub(crate) fn http_share(configured: usize, files: Option<u64>) -> usize {
    let Some(files) = files else {
        return configured;
    };
    let quarter = usize::try_from(files / 4).unwrap_or(usize::MAX).max(1);
    if configured > quarter {
        tracing::info!(
            max_http_connections = configured,
            open_files = files,
            "HTTP connections capped at {quarter}, a quarter of the open-files limit"
        );
        quarter
    } else {
        configured
    }
}
