//! The metrics' future: counts the call when its status is known.

use super::layer::Handles;
use crate::errors::{Code, Error};
use crate::transport::Body;
use crate::wrapper::on_status;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

pin_project_lite::pin_project! {
    /// The future of [`MetricsService`](super::MetricsService).
    pub struct MetricsFuture<F> {
        #[pin]
        inner: F,
        run: Option<Run>,
    }
}

/// Where a call's message sizes are counted: a client sends the requests, a
/// server receives them.
pub(super) enum Sizes {
    Sent(Arc<crate::wrapper::MessageCounts>),
    Received(Arc<crate::wrapper::MessageCounts>),
}

impl Sizes {
    /// Request bytes and response bytes.
    fn read(&self) -> (u64, u64) {
        match self {
            Sizes::Sent(m) => (m.sent_bytes(), m.received_bytes()),
            Sizes::Received(m) => (m.received_bytes(), m.sent_bytes()),
        }
    }
}

/// A call being counted: counted once, when it ends or is dropped.
struct Run {
    handles: Arc<Handles>,
    started: Instant,
    counted: bool,
    sizes: Option<Sizes>,
}

impl Run {
    fn finish(&mut self, code: Code) {
        if !std::mem::replace(&mut self.counted, true) {
            let sizes = self.sizes.as_ref().map(Sizes::read);
            self.handles
                .finish(code, self.started.elapsed().as_secs_f64(), sizes);
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // Abandoned before its status: the caller went away.
        self.finish(Code::Cancelled);
    }
}

impl<F> MetricsFuture<F> {
    pub(super) fn new(inner: F, handles: Arc<Handles>, sizes: Option<Sizes>) -> Self {
        MetricsFuture {
            inner,
            run: Some(Run {
                handles,
                started: Instant::now(),
                counted: false,
                sizes,
            }),
        }
    }
}

impl<F, E, ResBody> Future for MetricsFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    E: Into<tower::BoxError>,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<tower::BoxError>,
{
    type Output = Result<http::Response<Body>, tower::BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let Some(mut run) = this.run.take() else {
            return Poll::Ready(Err(
                "the metrics future was polled after it completed".into()
            ));
        };
        Poll::Ready(match result {
            Ok(response) => {
                let response = response.map(Body::new);
                Ok(on_status(response, move |outcome| {
                    run.finish(outcome.code())
                }))
            }
            Err(err) => {
                let err: tower::BoxError = err.into();
                run.finish(
                    err.downcast_ref::<Error>()
                        .map_or(Code::Unavailable, Error::grpc_code),
                );
                Err(err)
            }
        })
    }
}
