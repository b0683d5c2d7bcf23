//! The rate limiter's future: the call, its refusal, or the wait for a token.

use crate::errors::Error;
use futures_util::future::BoxFuture;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::BoxError;

pin_project_lite::pin_project! {
    /// The future of [`RateLimitService`](super::RateLimitService).
    pub struct RateLimitFuture<F, R> {
        #[pin]
        state: State<F, R>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, R> {
        /// A token was there: the call runs.
        Calling { #[pin] fut: F },
        /// No token, no waiting: refused.
        Refused { error: Option<Error> },
        /// Waiting for a token (then calling), within the bound.
        Waiting { fut: BoxFuture<'static, Result<R, BoxError>> },
    }
}

impl<F, R> RateLimitFuture<F, R> {
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

    pub(super) fn waiting(fut: BoxFuture<'static, Result<R, BoxError>>) -> Self {
        RateLimitFuture {
            state: State::Waiting { fut },
        }
    }
}

impl<F, R, E> Future for RateLimitFuture<F, R>
where
    F: Future<Output = Result<R, E>>,
    E: Into<BoxError>,
{
    type Output = Result<R, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Calling { fut } => fut.poll(cx).map_err(Into::into),
            StateProj::Refused { error } => Poll::Ready(Err(match error.take() {
                Some(error) => error.into(),
                None => "the rate limiter's future was polled after it completed".into(),
            })),
            StateProj::Waiting { fut } => fut.as_mut().poll(cx),
        }
    }
}
