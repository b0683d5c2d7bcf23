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

    /// The same logging as a function wrapper, which rmicro's own stacks run in
    /// their chain (no stack below to clone per call).
    pub(crate) fn wrap_fn(&self) -> std::sync::Arc<crate::wrapper::from_fn::WrapFn> {
        std::sync::Arc::new(|call: crate::wrapper::Call, next: crate::wrapper::Next| {
            let name = super::service::CallName::of(call.request());
            let started = std::time::Instant::now();
            // The next wrapper starts now; its future is moved once, into the box.
            crate::wrapper::from_fn::WrapFuture::new(super::LoggingFuture::new(
                next.run(call),
                name,
                started,
            ))
        })
    }
}

impl<S> tower::Layer<S> for LoggingLayer {
    type Service = Logging<S>;

    fn layer(&self, inner: S) -> Logging<S> {
        Logging::new(inner)
    }
}
