//! Request logging through `tracing`: one event per call with service, endpoint,
//! status code and duration.
//!
//! Successful calls log at `DEBUG` (like go-micro, a service logs nothing per
//! successful call unless asked: `--log-level debug`), caller errors (bad request,
//! not found, …) at `WARN`, server faults (internal, unknown, unavailable, data loss)
//! at `ERROR`. At the default level a successful call costs no formatting and no I/O. Works on both
//! sides: `.wrap_handler(LoggingLayer::new())` logs what the service serves,
//! `.wrap_client(LoggingLayer::new())` what it calls.
//!
//! ```
//! use rmicro::wrapper::logging::LoggingLayer;
//! let service = rmicro::Service::builder("greeter")
//!     .args(["greeter"])
//!     .wrap_handler(LoggingLayer::new())
//!     .wrap_client(LoggingLayer::new())
//!     .build()
//!     .expect("valid flags");
//! ```

mod service;

pub use service::Logging;

/// Builds [`Logging`] around a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoggingLayer {
    _private: (),
}

impl LoggingLayer {
    /// Logs every call.
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
