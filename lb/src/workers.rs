//! The worker pool: thread per core, as HAProxy's threads and nginx's workers.
//!
//! Every worker is a current-thread tokio runtime with its own listening sockets
//! (`SO_REUSEPORT`), and a connection stays on the thread that accepted it: no work-stealing
//! queues, cross-thread wake-ups or atomics on the task path, which is measurably cheaper per
//! connection than tokio's multi-threaded scheduler (`bench/`). The calling thread is worker
//! 0 and also runs the admin listener, health checks and reloads.

use std::thread::JoinHandle;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio_util::sync::CancellationToken;

/// A running pool; dropping it stops the extra threads and waits for them.
pub struct Pool {
    /// Worker 0's runtime, driven by the thread that made the pool (`block_on`).
    pub main: Runtime,
    /// One handle per worker, worker 0 first: what [`crate::Options::runtimes`] takes.
    pub handles: Vec<Handle>,
    stop: CancellationToken,
    threads: Vec<JoinHandle<()>>,
}

/// A worker thread or runtime could not be started.
#[derive(Debug, thiserror::Error)]
#[error("starting worker {worker}: {source}")]
pub struct PoolError {
    /// Which worker.
    pub worker: usize,
    /// The error from the OS.
    #[source]
    pub source: std::io::Error,
}

/// The default worker count: one per core the process may run on.
pub fn default_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl Pool {
    /// Starts `workers` workers (at least one): this thread's runtime and `workers - 1`
    /// threads, each parked in its own runtime until the pool is dropped.
    pub fn start(workers: usize) -> Result<Pool, PoolError> {
        let main = Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| PoolError { worker: 0, source })?;
        let mut pool = Pool {
            handles: vec![main.handle().clone()],
            main,
            stop: CancellationToken::new(),
            threads: Vec::new(),
        };
        for i in 1..workers.max(1) {
            let (tx, rx) = std::sync::mpsc::channel();
            let stop = pool.stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("tether-worker-{i}"))
                .spawn(
                    move || match Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => {
                            let _ = tx.send(Ok(rt.handle().clone()));
                            rt.block_on(stop.cancelled());
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    },
                )
                .map_err(|source| PoolError { worker: i, source })?;
            pool.threads.push(thread);
            let handle = rx
                .recv()
                .map_err(|_| PoolError {
                    worker: i,
                    source: std::io::Error::other("the thread ended at start"),
                })?
                .map_err(|source| PoolError { worker: i, source })?;
            pool.handles.push(handle);
        }
        Ok(pool)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop.cancel();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_runs_on_its_own_thread_and_all_stop_on_drop() {
        let pool = Pool::start(3).unwrap();
        assert_eq!(pool.handles.len(), 3);
        let names: Vec<String> = pool.handles[1..]
            .iter()
            .map(|h| {
                pool.main.block_on(async {
                    h.spawn(async { std::thread::current().name().map(str::to_string) })
                        .await
                        .unwrap()
                        .unwrap_or_default()
                })
            })
            .collect();
        assert_eq!(names, ["tether-worker-1", "tether-worker-2"]);
        drop(pool);
    }
}
