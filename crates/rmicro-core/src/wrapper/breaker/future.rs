//! The breaker's future: the call under the circuit's timeout, its outcome reported
//! to the circuit when its status is known (a stream's, after its last message).

use super::circuit::{Circuit, Event};
use super::layer::{Fallback, Shared};
use crate::errors::{Code, Error};
use crate::transport::Body;
use crate::wrapper::client_info::DeadlineCut;
use crate::wrapper::{Outcome, on_status};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tower::BoxError;

type Reply = Result<http::Response<Body>, BoxError>;

pin_project_lite::pin_project! {
    /// The future of [`BreakerService`](super::BreakerService).
    pub struct BreakerFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        /// Admitted: the call runs until it answers or the timer fires.
        Running {
            #[pin]
            inner: F,
            // Made at the first poll that waits, unless the client's timer ends
            // the call by then (`cut`).
            #[pin]
            timer: Option<Sleep>,
            cut: Option<DeadlineCut>,
            run: Option<Running>,
        },
        /// Refused without a call: the circuit is open or full.
        Refused {
            error: Option<Error>,
            fallback: Option<Arc<Fallback>>,
            circuit: Arc<Mutex<Circuit>>,
        },
    }
}

/// An admitted call's hold on its circuit: reported once, when it ends, or as
/// abandoned when dropped before.
pub(super) struct Running {
    pub(super) shared: Arc<Shared>,
    pub(super) circuit: Arc<Mutex<Circuit>>,
    pub(super) trial: bool,
    pub(super) started: Instant,
    pub(super) timeout: Duration,
    pub(super) caller: Option<Arc<str>>,
    pub(super) reported: bool,
    /// When the breaker's timeout (or the call's deadline) passes.
    pub(super) until: Instant,
    /// The client's timer ends the call at `until` (no timer of our own): a drop
    /// past it is the timeout.
    pub(super) delegated: bool,
}

impl Running {
    fn report(&mut self, event: Option<Event>) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        let now = Instant::now();
        crate::sync::lock(&self.circuit).finish(
            now,
            self.trial,
            event,
            now.saturating_duration_since(self.started),
        );
    }

    /// How the window counts a call that ended with `code`.
    fn event(shared: &Shared, code: Code) -> Option<Event> {
        match code {
            Code::Ok => Some(Event::Success),
            Code::DeadlineExceeded if shared.is_failure(code) => Some(Event::Timeout),
            code if shared.is_failure(code) => Some(Event::Failure),
            // The caller went away: it says nothing about the callee.
            Code::Cancelled => None,
            // The caller's own mistake: the callee answered.
            _ => Some(Event::Success),
        }
    }

    fn caller(&self) -> String {
        self.caller
            .as_deref()
            .unwrap_or(crate::client::CLIENT_ID)
            .to_owned()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let timed_out = self.delegated && Instant::now() >= self.until;
        self.report(timed_out.then_some(Event::Timeout));
    }
}

impl<F> BreakerFuture<F> {
    pub(super) fn running(inner: F, cut: Option<DeadlineCut>, run: Running) -> Self {
        BreakerFuture {
            state: State::Running {
                inner,
                timer: None,
                cut,
                run: Some(run),
            },
        }
    }

    pub(super) fn refused(shared: &Shared, circuit: Arc<Mutex<Circuit>>, error: Error) -> Self {
        BreakerFuture {
            state: State::Refused {
                error: Some(error),
                fallback: shared.fallback.clone(),
                circuit,
            },
        }
    }
}

/// The fallback's reply to `error`, or the error; a fallback's answer is counted
/// in the circuit's window.
fn answer(fallback: Option<&Arc<Fallback>>, circuit: &Mutex<Circuit>, error: Error) -> Reply {
    let reply = fallback.and_then(|fallback| fall_back(&**fallback, circuit, &error));
    Ok(reply.unwrap_or_else(|| crate::wrapper::error::refusal(error)))
}

/// The fallback's reply to `error`, if it gives one; counted in the circuit's window.
fn fall_back(
    fallback: &Fallback,
    circuit: &Mutex<Circuit>,
    error: &Error,
) -> Option<http::Response<Body>> {
    let reply = fallback(error);
    crate::sync::lock(circuit).record_fallback(Instant::now(), reply.is_some());
    reply
}

impl<F, E, ResBody> Future for BreakerFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    E: Into<BoxError>,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Output = Reply;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        match self.project().state.project() {
            StateProj::Refused {
                error,
                fallback,
                circuit,
            } => Poll::Ready(match error.take() {
                Some(error) => answer(fallback.as_ref(), circuit, error),
                None => Err("the breaker's future was polled after it completed".into()),
            }),
            StateProj::Running {
                inner,
                mut timer,
                cut,
                run,
            } => {
                if let Poll::Ready(result) = inner.poll(cx) {
                    let Some(mut run) = run.take() else {
                        return Poll::Ready(Err(
                            "the breaker's future was polled after it completed".into(),
                        ));
                    };
                    run.delegated = false;
                    return Poll::Ready(finished(run, result));
                }
                if timer.is_none()
                    && let Some(running) = run.as_mut()
                    && !running.delegated
                {
                    if cut.take().is_some_and(|cut| cut.covers(running.until)) {
                        running.delegated = true;
                    } else {
                        timer.set(Some(tokio::time::sleep_until(running.until)));
                    }
                }
                let fired = timer
                    .as_mut()
                    .as_pin_mut()
                    .is_some_and(|timer| timer.poll(cx).is_ready());
                if fired && let Some(mut run) = run.take() {
                    run.report(Some(Event::Timeout));
                    let name = crate::sync::lock(&run.circuit).name().to_owned();
                    let waited = run.started.elapsed();
                    let detail = if waited + Duration::from_millis(1) >= run.timeout {
                        super::timeout_detail(&name, run.timeout)
                    } else {
                        format!("{name} did not answer before the call's deadline ({waited:?})")
                    };
                    let fallback = run.shared.fallback.clone();
                    return Poll::Ready(answer(
                        fallback.as_ref(),
                        &run.circuit,
                        Error::timeout(run.caller(), detail),
                    ));
                }
                Poll::Pending
            }
        }
    }
}

/// Reports an answered call: at once for an error, else when its status arrives.
fn finished<ResBody, E>(mut run: Running, result: Result<http::Response<ResBody>, E>) -> Reply
where
    E: Into<BoxError>,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let fallback = run.shared.fallback.clone();
    match result {
        Err(err) => {
            let err: BoxError = err.into();
            let code = err
                .downcast_ref::<Error>()
                .map_or(Code::Unavailable, Error::grpc_code);
            run.report(Running::event(&run.shared, code));
            match (fallback, err.downcast::<Error>()) {
                (Some(fallback), Ok(error)) => {
                    fall_back(&*fallback, &run.circuit, &error).ok_or(error)
                }
                (_, Ok(error)) => Err(error),
                (_, Err(other)) => Err(other),
            }
        }
        Ok(response) => {
            let response = response.map(Body::new);
            if let Some(outcome) = Outcome::of_trailers_only(&response) {
                run.report(Running::event(&run.shared, outcome.code()));
                if let (Some(fallback), Some(error)) = (&fallback, outcome.error()) {
                    return Ok(fall_back(&**fallback, &run.circuit, error).unwrap_or(response));
                }
                return Ok(response);
            }
            Ok(on_status(response, move |outcome| {
                let event = Running::event(&run.shared, outcome.code());
                run.report(event);
            }))
        }
    }
}
