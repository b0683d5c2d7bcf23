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

pub mod logging;
mod status;

pub use status::{StatusObserver, on_status};

use crate::codec::Format;
use std::sync::Arc;
use tokio::time::Instant;

/// What a call is, attached to the request's extensions for wrappers to read.
#[derive(Clone)]
pub struct CallInfo {
    /// The rmicro service name: the server's own name for handlers, the target for calls.
    pub service: Arc<str>,
    /// go-micro endpoint name (`Greeter.SayHello`).
    pub endpoint: &'static str,
    /// gRPC path (`/greeter.v1.Greeter/SayHello`).
    pub path: &'static str,
    /// The codec the caller asked for.
    pub format: Format,
    /// When the caller stops waiting.
    pub deadline: Option<Instant>,
    pub(crate) route: Arc<crate::server::router::Route>,
}

impl std::fmt::Debug for CallInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallInfo")
            .field("service", &self.service)
            .field("endpoint", &self.endpoint)
            .field("path", &self.path)
            .field("format", &self.format)
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// What a client call is, attached to the request's extensions for client wrappers.
#[derive(Debug, Clone)]
pub struct ClientCallInfo {
    /// The service called (`greeter`).
    pub service: Arc<str>,
    /// The endpoint called (`Greeter.SayHello`).
    pub endpoint: std::borrow::Cow<'static, str>,
    /// The address dialled.
    pub address: Arc<str>,
}

/// What wrappers need to know about a call, whichever side they sit on.
pub trait DescribeCall {
    /// `(service, endpoint)` of the call, if the request carries it.
    fn describe(&self) -> Option<(Arc<str>, &str)>;
}

impl<B> DescribeCall for http::Request<B> {
    fn describe(&self) -> Option<(Arc<str>, &str)> {
        if let Some(info) = self.extensions().get::<CallInfo>() {
            return Some((info.service.clone(), info.endpoint));
        }
        self.extensions()
            .get::<ClientCallInfo>()
            .map(|info| (info.service.clone(), &*info.endpoint))
    }
}
