//! The per-endpoint limits.

use super::EndpointTimeoutService;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Time limits per endpoint (`Greeter.SayHello`), with an optional default for the
/// others; see the [module docs](super).
#[derive(Debug, Clone, Default)]
pub struct EndpointTimeouts {
    pub(super) limits: Arc<Limits>,
}

#[derive(Debug, Default)]
pub(super) struct Limits {
    by_endpoint: HashMap<String, Duration>,
    default: Option<Duration>,
}

impl EndpointTimeouts {
    /// No limits yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cuts `endpoint` (`Greeter.SayHello`) after `limit`.
    pub fn endpoint(self, endpoint: impl Into<String>, limit: Duration) -> Self {
        let mut limits = self.copied();
        limits.by_endpoint.insert(endpoint.into(), limit);
        EndpointTimeouts {
            limits: Arc::new(limits),
        }
    }

    /// Cuts every endpoint without a limit of its own after `limit`.
    pub fn default_limit(self, limit: Duration) -> Self {
        let mut limits = self.copied();
        limits.default = Some(limit);
        EndpointTimeouts {
            limits: Arc::new(limits),
        }
    }

    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.limits.by_endpoint.is_empty() && self.limits.default.is_none()
    }

    fn copied(&self) -> Limits {
        Limits {
            by_endpoint: self.limits.by_endpoint.clone(),
            default: self.limits.default,
        }
    }
}

impl Limits {
    /// The limit of `endpoint`, if any.
    pub(super) fn of(&self, endpoint: &str) -> Option<Duration> {
        self.by_endpoint.get(endpoint).copied().or(self.default)
    }
}

impl<S> tower::Layer<S> for EndpointTimeouts {
    type Service = EndpointTimeoutService<S>;

    fn layer(&self, inner: S) -> EndpointTimeoutService<S> {
        EndpointTimeoutService::new(inner, self.limits.clone())
    }
}
