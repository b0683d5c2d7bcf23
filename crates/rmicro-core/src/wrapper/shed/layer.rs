//! The load-shedding layer: the limit, and the count of calls in flight that every
//! service it builds shares.

use super::LoadShedService;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

/// Refuses calls beyond a number in flight; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    pub(super) limit: Arc<Limit>,
}

/// The limit and the calls in flight under it.
#[derive(Debug)]
pub(super) struct Limit {
    pub(super) max: usize,
    pub(super) in_flight: AtomicUsize,
    /// Calls refused so far.
    pub(super) refused: std::sync::atomic::AtomicU64,
}

/// Every load-shedding limit alive in the process, for `/metrics`.
static LIVE: crate::sync::Live<Limit> = crate::sync::Live::new();

/// Each live limit: its maximum, the calls in flight under it, and those refused.
pub(crate) fn refusals() -> Vec<(usize, usize, u64)> {
    LIVE.alive()
        .iter()
        .map(|l| {
            (
                l.max,
                l.in_flight.load(std::sync::atomic::Ordering::Relaxed),
                l.refused.load(std::sync::atomic::Ordering::Relaxed),
            )
        })
        .collect()
}

impl LoadShedLayer {
    /// At most `max` calls in flight at once (at least one).
    pub fn max_concurrent(max: usize) -> Self {
        LoadShedLayer {
            limit: LIVE.add(Limit {
                max: max.max(1),
                in_flight: AtomicUsize::new(0),
                refused: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// Calls in flight under this limit now.
    pub fn in_flight(&self) -> usize {
        self.limit
            .in_flight
            .load(std::sync::atomic::Ordering::Acquire)
    }
}

impl<S> tower::Layer<S> for LoadShedLayer {
    type Service = LoadShedService<S>;

    fn layer(&self, inner: S) -> LoadShedService<S> {
        LoadShedService::new(inner, self.limit.clone())
    }
}
