//! Thread-per-core serving: worker threads that each run a single-threaded tokio
//! runtime, and client channels that keep one connection per node for each of them.
//!
//! On tokio's work-stealing runtime a proxied call crosses cores as a matter of
//! course: the HTTP connection's task on one worker hands the call to the client
//! connection's task on another, and the reply's buffers are freed on a core other
//! than the one that made them. Served from [`Shards`], a connection's requests, the
//! calls they make and the client connections those calls go out on all stay on
//! one thread — the layout of nginx and Envoy.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many workers channels made from now on keep a connection per node for
/// (the most any [`Shards`] asked for; 0 when none did).
static SHARDS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The connection slot this thread's calls use: worker `i` of a [`Shards`]
    /// uses slot `i + 1`; every other thread slot 0.
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// The number of connection slots a channel made now keeps per node: one for
/// each worker, and one for every thread that is not a worker (so that a call
/// made elsewhere never puts a worker's connection on another thread).
pub(crate) fn slots() -> usize {
    SHARDS.load(Ordering::Relaxed) + 1
}

/// The slot this thread's calls use, of a channel's `len`.
pub(crate) fn slot(len: usize) -> usize {
    SLOT.with(Cell::get) % len.max(1)
}

/// Worker threads, each running a single-threaded tokio runtime, to spawn
/// connections on round-robin. Client channels made after [`Shards::start`] keep
/// one connection per node for each worker, dialled and driven on that worker, so
/// a call never leaves its thread.
///
/// Dropping it stops the workers: the tasks still on them are dropped.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// let shards = rmicro_core::transport::Shards::start(2, "example")?;
/// let (tx, rx) = std::sync::mpsc::channel();
/// shards.next().spawn(async move { tx.send(std::thread::current().name().map(str::to_owned)) });
/// let name = rx.recv().unwrap();
/// assert!(name.unwrap().starts_with("example-"));
/// # Ok(())
/// # }
/// ```
pub struct Shards {
    handles: Vec<tokio::runtime::Handle>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    next: AtomicUsize,
}

impl Shards {
    /// Starts `count` worker threads (at least one), named `<name>-<i>`, each
    /// with a runtime that has I/O and timers enabled.
    pub fn start(count: usize, name: &str) -> std::io::Result<Shards> {
        let count = count.max(1);
        SHARDS.fetch_max(count, Ordering::Relaxed);
        let mut handles = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || {
                    SLOT.with(|slot| slot.set(index + 1));
                    // Runs the tasks spawned on it until told to stop (or until
                    // the `Shards` is gone); dropping the runtime then drops them.
                    let _ = runtime.block_on(stopped);
                })?;
        }
        Ok(Shards {
            handles,
            stops,
            next: AtomicUsize::new(0),
        })
    }

    /// The workers' runtimes, in order.
    pub fn handles(&self) -> &[tokio::runtime::Handle] {
        &self.handles
    }

    /// The next worker's runtime, round-robin.
    pub fn next(&self) -> &tokio::runtime::Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.handles[i % self.handles.len()]
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

/// Pads `T` to its own cache lines, so that slots used by different threads do
/// not share one.
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_take_turns_and_know_their_slot() {
        let shards = Shards::start(3, "shard-test").unwrap();
        assert!(slots() >= 4);
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..6 {
            let tx = tx.clone();
            shards.next().spawn(async move {
                let name = std::thread::current().name().map(str::to_owned);
                tx.send((name, slot(4))).unwrap();
            });
        }
        let mut seen: Vec<(Option<String>, usize)> = (0..6)
            .map(|_| {
                rx.recv_timeout(std::time::Duration::from_secs(10))
                    .expect("every worker runs its tasks")
            })
            .collect();
        seen.sort();
        let expected: Vec<(Option<String>, usize)> = (0..3)
            .flat_map(|i| std::iter::repeat_n((Some(format!("shard-test-{i}")), i + 1), 2))
            .collect();
        assert_eq!(seen, expected);
        // Outside the workers, slot 0.
        assert_eq!(slot(4), 0);
    }

    #[test]
    fn dropping_the_shards_stops_their_tasks() {
        let shards = Shards::start(1, "shard-stop").unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        shards.next().spawn(async move {
            // Held until the task is dropped.
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(shards);
        // The sender is dropped with the task: recv ends with an error, not a hang.
        assert!(
            rx.recv_timeout(std::time::Duration::from_secs(10))
                .is_err_and(|e| e == std::sync::mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
