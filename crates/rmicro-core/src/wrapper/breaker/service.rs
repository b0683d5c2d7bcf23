//! The breaker's service: asks the call's circuit whether it may run, and runs it
//! under the circuit's timeout.

use super::circuit::Admission;
use super::future::{BreakerFuture, Running};
use super::layer::Shared;
use crate::errors::Error;
use crate::wrapper::{CallInfo, ClientCallInfo};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::Instant;
use tower::{BoxError, Service};

/// A service behind a circuit breaker; see the [module docs](super).
#[derive(Clone)]
pub struct BreakerService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> BreakerService<S> {
    pub(super) fn new(inner: S, shared: Arc<Shared>) -> Self {
        BreakerService { inner, shared }
    }
}

impl<S> std::fmt::Debug for BreakerService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerService").finish_non_exhaustive()
    }
}

/// Who is calling what, as the circuit and its errors name it.
struct Command<'a> {
    service: &'a str,
    endpoint: &'a str,
    /// The calling service; `None` for a client outside a service.
    caller: Option<Arc<str>>,
    deadline: Option<Instant>,
    /// On an rmicro client: the call, to hand the breaker's timeout to its timer.
    info: Option<&'a ClientCallInfo>,
}

impl<'a> Command<'a> {
    fn of<B>(request: &'a http::Request<B>) -> Self {
        let extensions = request.extensions();
        if let Some(info) = extensions.get::<ClientCallInfo>() {
            return Command {
                service: info.service(),
                endpoint: info.endpoint(),
                caller: info.caller_arc().cloned(),
                deadline: Some(info.deadline()),
                info: Some(info),
            };
        }
        // On a plain tonic channel: the path names the command.
        let path = request.uri().path().trim_start_matches('/');
        let (service, endpoint) = path.split_once('/').unwrap_or((path, ""));
        Command {
            service,
            endpoint,
            caller: extensions
                .get::<CallInfo>()
                .map(|info| info.service_arc().clone()),
            deadline: None,
            info: None,
        }
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for BreakerService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = http::Response<crate::transport::Body>;
    type Error = BoxError;
    type Future = BreakerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let now = Instant::now();
        let command = Command::of(&request);
        let circuit = self.shared.circuit(command.service, command.endpoint, now);
        let mut state = crate::sync::lock(&circuit);
        let admission = state.admit(now);
        let timeout = state.settings().timeout;
        drop(state);
        let caller = command.caller;
        let id = |caller: &Option<Arc<str>>| {
            caller
                .as_deref()
                .unwrap_or(crate::client::CLIENT_ID)
                .to_owned()
        };
        match admission {
            Admission::Run { trial } => {
                let until = command
                    .deadline
                    .map_or(now + timeout, |deadline| deadline.min(now + timeout));
                // On an rmicro client, the call's own timer can end it at `until`
                // (unless a fallback must answer the timeout).
                let cut = match command.info {
                    Some(info) if self.shared.fallback.is_none() => {
                        info.offer_deadline(until, timeout);
                        Some(info.deadline_cut())
                    }
                    _ => None,
                };
                let call = self.inner.call(request);
                BreakerFuture::running(
                    call,
                    cut,
                    Running {
                        shared: self.shared.clone(),
                        circuit,
                        trial,
                        started: now,
                        timeout,
                        caller,
                        reported: false,
                        until,
                        delegated: false,
                    },
                )
            }
            Admission::Open { detail } => BreakerFuture::refused(
                &self.shared,
                circuit,
                Error::unavailable(id(&caller), detail),
            ),
            Admission::Full { detail } => BreakerFuture::refused(
                &self.shared,
                circuit,
                Error::too_many_requests(id(&caller), detail),
            ),
        }
    }
}
