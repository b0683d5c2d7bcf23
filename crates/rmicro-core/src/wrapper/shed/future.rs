//! The load-shedding future: the call holding its place until its status is known,
//! or its refusal.

use super::layer::Limit;
use crate::errors::Error;
use crate::transport::Body;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use tower::BoxError;

/// A call's place under the limit, given back when dropped.
pub(super) struct Permit(Arc<Limit>);

impl Permit {
    /// Wraps a place already counted in `limit`.
    pub(super) fn new(limit: Arc<Limit>) -> Self {
        Permit(limit)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// The future of [`LoadShedService`](super::LoadShedService).
    pub struct LoadShedFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling { #[pin] fut: F, permit: Option<Permit> },
        Refused { error: Option<Error> },
    }
}

impl<F> LoadShedFuture<F> {
    pub(super) fn calling(fut: F, permit: Permit) -> Self {
        LoadShedFuture {
            state: State::Calling {
                fut,
                permit: Some(permit),
            },
        }
    }

    pub(super) fn refused(error: Error) -> Self {
        LoadShedFuture {
            state: State::Refused { error: Some(error) },
        }
    }
}

impl<F, E, ResBody> Future for LoadShedFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    E: Into<BoxError>,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Output = Result<http::Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Refused { error } => Poll::Ready(match error.take() {
                Some(error) => Ok(crate::wrapper::error::refusal(error)),
                None => Err("the load shedder's future was polled after it completed".into()),
            }),
            StateProj::Calling { fut, permit } => {
                let result = std::task::ready!(fut.poll(cx));
                let permit = permit.take();
                Poll::Ready(match result {
                    // The place is held until the status is known (a stream's end).
                    Ok(response) => Ok(crate::wrapper::on_status(
                        response.map(Body::new),
                        move |_| drop(permit),
                    )),
                    Err(err) => Err(err.into()),
                })
            }
        }
    }
}
