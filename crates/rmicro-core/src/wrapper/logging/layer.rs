//! The logging layer: configuration, builds [`Logging`] around a service.

use super::Logging;

/// Builds [`Logging`] around a service; see the [module docs](super).
#[derive(Debug, Clone, Copy, Default)]
pub struct LoggingLayer {
    _private: (),
}

impl LoggingLayer {
    /// Logs every call: successes at `DEBUG`, failures at `WARN` / `ERROR`.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> tower::Layer<S> for LoggingLayer {
    type Service = Logging<S>;

    fn layer(&self, inner: S) -> Logging<S> {
        Logging::new(inner)
    }
}
