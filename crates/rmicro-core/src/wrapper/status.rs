//! Learning how a call ended: the gRPC status sits in the response headers for
//! trailers-only errors, otherwise in the trailers at the end of the body.

use crate::errors::{Code, Error};
use crate::transport::Body;
use crate::transport::headers::{GRPC_MESSAGE, GRPC_STATUS, MICRO_ERROR};
use http_body::{Body as HttpBody, Frame};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// How a call ended: OK, or the [`Error`] the caller receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    code: Code,
    error: Option<Error>,
}

impl Outcome {
    /// A call that succeeded.
    pub fn ok() -> Self {
        Outcome {
            code: Code::Ok,
            error: None,
        }
    }

    /// A call that failed with `error`.
    pub fn failed(error: Error) -> Self {
        Outcome {
            code: error.grpc_code(),
            error: Some(error),
        }
    }

    /// The gRPC status code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// Whether the call succeeded.
    pub fn is_ok(&self) -> bool {
        self.code == Code::Ok
    }

    /// The error (`id`, `code`, `detail`), unless the call succeeded.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// The outcome of a trailers-only response (an error answered before any
    /// message); `None` when the status comes at the end of the body.
    pub(crate) fn of_trailers_only<B>(response: &http::Response<B>) -> Option<Outcome> {
        Outcome::from_headers(response.headers())
    }

    /// Reads the outcome from headers or trailers holding `grpc-status`.
    fn from_headers(headers: &http::HeaderMap) -> Option<Outcome> {
        let code = Code::from_header(headers.get(GRPC_STATUS)?.as_bytes());
        if code == Code::Ok {
            return Some(Outcome::ok());
        }
        let message = headers
            .get(GRPC_MESSAGE)
            .map(|m| {
                percent_encoding::percent_decode(m.as_bytes())
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        let micro = headers
            .get(MICRO_ERROR)
            .and_then(|v| crate::metadata::decode_bin(v.as_bytes()));
        let mut outcome =
            Outcome::failed(Error::from_grpc(code, &message, micro.as_deref(), "grpc"));
        outcome.code = code;
        Some(outcome)
    }

    fn status(code: Code, message: &str) -> Outcome {
        let mut outcome = Outcome::failed(Error::from_grpc(code, message, None, "rmicro"));
        outcome.code = code;
        outcome
    }
}

/// Called once with the call's [`Outcome`].
pub trait StatusObserver: FnOnce(&Outcome) + Send + 'static {}
impl<F: FnOnce(&Outcome) + Send + 'static> StatusObserver for F {}

/// Calls `observe` once the response's gRPC status is known: at once for a
/// trailers-only response, else when the body's trailers arrive. A body dropped before
/// its end (the caller went away) reports `CANCELLED`.
pub fn on_status(
    response: http::Response<Body>,
    observe: impl StatusObserver,
) -> http::Response<Body> {
    if response.body().is_settled_ok() {
        // A unary reply the server already encoded: nothing can fail after it.
        observe(&Outcome::ok());
        return response;
    }
    if let Some(outcome) = Outcome::from_headers(response.headers()) {
        observe(&outcome);
        return response;
    }
    // The observer rides inside the body it watches: one allocation for both.
    response.map(|inner| {
        Body::new(ObservedBody {
            inner,
            observe: Some(observe),
        })
    })
}

struct ObservedBody<F: StatusObserver> {
    inner: Body,
    observe: Option<F>,
}

impl<F: StatusObserver> ObservedBody<F> {
    fn report(&mut self, outcome: impl FnOnce() -> Outcome) {
        if let Some(observe) = self.observe.take() {
            observe(&outcome());
        }
    }
}

// The body is never pinned structurally: `inner` is `Unpin` and `observe` is only
// moved out by value.
impl<F: StatusObserver> Unpin for ObservedBody<F> {}

impl<F: StatusObserver> HttpBody for ObservedBody<F> {
    type Data = bytes::Bytes;
    type Error = crate::transport::BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(trailers) = f.trailers_ref() {
                    this.report(|| {
                        Outcome::from_headers(trailers).unwrap_or_else(|| {
                            Outcome::status(Code::Unknown, "no grpc-status in trailers")
                        })
                    });
                }
            }
            Some(Err(e)) => {
                let (code, message) = (e.code(), e.message().to_owned());
                this.report(|| Outcome::status(code, &message))
            }
            None => {
                this.report(|| Outcome::status(Code::Unknown, "response ended without a status"))
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<F: StatusObserver> Drop for ObservedBody<F> {
    fn drop(&mut self) {
        self.report(|| {
            Outcome::status(
                Code::Cancelled,
                "the caller went away before the call ended",
            )
        });
    }
}
