//! The context of a call being handled: who is called, its metadata and its deadline.
//!
//! The server creates one [`Context`] per incoming call, hands it to the handler inside
//! [`crate::Request`], and keeps it as the *current* context while the handler runs.
//! A call the handler makes through [`crate::Client`] picks the current context up and
//! inherits its deadline, so a deadline set by the first caller bounds the whole chain
//! (go-micro does the same through `context.Context`).

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
    pub(crate) service: String,
    pub(crate) endpoint: String,
    pub(crate) metadata: Metadata,
    pub(crate) deadline: Option<Instant>,
}

impl Context {
    /// A context for code that runs outside any handler (tests, background tasks).
    pub fn new(service: impl Into<String>, endpoint: impl Into<String>) -> Self {
        Context {
            service: service.into(),
            endpoint: endpoint.into(),
            metadata: Metadata::new(),
            deadline: None,
        }
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
