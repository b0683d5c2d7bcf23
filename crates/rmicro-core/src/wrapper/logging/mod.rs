//! Request logging through `tracing`: one event per call with service, endpoint,
//! status code and duration.
//!
//! Successful calls log at `DEBUG` (like go-micro, a service logs nothing per
//! successful call unless asked: `--log-level debug`), caller errors (bad request,
//! not found, …) at `WARN`, server faults (internal, unknown, unavailable, data loss)
//! at `ERROR`. At the default level a successful call costs no formatting and no I/O.
//!
//! Laid out as tower lays out its middleware, and a template for your own:
//! `layer.rs` (configuration; builds the service), `service.rs` (the behaviour),
//! `future.rs` (what the call returns, without boxing). Works on both
//! sides: `.wrap_handler(LoggingLayer::new())` logs what the service serves,
//! `.wrap_client(LoggingLayer::new())` what it calls.
//!
//! ```
//! # extern crate rmicro_core as rmicro;
//! use rmicro::wrapper::logging::LoggingLayer;
//! let service = rmicro::Service::builder("greeter")
//!     .args(["greeter"])
//!     .wrap_handler(LoggingLayer::new())
//!     .wrap_client(LoggingLayer::new())
//!     .build()
//!     .expect("valid flags");
//! ```

mod future;
mod layer;
mod service;

pub use future::LoggingFuture;
pub use layer::LoggingLayer;
pub use service::Logging;
