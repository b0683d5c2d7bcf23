//! The rate limiter's service: takes a token from the call's bucket, then calls on;
//! refuses, or waits, when there is none.

use super::future::RateLimitFuture;
use super::layer::{Limits, Mode, Scope};
use crate::errors::Error;
use crate::wrapper::{CallInfo, ClientCallInfo};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{BoxError, Service};

/// A service behind a rate limit; see the [module docs](super).
#[derive(Clone)]
pub struct RateLimitService<S> {
    inner: S,
    limits: Arc<Limits>,
}

impl<S> RateLimitService<S> {
    pub(super) fn new(inner: S, limits: Arc<Limits>) -> Self {
        RateLimitService { inner, limits }
    }
}

impl<S> std::fmt::Debug for RateLimitService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitService").finish_non_exhaustive()
    }
}

/// The bucket a call takes its token from: `None` for the one bucket of
/// [`Scope::Global`] (nothing allocated on that path).
fn key_of<B>(scope: &Scope, request: &http::Request<B>) -> Option<String> {
    match scope {
        Scope::Global => None,
        Scope::PerEndpoint => Some(command_of(request)),
        Scope::PerPeer => Some(peer_of(request).unwrap_or_default()),
        Scope::PerMetadata(name) => Some(
            request
                .headers()
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
        ),
    }
}

/// `service.endpoint` of the call (its gRPC path when it carries no description).
fn command_of<B>(request: &http::Request<B>) -> String {
    use crate::wrapper::DescribeCall as _;
    match request.describe() {
        Some((service, endpoint)) => format!("{service}.{endpoint}"),
        None => request
            .uri()
            .path()
            .trim_start_matches('/')
            .replace('/', "."),
    }
}

fn peer_of<B>(request: &http::Request<B>) -> Option<String> {
    request
        .extensions()
        .get::<CallInfo>()
        .and_then(CallInfo::peer)
        .map(|p| crate::transport::ip_text(p.address().ip()))
}

/// The error a refused call gets, `waited` saying how long it waited for a token:
/// `id` is who refuses (the server, or the calling service), the detail names the
/// limit, the call and the bucket.
fn refusal<B>(
    limits: &Arc<Limits>,
    request: &http::Request<B>,
) -> impl FnOnce(Option<&str>) -> Error + use<B> {
    let extensions = request.extensions();
    let id = match (
        extensions.get::<CallInfo>(),
        extensions.get::<ClientCallInfo>(),
    ) {
        (Some(info), _) => info.service().to_owned(),
        (None, Some(info)) => info.caller().unwrap_or(crate::client::CLIENT_ID).to_owned(),
        (None, None) => crate::client::CLIENT_ID.to_owned(),
    };
    let per = match &limits.scope {
        Scope::Global | Scope::PerEndpoint => String::new(),
        Scope::PerPeer => format!(
            " per peer {}",
            peer_of(request).as_deref().unwrap_or("(unknown)")
        ),
        Scope::PerMetadata(name) => match request
            .headers()
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
        {
            Some(value) => format!(" per {name} {value}"),
            None => format!(" for calls without {name}"),
        },
    };
    let (rate, command) = (limits.rate(), command_of(request));
    let counted = limits.clone();
    move |waited| {
        counted.count_refusal();
        let waited = waited.map(|w| format!("; waited {w}")).unwrap_or_default();
        Error::too_many_requests(
            id,
            format!("too many requests: limit {rate} for {command}{per}{waited}"),
        )
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RateLimitService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = http::Response<crate::transport::Body>;
    type Error = BoxError;
    type Future = RateLimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let key = key_of(&self.limits.scope, &request);
        let wait = match self.limits.take(key.as_deref()) {
            Ok(()) => return RateLimitFuture::calling(self.inner.call(request)),
            Err(wait) => wait,
        };
        let refuse = refusal(&self.limits, &request);
        let Mode::Wait(most) = self.limits.mode else {
            return RateLimitFuture::refused(refuse(None));
        };
        if wait > most {
            // The next token comes after the bound: no point waiting.
            return RateLimitFuture::refused(refuse(Some(&format!(
                "0s: the next token is {wait:?} away, more than the {most:?} allowed"
            ))));
        }
        // The ready service goes with the call; a clone waits for the next one.
        let fresh = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, fresh);
        let limits = self.limits.clone();
        RateLimitFuture::waiting(Box::pin(async move {
            let started = tokio::time::Instant::now();
            let until = started + most;
            let mut wait = wait;
            loop {
                tokio::time::sleep(wait).await;
                match limits.take(key.as_deref()) {
                    Ok(()) => {
                        return ready
                            .call(request)
                            .await
                            .map(|r| r.map(crate::transport::Body::new))
                            .map_err(Into::into);
                    }
                    Err(next) if tokio::time::Instant::now() + next <= until => wait = next,
                    Err(_) => {
                        let waited = format!("{:?}", started.elapsed());
                        return Ok(crate::wrapper::error::refusal(refuse(Some(&waited))));
                    }
                }
            }
        }))
    }
}
