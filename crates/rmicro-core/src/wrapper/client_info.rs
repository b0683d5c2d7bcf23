//! What client wrappers know about a call: [`ClientCallInfo`] for the logical call
//! (`wrap_client`, once per call, above node selection and retries) and
//! [`AttemptInfo`] for each attempt (`wrap_call`, once per attempt, below them).

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use tokio::time::Instant;

/// Messages and bytes of one call, counted as they pass, from this side's view:
/// `sent` are what this side wrote (a server's replies, a client's requests).
///
/// Counts are live: a wrapper can read them while a stream runs, and when its
/// outcome arrives (see [`on_status`](super::on_status)) they are final. Sizes are
/// of the protobuf encoding, without gRPC's 5-byte frame header.
#[derive(Debug, Default)]
pub struct MessageCounts {
    sent: AtomicU64,
    sent_bytes: AtomicU64,
    received: AtomicU64,
    received_bytes: AtomicU64,
}

impl MessageCounts {
    /// Messages this side sent.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Bytes of the messages this side sent.
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes.load(Ordering::Relaxed)
    }

    /// Messages this side received.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Bytes of the messages this side received.
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes.load(Ordering::Relaxed)
    }

    /// Counts one message sent.
    pub fn record_sent(&self, bytes: usize) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts one message received.
    pub fn record_received(&self, bytes: usize) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.received_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// A logical client call, in the request's extensions for client wrappers.
///
/// One per call, whatever the number of attempts; clones share the attempt and
/// message counters, so a wrapper that keeps a clone reads the final figures when
/// the call ends.
#[derive(Debug, Clone)]
pub struct ClientCallInfo {
    service: Arc<str>,
    endpoint: Cow<'static, str>,
    path: Arc<str>,
    deadline: Instant,
    caller: Option<Arc<str>>,
    attempts: Arc<AtomicU32>,
    messages: Arc<MessageCounts>,
}

impl ClientCallInfo {
    /// A call to `endpoint` (`Greeter.SayHello`) at `path` of `service`, due by
    /// `deadline`; for building one in a wrapper's tests.
    pub fn new(
        service: impl Into<Arc<str>>,
        endpoint: impl Into<Cow<'static, str>>,
        path: impl Into<Arc<str>>,
        deadline: Instant,
    ) -> Self {
        ClientCallInfo {
            service: service.into(),
            endpoint: endpoint.into(),
            path: path.into(),
            deadline,
            caller: None,
            attempts: Arc::new(AtomicU32::new(0)),
            messages: Arc::new(MessageCounts::default()),
        }
    }

    /// The service called (`greeter`), as the registry knows it.
    pub fn service(&self) -> &str {
        &self.service
    }

    pub(crate) fn service_arc(&self) -> &Arc<str> {
        &self.service
    }

    /// The endpoint called (`Greeter.SayHello`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub(crate) fn endpoint_cow(&self) -> &Cow<'static, str> {
        &self.endpoint
    }

    /// The gRPC path (`/greeter.v1.Greeter/SayHello`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The same call, made by the service `caller`.
    pub fn with_caller(mut self, caller: Option<Arc<str>>) -> Self {
        self.caller = caller;
        self
    }

    /// The service making the call, when the client belongs to one.
    pub fn caller(&self) -> Option<&str> {
        self.caller.as_deref()
    }

    pub(crate) fn caller_arc(&self) -> Option<&Arc<str>> {
        self.caller.as_ref()
    }

    /// When the call gives up, retries included.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Attempts made so far (final once the call has returned).
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Acquire)
    }

    pub(crate) fn set_attempts(&self, n: u32) {
        self.attempts.store(n, Ordering::Release);
    }

    /// Messages and bytes sent and received.
    pub fn messages(&self) -> &Arc<MessageCounts> {
        &self.messages
    }
}

/// One attempt of a client call, in the request's extensions for `wrap_call`
/// wrappers (next to the call's [`ClientCallInfo`]).
#[derive(Debug, Clone)]
pub struct AttemptInfo {
    node: Option<Arc<str>>,
    address: Arc<str>,
    attempt: u32,
}

impl AttemptInfo {
    /// Attempt number `attempt` (1 for the first) to `address`, on registry node
    /// `node` when the selector picked it.
    pub fn new(node: Option<Arc<str>>, address: impl Into<Arc<str>>, attempt: u32) -> Self {
        AttemptInfo {
            node,
            address: address.into(),
            attempt,
        }
    }

    /// The registry node id, when the selector picked the node (not for fixed
    /// addresses and static routes).
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// The address dialled (`host:port`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Which attempt this is: 1 for the first, 2 for the first retry, ….
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}
