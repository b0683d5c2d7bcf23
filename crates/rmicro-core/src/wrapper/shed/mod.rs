//! Load shedding: beyond N calls in flight, refuse at once instead of queuing.
//!
//! `--server-max-concurrent N` (or [`ServiceBuilder::server_max_concurrent`]) puts
//! [`LoadShedLayer`] on the handlers: a call that would be the N+1th in flight is
//! answered at once with `RESOURCE_EXHAUSTED` and an [`Error`](crate::Error) of code
//! 429 naming the limit, without reaching its handler, so a node under more load
//! than it can serve stays fast for the calls it takes and callers learn at once to
//! back off or go elsewhere. A call counts until its status is known — a stream,
//! until its last message. Health checks and reflection are never wrapped, so never
//! shed. (tower's `ConcurrencyLimitLayer` instead queues calls beyond the limit.)
//!
//! Laid out as tower lays out its middleware: `layer.rs`, `service.rs`, `future.rs`.
//!
//! [`ServiceBuilder::server_max_concurrent`]: crate::ServiceBuilder::server_max_concurrent
//!
//! ```
//! # extern crate rmicro_core as rmicro;
//! let service = rmicro::Service::builder("user")
//!     .args(["user"])
//!     .server_max_concurrent(256)
//!     .build()
//!     .expect("valid flags");
//! ```

mod future;
mod layer;
mod service;

pub use future::LoadShedFuture;
pub use layer::LoadShedLayer;
pub(crate) use layer::refusals;
pub use service::LoadShedService;
