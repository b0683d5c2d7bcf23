//! The bottom of the attempt stack: sends the attempt on the channel to the node the
//! retry loop picked (carried in the request's extensions past `wrap_call` wrappers).

use super::ClientStack;
use crate::transport::{Body, Channel};
use futures_util::future::BoxFuture;
use std::task::{Context, Poll};
use tower::{BoxError, Service, ServiceExt};

/// The channel an attempt goes out on.
#[derive(Clone)]
pub(crate) struct AttemptChannel(pub(crate) Channel);

/// The innermost attempt service.
#[derive(Clone, Copy)]
struct ToChannel;

/// The innermost attempt service, boxed for the `wrap_call` wrappers.
pub(crate) fn to_channel() -> ClientStack {
    ClientStack::new(ToChannel)
}

impl Service<http::Request<Body>> for ToChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let Some(AttemptChannel(mut channel)) = request.extensions_mut().remove() else {
            return Box::pin(std::future::ready(Err(
                "a call wrapper removed the attempt's channel from the request extensions".into(),
            )));
        };
        Box::pin(async move {
            channel.ready().await?;
            Ok(channel.call(request).await?)
        })
    }
}
