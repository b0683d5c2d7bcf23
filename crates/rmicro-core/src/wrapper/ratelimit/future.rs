//! The rate limiter's future: the call, its refusal, or the wait for a token.

use crate::errors::Error;
use crate::transport::Body;
use futures_util::future::BoxFuture;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::BoxError;

pin_project_lite::pin_project! {
    /// The future of [`RateLimitService`](super::RateLimitService).
    pub struct RateLimitFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        /// A token was there: the call runs.
        Calling { #[pin] fut: F },
        /// No token, no waiting: refused.
        Refused { error: Option<Error> },
        /// Waiting for a token (then calling), within the bound.
        Waiting { fut: BoxFuture<'static, Reply> },
    }
}

/// What the wrapped call answers, as rmicro's body.
pub(super) type Reply = Result<http::Response<Body>, BoxError>;

impl<F> RateLimitFuture<F> {
    pub(super) fn calling(fut: F) -> Self {
        RateLimitFuture {
            state: State::Calling { fut },
        }
    }

    pub(super) fn refused(error: Error) -> Self {
        RateLimitFuture {
            state: State::Refused { error: Some(error) },
        }
    }

    pub(super) fn waiting(fut: BoxFuture<'static, Reply>) -> Self {
        RateLimitFuture {
            state: State::Waiting { fut },
        }
    }
}

impl<F, E, ResBody> Future for RateLimitFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    E: Into<BoxError>,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Output = Reply;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Calling { fut } => fut
                .poll(cx)
                .map(|result| result.map(|r| r.map(Body::new)).map_err(Into::into)),
            StateProj::Refused { error } => Poll::Ready(match error.take() {
                Some(error) => Ok(crate::wrapper::error::refusal(error)),
                None => Err("the rate limiter's future was polled after it completed".into()),
            }),
            StateProj::Waiting { fut } => fut.as_mut().poll(cx),
        }
    }
}
