//! Replies a server streams back to a caller.

use super::CLIENT_ID;
use crate::errors::Error;
use futures_util::Stream;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::Sleep;

/// A stream of replies. Ends with `Ok(None)` when the server finishes, or an error
/// (the server's, or a timeout once the call's deadline passes). Dropping it cancels
/// the call.
pub struct ResponseStream<T> {
    inner: tonic::Streaming<T>,
    deadline: Option<Pin<Box<Sleep>>>,
    service: std::sync::Arc<str>,
    ended: bool,
    headers: crate::metadata::Metadata,
}

impl<T> std::fmt::Debug for ResponseStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseStream")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl<T> ResponseStream<T> {
    pub(crate) fn new(
        inner: tonic::Streaming<T>,
        deadline: Option<tokio::time::Instant>,
        service: std::sync::Arc<str>,
    ) -> Self {
        ResponseStream {
            inner,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            service,
            ended: false,
            headers: crate::metadata::Metadata::new(),
        }
    }

    pub(crate) fn with_headers(mut self, headers: crate::metadata::Metadata) -> Self {
        self.headers = headers;
        self
    }

    /// The metadata the server sent in its response headers, before any reply.
    pub fn headers(&self) -> &crate::metadata::Metadata {
        &self.headers
    }

    /// The next reply; `Ok(None)` when the server has finished.
    pub async fn message(&mut self) -> Result<Option<T>, Error> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx))
            .await
            .transpose()
    }
}

impl<T> Stream for ResponseStream<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let past_deadline = this
            .deadline
            .as_mut()
            .is_some_and(|d| d.as_mut().poll(cx).is_ready());
        let timed_out = |service: &str| {
            Error::timeout(
                CLIENT_ID,
                format!("stream from `{service}` ran past its deadline"),
            )
        };
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(message))) => Poll::Ready(Some(Ok(message))),
            Poll::Ready(Some(Err(status))) => {
                this.ended = true;
                // tonic's own timer cancels the stream at the same deadline as ours.
                let err = if past_deadline && status.code() == tonic::Code::Cancelled {
                    timed_out(&this.service)
                } else {
                    Error::from_status(&status, CLIENT_ID)
                };
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending if past_deadline => {
                this.ended = true;
                Poll::Ready(Some(Err(timed_out(&this.service))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
