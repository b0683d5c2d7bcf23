//! Wrappers: middleware around handlers and client calls, as `tower::Layer`s.
//!
//! `service.wrap_handler(layer)` wraps every handler; `service.wrap_client(layer)` wraps
//! every call the service's client makes. Layers apply in registration order: the
//! first registered is the outermost. A layer wraps an HTTP-level gRPC service and
//! finds what the call is in the request's [`CallInfo`] extension; [`on_status`] tells it
//! how the call ended. Because they are plain tower layers over `http::Request`, the
//! same wrappers work on a bare tonic or axum stack too.
//!
//! Shipped wrappers: [`logging`]. Tracing, metrics, circuit breaking and rate limiting
//! follow the same layout (`layer` + `service`).

mod call;
mod client_info;
mod error;
mod from_fn;
pub mod logging;
pub(crate) mod stack;

pub use stack::{ClientLayer, HandlerLayer, StackLayer};
mod status;

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
