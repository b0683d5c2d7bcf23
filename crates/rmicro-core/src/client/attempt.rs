//! The bottom of the attempt stack: sends the attempt on the channel to the node the
//! retry loop picked (carried in the request's extensions past `wrap_call` wrappers).

use crate::transport::{Body, Channel};
use crate::wrapper::from_fn::SharedCall;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use tower::{Service, ServiceExt};

/// The channel an attempt goes out on.
#[derive(Clone)]
pub(crate) struct AttemptChannel(pub(crate) Channel);

/// The innermost attempt service, for the `wrap_call` wrappers: always ready (it
/// waits for the attempt's channel itself).
pub(crate) fn to_channel() -> SharedCall {
    Arc::new(|mut request: http::Request<Body>| {
        let Some(AttemptChannel(mut channel)) = request.extensions_mut().remove() else {
            return Box::pin(std::future::ready(Err(
                "a call wrapper removed the attempt's channel from the request extensions".into(),
            ))) as BoxFuture<'static, _>;
        };
        Box::pin(async move {
            channel.ready().await?;
            Ok(channel.call(request).await?)
        })
    })
}
