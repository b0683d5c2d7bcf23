//! Running a subscription's handlers concurrently on the task that reads its
//! messages.

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::future::Future;

/// The handler runs of one subscription: up to its
/// [`concurrency`](super::SubscribeOptions::concurrency) at once, driven by the task
/// that reads the subscription's messages instead of a task per message (which
/// costs a wake-up of another thread per message). Handlers run concurrently, not
/// in parallel: a handler with heavy CPU work should hand it to
/// `tokio::task::spawn_blocking`.
///
/// A consumer loop drives it beside its message source:
///
/// ```
/// # extern crate rmicro_core as rmicro;
/// use futures_util::StreamExt;
/// use rmicro::broker::InFlight;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut messages = futures_util::stream::iter(1..=10u32);
/// let handled = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
/// let mut in_flight = InFlight::new(4);
/// loop {
///     let next = tokio::select! {
///         biased;
///         () = in_flight.progress() => continue,
///         next = messages.next(), if in_flight.has_room() => next,
///     };
///     let Some(n) = next else { break };
///     let handled = handled.clone();
///     in_flight.push(async move {
///         handled.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
///     });
/// }
/// in_flight.finish().await;
/// assert_eq!(handled.load(std::sync::atomic::Ordering::Relaxed), 55);
/// # }
/// ```
pub struct InFlight<F> {
    running: FuturesUnordered<F>,
    limit: usize,
}

impl<F: Future<Output = ()>> InFlight<F> {
    /// Room for `concurrency` runs at once (at least one).
    pub fn new(concurrency: usize) -> Self {
        InFlight {
            running: FuturesUnordered::new(),
            limit: concurrency.max(1),
        }
    }

    /// Whether another run may start now.
    pub fn has_room(&self) -> bool {
        self.running.len() < self.limit
    }

    /// How many runs are under way.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether no run is under way.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Starts `run` (check [`has_room`](Self::has_room) first, or use
    /// [`push_when_room`](Self::push_when_room)).
    pub fn push(&mut self, run: F) {
        self.running.push(run);
    }

    /// Drives the runs; resolves when one of them finishes, and never while none is
    /// under way — so it can sit in a `select!` beside the message source.
    pub async fn progress(&mut self) {
        if self.running.next().await.is_none() {
            std::future::pending::<()>().await;
        }
    }

    /// Drives the runs until there is room, then starts `run`.
    pub async fn push_when_room(&mut self, run: F) {
        while !self.has_room() {
            self.progress().await;
        }
        self.push(run);
    }

    /// Drives every run to its end (after unsubscribing, so that what was taken is
    /// settled).
    pub async fn finish(&mut self) {
        while self.running.next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::InFlight;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn runs_at_most_the_limit_at_once_and_all_to_the_end() {
        let (now, peak, done) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let mut in_flight = InFlight::new(3);
        for i in 0..10u64 {
            let (now, peak, done) = (now.clone(), peak.clone(), done.clone());
            in_flight
                .push_when_room(async move {
                    let current = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(current, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1 + i % 3)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    done.fetch_add(1, Ordering::SeqCst);
                })
                .await;
            assert!(in_flight.len() <= 3);
        }
        in_flight.finish().await;
        assert!(in_flight.is_empty());
        assert_eq!(done.load(Ordering::SeqCst), 10);
        assert_eq!(peak.load(Ordering::SeqCst), 3, "three ran at once");
    }

    #[tokio::test]
    async fn progress_waits_while_nothing_runs() {
        let mut in_flight: InFlight<std::future::Ready<()>> = InFlight::new(1);
        let waited = tokio::time::timeout(Duration::from_millis(20), in_flight.progress()).await;
        assert!(
            waited.is_err(),
            "progress must not resolve with nothing running"
        );
        in_flight.push(std::future::ready(()));
        tokio::time::timeout(Duration::from_secs(5), in_flight.progress())
            .await
            .expect("a finished run resolves progress");
    }
}
