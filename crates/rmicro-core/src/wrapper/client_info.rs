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
    cells: Arc<CallCells>,
    messages: Arc<MessageCounts>,
}

/// What the clones of one call's [`ClientCallInfo`] share and change.
#[derive(Debug)]
struct CallCells {
    attempts: AtomicU32,
    /// A wrapper's tighter deadline, as nanoseconds before the call's (0: none).
    cut: AtomicU64,
    /// The wrapper's timeout that made the cut, in nanoseconds (for the message).
    cut_timeout: AtomicU64,
    /// The cut the client's timer took up (`u64::MAX`: not read yet).
    accepted: AtomicU64,
}

/// What [`ClientCallInfo::deadline_cut`] gives: whether the client's timer took up
/// a wrapper's deadline.
pub(crate) struct DeadlineCut {
    cells: Arc<CallCells>,
    deadline: Instant,
}

impl DeadlineCut {
    /// Whether the client's timer ends the call by `until`.
    pub(crate) fn covers(&self, until: Instant) -> bool {
        match self.cells.accepted.load(Ordering::Acquire) {
            u64::MAX => false,
            earlier => cut(self.deadline, earlier) <= until,
        }
    }
}

/// `deadline` moved `earlier` nanoseconds sooner.
fn cut(deadline: Instant, earlier: u64) -> Instant {
    deadline
        .checked_sub(std::time::Duration::from_nanos(earlier))
        .unwrap_or(deadline)
}

/// Nanoseconds of `d`, saturating.
fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
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
            cells: Arc::new(CallCells {
                attempts: AtomicU32::new(0),
                cut: AtomicU64::new(0),
                cut_timeout: AtomicU64::new(0),
                accepted: AtomicU64::new(u64::MAX),
            }),
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
        self.cells.attempts.load(Ordering::Acquire)
    }

    pub(crate) fn set_attempts(&self, n: u32) {
        self.cells.attempts.store(n, Ordering::Release);
    }

    /// A wrapper (the breaker) asks for the call to end by `until`, its `timeout`
    /// after it started, instead of the call's deadline; the earliest ask wins. The
    /// client's own timer honours it when it reads it after the wrappers started
    /// the call ([`accept_deadline`](Self::accept_deadline)); the wrapper checks
    /// with a [`DeadlineCut`] and keeps a timer of its own otherwise. One timer per
    /// call instead of two.
    pub(crate) fn offer_deadline(&self, until: Instant, timeout: std::time::Duration) {
        let earlier = nanos(self.deadline.saturating_duration_since(until));
        if earlier == 0 {
            return;
        }
        if self.cells.cut.fetch_max(earlier, Ordering::AcqRel) < earlier {
            self.cells
                .cut_timeout
                .store(nanos(timeout), Ordering::Release);
        }
    }

    /// The deadline the client's timer uses: the call's, or a wrapper's tighter
    /// one; from now on wrappers see their ask covered.
    pub(crate) fn accept_deadline(&self) -> Instant {
        let earlier = self.cells.cut.load(Ordering::Acquire);
        self.cells.accepted.store(earlier, Ordering::Release);
        cut(self.deadline, earlier)
    }

    /// A handle a wrapper keeps to learn later whether its ask was taken up.
    pub(crate) fn deadline_cut(&self) -> DeadlineCut {
        DeadlineCut {
            cells: self.cells.clone(),
            deadline: self.deadline,
        }
    }

    /// The wrapper's timeout whose deadline the client's timer took up, if any.
    pub(crate) fn accepted_cut(&self) -> Option<std::time::Duration> {
        match self.cells.accepted.load(Ordering::Acquire) {
            0 | u64::MAX => None,
            _ => Some(std::time::Duration::from_nanos(
                self.cells.cut_timeout.load(Ordering::Acquire),
            )),
        }
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
