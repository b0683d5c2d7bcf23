//! The limits: rate, burst, scope and mode, and the token buckets they fill.

use super::RateLimitService;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where rate limits come from: [`RateLimit::per_second`].
#[derive(Debug, Clone, Copy)]
pub struct RateLimit;

impl RateLimit {
    /// `n` calls per second (at least one), for all calls together, refusing the
    /// rest; see the [module docs](super).
    pub fn per_second(n: u32) -> RateLimitLayer {
        RateLimitLayer::new(n)
    }
}

/// Which calls share a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// All calls through the wrapper.
    Global,
    /// Each endpoint (`Greeter.SayHello`) on its own.
    PerEndpoint,
    /// Each caller IP address on its own (server side; calls without a peer share one).
    PerPeer,
    /// Each value of this metadata key (e.g. `x-user-id`) on its own; calls without
    /// it share one bucket.
    PerMetadata(String),
}

/// What happens to a call over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Refused at once (the default).
    Reject,
    /// Waits up to this long for a token, then is refused.
    Wait(Duration),
}

/// The rate limiter as a tower layer; see the [module docs](super). Clones share
/// their buckets.
#[derive(Clone)]
pub struct RateLimitLayer {
    pub(super) limits: Arc<Limits>,
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("per_second", &self.limits.per_second)
            .field("burst", &self.limits.burst)
            .field("scope", &self.limits.scope)
            .field("mode", &self.limits.mode)
            .finish()
    }
}

/// A limit and its buckets.
pub(super) struct Limits {
    per_second: NonZeroU32,
    burst: NonZeroU32,
    pub(super) scope: Scope,
    pub(super) mode: Mode,
    buckets: Buckets,
    /// Calls refused so far.
    refused: AtomicU64,
}

enum Buckets {
    One(DefaultDirectRateLimiter),
    Keyed {
        limiter: DefaultKeyedRateLimiter<String>,
        /// Calls since the idle keys were last dropped.
        calls: AtomicU64,
    },
}

/// Every so many calls, keys whose buckets are full again are dropped, so a
/// stream of distinct keys cannot grow the table without bound.
const PRUNE_EVERY: u64 = 4096;

impl RateLimitLayer {
    fn new(per_second: u32) -> Self {
        let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(per_second.get() / 10).unwrap_or(NonZeroU32::MIN);
        RateLimitLayer {
            limits: LIVE.add(Limits::new(per_second, burst, Scope::Global, Mode::Reject)),
        }
    }

    /// Which calls share a bucket (default [`Scope::Global`]).
    pub fn scope(self, scope: Scope) -> Self {
        let l = &self.limits;
        Self::from_limits(Limits::new(l.per_second, l.burst, scope, l.mode))
    }

    /// What happens over the limit (default [`Mode::Reject`]).
    pub fn mode(self, mode: Mode) -> Self {
        let l = &self.limits;
        Self::from_limits(Limits::new(l.per_second, l.burst, l.scope.clone(), mode))
    }

    /// How many calls may pass at once after a quiet spell (default: a tenth of a
    /// second's worth, at least one).
    pub fn burst(self, burst: u32) -> Self {
        let l = &self.limits;
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Self::from_limits(Limits::new(l.per_second, burst, l.scope.clone(), l.mode))
    }

    /// Takes a token for one request outside a tower stack — an HTTP gateway
    /// limiting each client by its IP or a header — from `key`'s bucket (the one
    /// bucket under [`Scope::Global`], where `key` is not read). `Err` holds how
    /// long until the bucket has a token again; the refusal is counted as the
    /// layer's own are.
    pub fn admit(&self, key: Option<&str>) -> Result<(), Duration> {
        self.limits
            .take(key)
            .inspect_err(|_| self.limits.count_refusal())
    }

    /// The limit as a caller reads it: `1000/s`.
    pub fn rate(&self) -> String {
        self.limits.rate()
    }

    /// Which requests share a bucket.
    pub fn scope_of(&self) -> &Scope {
        &self.limits.scope
    }

    fn from_limits(limits: Limits) -> Self {
        RateLimitLayer {
            limits: LIVE.add(limits),
        }
    }
}

/// Every rate limit alive in the process, for `/metrics`.
static LIVE: crate::sync::Live<Limits> = crate::sync::Live::new();

/// Each live rate limit: its rate (`200/s`), its scope, and the calls it refused.
pub(crate) fn refusals() -> Vec<(String, &'static str, u64)> {
    LIVE.alive()
        .iter()
        .map(|l| {
            let scope = match l.scope {
                Scope::Global => "global",
                Scope::PerEndpoint => "endpoint",
                Scope::PerPeer => "peer",
                Scope::PerMetadata(_) => "metadata",
            };
            (l.rate(), scope, l.refused.load(Ordering::Relaxed))
        })
        .collect()
}

impl Limits {
    fn new(per_second: NonZeroU32, burst: NonZeroU32, scope: Scope, mode: Mode) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        let buckets = match scope {
            Scope::Global => Buckets::One(governor::RateLimiter::direct(quota)),
            _ => Buckets::Keyed {
                limiter: governor::RateLimiter::keyed(quota),
                calls: AtomicU64::new(0),
            },
        };
        Limits {
            per_second,
            burst,
            scope,
            mode,
            buckets,
            refused: AtomicU64::new(0),
        }
    }

    /// Counts a refused call.
    pub(super) fn count_refusal(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a token from `key`'s bucket (the one bucket for [`Scope::Global`]), or
    /// says how long until one is there.
    pub(super) fn take(&self, key: Option<&str>) -> Result<(), Duration> {
        match &self.buckets {
            Buckets::One(limiter) => limiter
                .check()
                .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now())),
            Buckets::Keyed { limiter, calls } => {
                if calls.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
                limiter
                    .check_key(&key.unwrap_or_default().to_owned())
                    .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
            }
        }
    }

    /// `1000/s`: the limit as a caller reads it.
    pub(super) fn rate(&self) -> String {
        format!("{}/s", self.per_second)
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> RateLimitService<S> {
        RateLimitService::new(inner, self.limits.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_a_tenth_of_a_second_and_refuses_the_rest() {
        // 50/s: a bucket of 5, refilled every 20 ms.
        let layer = RateLimit::per_second(50);
        assert_eq!(layer.limits.burst.get(), 5);
        // 1/s with a burst of 5: the loop ends long before the next token.
        let layer = RateLimit::per_second(1).burst(5);
        let admitted = (0..100).filter(|_| layer.limits.take(None).is_ok()).count();
        assert_eq!(admitted, 5);
        let wait = layer.limits.take(None).expect_err("empty");
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(layer.limits.rate(), "1/s");
    }

    #[test]
    fn keys_have_their_own_buckets() {
        let layer = RateLimit::per_second(10).scope(Scope::PerMetadata("x-user-id".into()));
        assert!(layer.limits.take(Some("ann")).is_ok());
        assert!(layer.limits.take(Some("ann")).is_err(), "burst of 1 used");
        assert!(layer.limits.take(Some("bob")).is_ok());
        assert!(layer.limits.take(None).is_ok());
        assert!(layer.limits.take(None).is_err());
    }

    #[test]
    fn admitting_outside_a_stack_takes_the_keys_tokens_and_counts_refusals() {
        let layer = RateLimit::per_second(1).scope(Scope::PerPeer);
        assert!(layer.admit(Some("10.0.0.1")).is_ok());
        let wait = layer.admit(Some("10.0.0.1")).expect_err("burst of 1 used");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(
            layer.admit(Some("10.0.0.2")).is_ok(),
            "another key, another bucket"
        );
        assert_eq!(layer.limits.refused.load(Ordering::Relaxed), 1);
        assert_eq!(layer.rate(), "1/s");
        assert_eq!(layer.scope_of(), &Scope::PerPeer);
    }

    #[test]
    fn burst_and_zero_rates_are_bounded_below_by_one() {
        let layer = RateLimit::per_second(0).burst(0);
        assert!(layer.limits.take(None).is_ok());
        assert!(layer.limits.take(None).is_err());
        let layer = RateLimit::per_second(100).burst(50);
        assert!((0..50).all(|_| layer.limits.take(None).is_ok()));
    }
}
