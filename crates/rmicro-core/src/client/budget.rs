//! How much a client may retry, and how long it waits before it does.
//!
//! A [`RetryBudget`] caps the retries of all calls a client makes to a share of the
//! calls it made recently (Finagle's and Envoy's retry budgets): when a backend fails
//! every call, the client adds at most that share to its load instead of multiplying
//! it by the retry count (a retry storm). [`Backoff`] spaces the retries that are
//! allowed: exponential, with full jitter, and the server's `grpc-retry-pushback-ms`
//! obeyed where it sends one.

use crate::selector::hash::random_below;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// The retry budget of a client: retries in the last [`window`](Self::window) may
/// reach [`percent`](Self::percent) of the calls started in it, and never fewer than
/// [`min_per_second`](Self::min_per_second) a second (so a client that makes few
/// calls can still retry them). Defaults: 20 %, 10 a second, a 10 s window.
///
/// The reserve is a floor, as Envoy's `min_retry_concurrency` is, rather than
/// Finagle's addition: under load the retries stay within the percentage, so a
/// backend that fails everything sees at most 1.2× the calls by default.
///
/// ```
/// # extern crate rmicro_core as rmicro;
/// use rmicro::client::{ClientOptions, RetryBudget};
/// let options = ClientOptions {
///     retry_budget: RetryBudget::default().percent(10.0).min_per_second(5),
///     ..ClientOptions::default()
/// };
/// assert_eq!(options.retry_budget.percent_value(), 10.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    percent: f64,
    min_per_second: u32,
    window: Duration,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            percent: 20.0,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

impl RetryBudget {
    /// A budget that allows every retry the per-call retry count allows.
    pub fn unlimited() -> Self {
        RetryBudget {
            percent: f64::INFINITY,
            ..RetryBudget::default()
        }
    }

    /// Retries may reach `percent` % of the calls in the window (clamped to ≥ 0).
    pub fn percent(mut self, percent: f64) -> Self {
        self.percent = if percent.is_nan() {
            0.0
        } else {
            percent.max(0.0)
        };
        self
    }

    /// Whatever the share, this many retries a second are allowed.
    pub fn min_per_second(mut self, per_second: u32) -> Self {
        self.min_per_second = per_second;
        self
    }

    /// How far back calls and retries are counted (whole seconds, 1 to 60).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window.clamp(Duration::from_secs(1), Duration::from_secs(BUCKETS as u64));
        self
    }

    /// The share of calls that may be retried, in percent.
    pub fn percent_value(&self) -> f64 {
        self.percent
    }

    /// The retries a second allowed whatever the share.
    pub fn min_per_second_value(&self) -> u32 {
        self.min_per_second
    }

    /// How far back calls and retries are counted.
    pub fn window_value(&self) -> Duration {
        self.window
    }
}

/// Most seconds a window can span.
const BUCKETS: usize = 60;

/// A count for one second, the second (mod 2^16) in the top 16 bits.
struct Counter([AtomicU64; BUCKETS]);

const COUNT_BITS: u32 = 48;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

impl Counter {
    fn new() -> Self {
        Counter(std::array::from_fn(|_| AtomicU64::new(0)))
    }

    /// Adds one to second `second`'s bucket (restarting a bucket left from before).
    fn add(&self, second: u64) {
        let stamp = (second & 0xffff) << COUNT_BITS;
        let bucket = &self.0[(second % BUCKETS as u64) as usize];
        let mut current = bucket.load(Ordering::Relaxed);
        loop {
            let next = if current & !COUNT_MASK == stamp {
                current + 1
            } else {
                stamp | 1
            };
            match bucket.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// The sum over the `seconds` seconds ending with `second`.
    fn sum(&self, second: u64, seconds: u64) -> u64 {
        (0..seconds.min(second + 1))
            .map(|back| {
                let s = second - back;
                let value = self.0[(s % BUCKETS as u64) as usize].load(Ordering::Relaxed);
                if value >> COUNT_BITS == s & 0xffff {
                    value & COUNT_MASK
                } else {
                    0
                }
            })
            .sum()
    }
}

/// A client's live budget: calls and retries counted per second.
pub(crate) struct Budget {
    settings: RetryBudget,
    origin: Instant,
    calls: Counter,
    retries: Counter,
}

impl Budget {
    pub(crate) fn new(settings: RetryBudget) -> Self {
        Budget {
            settings,
            origin: Instant::now(),
            calls: Counter::new(),
            retries: Counter::new(),
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    /// Counts a call starting at `now`.
    pub(crate) fn deposit(&self, now: Instant) {
        if self.settings.percent.is_finite() {
            self.calls.add(self.second(now));
        }
    }

    /// Whether one more retry fits the budget; counts it when it does.
    pub(crate) fn withdraw(&self, now: Instant) -> bool {
        let settings = &self.settings;
        if !settings.percent.is_finite() {
            return true;
        }
        let second = self.second(now);
        let seconds = settings.window.as_secs().max(1);
        let calls = self.calls.sum(second, seconds) as f64;
        let share = (calls * settings.percent / 100.0).floor() as u64;
        let floor = u64::from(settings.min_per_second) * seconds;
        if self.retries.sum(second, seconds) >= share.max(floor) {
            return false;
        }
        self.retries.add(second);
        true
    }
}

/// How long a client waits before a retry: exponential backoff with full jitter
/// (attempt *n* waits a uniformly random time in `0..min(max, initial × 2^(n-1))`),
/// as gRPC's retry design (gRFC A6) and AWS's "full jitter" describe. A retry to
/// another node after the first could not be reached goes at once. Where the server
/// answered with `grpc-retry-pushback-ms`, the client waits exactly that long, and
/// does not retry at all when it is negative. Defaults: 50 ms, at most 1 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The longest first wait.
    pub initial: Duration,
    /// The longest any wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// The wait before the `n`-th retry that backs off (1-based).
    pub(crate) fn delay(&self, n: u32) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(2u32.saturating_pow(n.saturating_sub(1)))
            .min(self.max);
        let micros = usize::try_from(ceiling.as_micros()).unwrap_or(usize::MAX);
        if micros == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(random_below(micros) as u64)
    }
}

/// What a server's `grpc-retry-pushback-ms` says: wait this long, or do not retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushback {
    /// Retry after exactly this long.
    After(Duration),
    /// The server asked not to be retried (a negative or unreadable value).
    Stop,
}

impl Pushback {
    /// Reads the header's value (gRFC A6: a non-negative integer of milliseconds;
    /// anything else means "do not retry").
    pub(crate) fn parse(value: &[u8]) -> Pushback {
        std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map_or(Pushback::Stop, |ms| {
                Pushback::After(Duration::from_millis(ms))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_busy_client_retries_at_most_its_share() {
        let budget = Budget::new(RetryBudget::default());
        let now = Instant::now();
        for _ in 0..1000 {
            budget.deposit(now);
        }
        let allowed = (0..1000).filter(|_| budget.withdraw(now)).count();
        assert_eq!(allowed, 200, "20 % of 1000 calls");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_client_may_retry_its_reserve() {
        let budget = Budget::new(RetryBudget::default());
        let now = Instant::now();
        budget.deposit(now);
        let allowed = (0..1000).filter(|_| budget.withdraw(now)).count();
        assert_eq!(allowed, 100, "10 a second over the 10 s window");
    }

    #[tokio::test(start_paused = true)]
    async fn spent_retries_come_back_when_they_leave_the_window() {
        let budget = Budget::new(RetryBudget::default().min_per_second(0));
        let start = Instant::now();
        for _ in 0..100 {
            budget.deposit(start);
        }
        assert_eq!((0..100).filter(|_| budget.withdraw(start)).count(), 20);
        // Nine seconds on, the same calls and retries are still counted.
        let later = start + Duration::from_secs(9);
        assert!(!budget.withdraw(later));
        // Past the window both have gone; new calls earn new retries.
        let past = start + Duration::from_secs(10);
        assert!(!budget.withdraw(past), "no calls in the window, no share");
        for _ in 0..10 {
            budget.deposit(past);
        }
        assert_eq!((0..10).filter(|_| budget.withdraw(past)).count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_from_a_minute_ago_is_not_counted_again() {
        let budget = Budget::new(RetryBudget::default().min_per_second(0));
        let start = Instant::now();
        for _ in 0..50 {
            budget.deposit(start);
        }
        // The same bucket, sixty seconds later: the old count must not leak in.
        let again = start + Duration::from_secs(BUCKETS as u64);
        budget.deposit(again);
        assert_eq!(budget.calls.sum(budget.second(again), 10), 1);
    }

    #[test]
    fn unlimited_allows_everything() {
        let budget = Budget::new(RetryBudget::unlimited());
        assert!((0..10_000).all(|_| budget.withdraw(Instant::now())));
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_ceiling() {
        let backoff = Backoff::default();
        for n in 1..8 {
            let ceiling = (Duration::from_millis(50) * 2u32.pow(n - 1)).min(Duration::from_secs(1));
            let waits: Vec<_> = (0..200).map(|_| backoff.delay(n)).collect();
            assert!(waits.iter().all(|w| *w < ceiling), "attempt {n}: {waits:?}");
            // Jittered: not all the same, and some in the lower half.
            assert!(waits.iter().any(|w| *w < ceiling / 2), "attempt {n}");
            assert!(waits.iter().any(|w| *w >= ceiling / 2), "attempt {n}");
        }
        let none = Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert_eq!(none.delay(3), Duration::ZERO);
    }

    #[test]
    fn pushback_is_read_as_grpc_says() {
        assert_eq!(
            Pushback::parse(b"250"),
            Pushback::After(Duration::from_millis(250))
        );
        assert_eq!(Pushback::parse(b"0"), Pushback::After(Duration::ZERO));
        assert_eq!(Pushback::parse(b"-1"), Pushback::Stop);
        assert_eq!(Pushback::parse(b"soon"), Pushback::Stop);
        assert_eq!(Pushback::parse(b"\xff"), Pushback::Stop);
    }
}
