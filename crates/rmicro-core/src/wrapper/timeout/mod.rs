//! Per-endpoint timeouts on the server: a handler that runs past its endpoint's
//! limit is cut (its future dropped) and the caller gets `DEADLINE_EXCEEDED`.
//!
//! `--server-endpoint-timeout Greeter.SayHello=200ms` (repeatable) or
//! [`EndpointTimeouts`] as a handler wrapper. The caller's own deadline
//! (`grpc-timeout`) still applies when it is sooner. A stream's limit covers the
//! handler's run, which ends with the stream's last message.
//!
//! Laid out as tower lays out its middleware: `layer.rs`, `service.rs`, `future.rs`.
//!
//! ```
//! # extern crate rmicro_core as rmicro;
//! use rmicro::wrapper::timeout::EndpointTimeouts;
//! use std::time::Duration;
//! let service = rmicro::Service::builder("user")
//!     .args(["user"])
//!     .wrap_handler(EndpointTimeouts::new().endpoint("User.Login", Duration::from_millis(300)))
//!     .build()
//!     .expect("valid flags");
//! ```

mod future;
mod layer;
mod service;

pub use future::EndpointTimeoutFuture;
pub use layer::EndpointTimeouts;
pub use service::EndpointTimeoutService;
