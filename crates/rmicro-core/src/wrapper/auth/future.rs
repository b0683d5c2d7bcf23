//! The auth future: the handler's answer, or the refusal decided before it ran.

use crate::errors::Error;
use crate::transport::Body;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::BoxError;

pin_project_lite::pin_project! {
    /// The future of [`AuthService`](super::AuthService).
    pub struct AuthFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        // Allowed: the call goes on.
        Called { #[pin] inner: F },
        // Refused: the status to answer with, taken when answered.
        Refused { error: Option<Error> },
    }
}

impl<F> AuthFuture<F> {
    pub(super) fn called(inner: F) -> Self {
        AuthFuture {
            state: State::Called { inner },
        }
    }

    pub(super) fn refused(error: Error) -> Self {
        AuthFuture {
            state: State::Refused { error: Some(error) },
        }
    }
}

impl<F, E, ResBody> Future for AuthFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    E: Into<BoxError>,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Output = Result<http::Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { inner } => inner
                .poll(cx)
                .map(|r| r.map(|r| r.map(Body::new)).map_err(Into::into)),
            StateProj::Refused { error } => Poll::Ready(match error.take() {
                Some(error) => Ok(crate::wrapper::error::refusal(error)),
                None => Err("an auth refusal was polled after it answered".into()),
            }),
        }
    }
}
