//! Learning how a call ended: the gRPC status sits in the response headers for
//! trailers-only errors, otherwise in the trailers at the end of the body.

use crate::transport::Body;
use http_body::{Body as HttpBody, Frame};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tonic::Code;

/// Called once with the call's final status code and message.
pub trait StatusObserver: FnOnce(Code, &str) + Send + 'static {}
impl<F: FnOnce(Code, &str) + Send + 'static> StatusObserver for F {}

fn status_of(headers: &http::HeaderMap) -> Option<(Code, String)> {
    let code = headers.get("grpc-status")?;
    let code = Code::from_bytes(code.as_bytes());
    let message = headers
        .get("grpc-message")
        .map(|m| {
            percent_encoding::percent_decode(m.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    Some((code, message))
}

/// Calls `observe` once the response's gRPC status is known: at once for a
/// trailers-only response, else when the body's trailers arrive. A body dropped before
/// its end (the caller went away) reports `CANCELLED`.
pub fn on_status(
    response: http::Response<Body>,
    observe: impl StatusObserver,
) -> http::Response<Body> {
    if let Some((code, message)) = status_of(response.headers()) {
        observe(code, &message);
        return response;
    }
    response.map(|inner| {
        Body::new(ObservedBody {
            inner,
            observe: Some(Box::new(observe)),
        })
    })
}

type BoxedObserver = Box<dyn FnOnce(Code, &str) + Send>;

struct ObservedBody {
    inner: Body,
    observe: Option<BoxedObserver>,
}

impl ObservedBody {
    fn report(&mut self, code: Code, message: &str) {
        if let Some(observe) = self.observe.take() {
            observe(code, message);
        }
    }
}

impl HttpBody for ObservedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(trailers) = f.trailers_ref() {
                    let (code, message) = status_of(trailers)
                        .unwrap_or((Code::Unknown, "no grpc-status in trailers".into()));
                    this.report(code, &message);
                }
            }
            Some(Err(e)) => this.report(e.code(), e.message()),
            None => this.report(Code::Unknown, "response ended without a status"),
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

impl Drop for ObservedBody {
    fn drop(&mut self) {
        self.report(
            Code::Cancelled,
            "the caller went away before the call ended",
        );
    }
}
