//! Wrappers: middleware around handlers and client calls, as `tower::Layer`s.
//!
//! Five builder options, go-micro's names, each taking any tower layer over
//! HTTP-level gRPC calls; the first registered is the outermost, and a built service
//! has no way to add, drop or reorder them:
//!
//! - `wrap_handler` wraps every handler. The server drives the stack as tower
//!   requires (`poll_ready`, then `call`, on a clone per call), and a layer's error
//!   becomes a precise gRPC status ([`error_from_wrapper`]). The request carries a
//!   [`CallInfo`] (service, endpoint, path, codec, deadline, [`Peer`] with the mTLS
//!   identity, message counts); values a wrapper inserts in the extensions reach the
//!   handler's [`Context::get`](crate::Context::get).
//! - `wrap_client` wraps each logical call once, above node selection and retries
//!   ([`ClientCallInfo`]: target, endpoint, deadline, attempts, message counts).
//! - `wrap_call` wraps each attempt ([`AttemptInfo`]: node, address, attempt number);
//!   failing with [`NotSent`] sends the call to another node.
//! - `wrap_subscriber` wraps every subscription's handler, once per delivery
//!   ([`SubscriberWrapper`], [`subscriber_fn`]); `wrap_publisher` wraps every
//!   publish through the service's broker ([`PublisherWrapper`], [`publisher_fn`]).
//!
//! [`on_status`] reports how a call ended ([`Outcome`]) when its status is known —
//! for a stream, after its last message — so a span, permit or timer moved into its
//! closure covers the whole call, on either side.
//!
//! A wrapper that is a function:
//!
//! ```
//! # extern crate rmicro_core as rmicro;
//! use rmicro::wrapper::{from_fn, on_status};
//! let timed = from_fn(|call, next| async move {
//!     let endpoint = call.endpoint().to_owned();
//!     let started = std::time::Instant::now();
//!     let response = next.run(call).await?;
//!     Ok(on_status(response, move |outcome| {
//!         tracing::info!(endpoint, code = %outcome.code(), took = ?started.elapsed(), "done");
//!     }))
//! });
//! let service = rmicro::Service::builder("greeter")
//!     .args(["greeter"])
//!     .wrap_handler(timed.clone())
//!     .wrap_client(timed)
//!     .build()
//!     .expect("valid flags");
//! ```
//!
//! A full wrapper follows tower's layout, as [`logging`] does: `layer.rs` (the
//! configuration; builds the service), `service.rs` (the behaviour), `future.rs`
//! (what `call` returns). Because wrappers are plain tower layers over
//! `http::Request`, the same layer works on a bare tonic server
//! (`tonic::transport::Server::builder().layer(..)`) too.
//!
//! Shipped wrappers: [`logging`], [`breaker`] (Hystrix's circuit breaker),
//! [`ratelimit`] (token buckets), [`shed`] (load shedding), [`timeout`] (per-endpoint
//! server timeouts). Tracing and metrics follow the same layout.

#[cfg(feature = "auth")]
pub mod auth;
pub mod breaker;
pub(crate) mod broker;
mod call;
mod client_info;
mod error;
pub(crate) mod from_fn;
pub mod logging;
pub mod metrics;
pub(crate) mod pool;
pub mod ratelimit;
pub mod shed;
pub(crate) mod stack;
pub mod timeout;
pub mod trace;

pub use stack::{ClientLayer, HandlerLayer, StackLayer};
mod status;

pub use broker::{Publisher, PublisherWrapper, SubscriberWrapper, publisher_fn, subscriber_fn};
pub use call::{CallInfo, Peer, PeerIdentity};
pub use client_info::{AttemptInfo, ClientCallInfo, MessageCounts};
pub use error::{NotSent, error_from_wrapper};
pub use from_fn::{Call, FromFn, FromFnLayer, Next, from_fn};
pub use status::{Outcome, StatusObserver, on_status};

use std::sync::Arc;

/// What wrappers need to know about a call, whichever side they sit on.
pub trait DescribeCall {
    /// `(service, endpoint)` of the call, if the request carries it.
    fn describe(&self) -> Option<(Arc<str>, &str)>;
}

impl<B> DescribeCall for http::Request<B> {
    fn describe(&self) -> Option<(Arc<str>, &str)> {
        if let Some(info) = self.extensions().get::<CallInfo>() {
            return Some((info.service_arc().clone(), info.endpoint()));
        }
        self.extensions()
            .get::<ClientCallInfo>()
            .map(|info| (info.service_arc().clone(), info.endpoint()))
    }
}
