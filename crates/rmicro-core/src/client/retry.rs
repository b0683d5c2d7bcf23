//! The middle of a client call, between the `wrap_client` and `wrap_call` stacks:
//! pick a node, send the attempt, and try again — on another node when there is
//! one — where retrying cannot run a handler twice.

use super::attempt::AttemptChannel;
use super::budget::{Budget, Pushback};
use super::resolve::Resolver;
use crate::errors::Code;
use crate::selector::{SelectOptions, Selected};
use crate::transport::{Body, is_safe_to_retry};
use crate::wrapper::from_fn::SharedCall;
use crate::wrapper::stack::ClientChain;
use crate::wrapper::{AttemptInfo, ClientCallInfo, NotSent};
use bytes::Bytes;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::Instant;
use tower::BoxError;

/// How a call is to be sent, fixed when it starts; in the request's extensions.
#[derive(Debug, Clone)]
pub(crate) struct CallPlan {
    pub(crate) retries: u32,
    pub(crate) idempotent: bool,
    pub(crate) address: Option<Arc<str>>,
    pub(crate) select: SelectOptions,
    pub(crate) deadline: Instant,
    /// The framed request, to send again; `None` for request streams (never retried).
    pub(crate) replay: Option<Bytes>,
}

/// Selection, retries and the attempt stack, as one service.
struct Retrying {
    resolver: Arc<Resolver>,
    attempt: ClientChain,
    budget: Arc<Budget>,
}

/// The service `wrap_client` wrappers wrap: always ready (each attempt waits for
/// its channel itself).
pub(crate) fn retrying(
    resolver: Arc<Resolver>,
    attempt: ClientChain,
    budget: Arc<Budget>,
) -> SharedCall {
    let retrying = Arc::new(Retrying {
        resolver,
        attempt,
        budget,
    });
    Arc::new(move |request| {
        let retrying = retrying.clone();
        Box::pin(async move { retrying.run(request).await })
    })
}

/// Whether `err` (or what caused it) is a wrapper's [`NotSent`].
fn is_not_sent(err: &BoxError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&**err);
    while let Some(e) = source {
        if e.is::<NotSent>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The code of a trailers-only response (an error answered before any message).
fn trailers_only_code(response: &http::Response<Body>) -> Option<Code> {
    response
        .headers()
        .get(crate::transport::headers::GRPC_STATUS)
        .map(|v| Code::from_header(v.as_bytes()))
}

/// Copies what an attempt needs of the call's request head.
fn copy_parts(parts: &http::request::Parts) -> http::request::Parts {
    let (mut copy, ()) = http::Request::new(()).into_parts();
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    copy.extensions = parts.extensions.clone();
    copy
}

impl Retrying {
    async fn run(&self, request: http::Request<Body>) -> Result<http::Response<Body>, BoxError> {
        let plan = request
            .extensions()
            .get::<Arc<CallPlan>>()
            .cloned()
            .ok_or("a client wrapper removed the call's plan from the request extensions")?;
        let info = request.extensions().get::<ClientCallInfo>().cloned();
        let service: Arc<str> = info
            .as_ref()
            .map_or_else(|| Arc::from(""), |i| i.service_arc().clone());
        let (parts, body) = request.into_parts();
        let replay = plan.replay.clone();
        // A copy of the head for the attempts after the first, when there can be any.
        let saved = (replay.is_some() && plan.retries > 0).then(|| copy_parts(&parts));
        let mut first = Some((parts, body));
        let mut select = plan.select.clone();
        let mut attempt = 0u32;
        let mut backed_off = 0u32;
        self.budget.deposit(Instant::now());
        loop {
            attempt += 1;
            if let Some(info) = &info {
                info.set_attempts(attempt);
            }
            let (address, node) = match self
                .resolver
                .resolve(&service, plan.address.as_deref(), &select)
                .await
            {
                Ok(picked) => picked,
                // Every node was tried: go round again from the full set.
                Err(_) if attempt > 1 && !select.exclude.is_empty() => {
                    select.exclude.clear();
                    self.resolver
                        .resolve(&service, plan.address.as_deref(), &select)
                        .await?
                }
                Err(err) => return Err(err.into()),
            };
            let channel = self.resolver.channel(&address)?;
            let (head, body) = match first.take() {
                Some(original) => original,
                None => {
                    let (Some(head), Some(bytes)) = (&saved, &replay) else {
                        return Err("a request stream cannot be sent twice".into());
                    };
                    (
                        copy_parts(head),
                        Body::new(http_body_util::Full::new(bytes.clone())),
                    )
                }
            };
            let mut request = http::Request::from_parts(head, body);
            let remaining = plan.deadline.saturating_duration_since(Instant::now());
            if let Some(value) = crate::transport::grpc_timeout_header(remaining) {
                request
                    .headers_mut()
                    .insert(crate::transport::headers::GRPC_TIMEOUT, value);
            }
            let extensions = request.extensions_mut();
            extensions.insert(AttemptInfo::new(
                node.as_ref().map(|n| n.id().clone()),
                address.clone(),
                attempt,
            ));
            extensions.insert(AttemptChannel(channel));
            let result = self.attempt.call(request).await;
            let may_retry = replay.is_some() && attempt <= plan.retries;
            // Whether this attempt may have reached a handler, and what the server
            // said about retrying it.
            let (reached, pushback) = match result {
                Ok(response) => {
                    let code = trailers_only_code(&response);
                    let retryable = matches!(
                        code,
                        Some(Code::Unavailable | Code::Aborted | Code::Internal | Code::Unknown)
                    );
                    let pushback = response
                        .headers()
                        .get(crate::transport::headers::GRPC_RETRY_PUSHBACK_MS)
                        .map(|v| Pushback::parse(v.as_bytes()));
                    if !(plan.idempotent && retryable && may_retry)
                        || pushback == Some(Pushback::Stop)
                        || !self.budget.withdraw(Instant::now())
                    {
                        if let Some(node) = &node
                            && code.is_none_or(|c| c == Code::Ok)
                        {
                            node.mark_up();
                        }
                        return Ok(hold_node(response, node));
                    }
                    if let Some(node) = &node {
                        select.exclude.push(node.id().clone());
                    }
                    (true, pushback)
                }
                Err(err) => {
                    let not_sent = is_not_sent(&err);
                    let unreachable = !not_sent && is_safe_to_retry(&*err);
                    if unreachable {
                        if let Some(node) = &node {
                            node.mark_down();
                        }
                        self.resolver.evict(&address);
                    }
                    if let Some(node) = &node {
                        // The next attempt goes to another node when there is one.
                        select.exclude.push(node.id().clone());
                    }
                    // A refusal of a fixed address would only be refused again; a
                    // call that may have reached a handler is retried only when
                    // declared idempotent.
                    let elsewhere = node.is_some() || unreachable;
                    let retry = (not_sent && elsewhere) || unreachable || plan.idempotent;
                    if !retry || !may_retry || !self.budget.withdraw(Instant::now()) {
                        return Err(err);
                    }
                    tracing::debug!(%service, attempt, error = %err, "retrying call");
                    (!(not_sent || unreachable), None)
                }
            };
            // A call that reached no server goes to the next node at once (the
            // channel re-dials a fixed address once at once too); otherwise the
            // server's pushback, or a jittered, doubling backoff.
            let wait = match pushback {
                Some(Pushback::After(wait)) => Some(wait),
                _ if !reached && (node.is_some() || attempt == 1) => None,
                _ => {
                    backed_off += 1;
                    Some(self.resolver.options.backoff.delay(backed_off))
                }
            };
            if let Some(wait) = wait {
                tokio::time::sleep_until((Instant::now() + wait).min(plan.deadline)).await;
            }
        }
    }
}

/// Keeps the picked node counted as in flight until the response body is done
/// (a stream's last message), for the least-outstanding strategy.
fn hold_node(response: http::Response<Body>, node: Option<Selected>) -> http::Response<Body> {
    match node {
        None => response,
        Some(node) => response.map(|body| Body::new(Holding { body, _node: node })),
    }
}

pin_project_lite::pin_project! {
    struct Holding {
        #[pin]
        body: Body,
        _node: Selected,
    }
}

impl http_body::Body for Holding {
    type Data = Bytes;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
