//! The context of a call being handled: who is called, its metadata and its deadline.
//!
//! The server creates one [`Context`] per incoming call, hands it to the handler inside
//! [`crate::Request`], and keeps it as the *current* context while the handler runs.
//! A call the handler makes through [`crate::Client`] picks the current context up and
//! inherits its deadline, so a deadline set by the first caller bounds the whole chain
//! (go-micro does the same through `context.Context`).
//!
//! Handler wrappers pass typed values to the handler through the request's
//! extensions (an authenticated principal, a transaction): whatever a wrapper inserts
//! with `request.extensions_mut().insert(value)` the handler reads with
//! [`Context::get`].

use crate::metadata::Metadata;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

tokio::task_local! {
    static CURRENT: Arc<Context>;
}

/// What a handler knows about the call it is serving.
#[derive(Debug, Clone)]
pub struct Context {
    pub(crate) service: std::sync::Arc<str>,
    pub(crate) endpoint: std::borrow::Cow<'static, str>,
    pub(crate) metadata: Metadata,
    pub(crate) deadline: Option<Instant>,
    pub(crate) extensions: http::Extensions,
}

impl Context {
    /// A context for code that runs outside any handler (tests, background tasks).
    pub fn new(service: impl Into<String>, endpoint: impl Into<String>) -> Self {
        Context {
            service: std::sync::Arc::from(service.into()),
            endpoint: std::borrow::Cow::Owned(endpoint.into()),
            metadata: Metadata::new(),
            deadline: None,
            extensions: http::Extensions::new(),
        }
    }

    /// A value a wrapper put in the request's extensions, by type.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.extensions.get::<T>()
    }

    /// Adds a typed value, as a wrapper would; for building contexts in tests.
    pub fn with_extension<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.extensions.insert(value);
        self
    }

    /// Who sent the call (its socket address and, over mutual TLS, its certificate's
    /// identity); `None` for contexts built by hand.
    pub fn peer(&self) -> Option<&crate::wrapper::Peer> {
        self.get::<crate::wrapper::CallInfo>()
            .and_then(crate::wrapper::CallInfo::peer)
    }

    /// The name of the service being called, as registered (`greeter`).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The endpoint being called, go-micro style (`Greeter.SayHello`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Metadata the caller sent.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The instant after which the caller no longer waits, if it set a timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline (`None` when there is no deadline).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Sets the deadline; used when building contexts by hand.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The context of the handler running on this task, if any.
    pub fn current() -> Option<Arc<Context>> {
        CURRENT.try_with(Arc::clone).ok()
    }

    /// Runs `fut` with `ctx` as the current context.
    pub async fn scope<F: Future>(ctx: Arc<Context>, fut: F) -> F::Output {
        CURRENT.scope(ctx, fut).await
    }
}
