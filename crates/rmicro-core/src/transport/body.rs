//! rmicro's HTTP body: what every request and response it serves or sends carries.
//!
//! A type of our own rather than the engine's: services, wrappers and tests name
//! `rmicro::transport::Body`, and the gRPC engine under it can change without their
//! code changing. Inside, it holds the engine's body, so handing a body to the engine
//! or taking one from it costs nothing (no extra box, no copy).

use crate::errors::Code;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::BoxError;

/// The HTTP body type of every request and response rmicro serves or sends.
///
/// Build one from any [`http_body::Body`] of [`Bytes`] with [`Body::new`]; an empty one
/// with [`Body::empty`] or `Body::default()`.
///
/// ```
/// # extern crate rmicro_core as rmicro;
/// use http_body::Body as _;
/// let body = rmicro::transport::Body::new(http_body_util::Full::new(bytes::Bytes::from("hi")));
/// assert_eq!(body.size_hint().exact(), Some(2));
/// assert!(rmicro::transport::Body::empty().is_end_stream());
/// ```
#[derive(Debug, Default)]
pub struct Body {
    inner: tonic::body::Body,
    /// Set by the server's dispatch on a unary reply it encoded within the size
    /// limit: the call's status is OK already, before the body is sent, so a
    /// wrapper that waits for the status ([`crate::wrapper::on_status`]) learns
    /// it at once instead of wrapping the body to read its trailers.
    settled_ok: bool,
}

impl Body {
    /// An empty body.
    pub const fn empty() -> Self {
        Body {
            inner: tonic::body::Body::empty(),
            settled_ok: false,
        }
    }

    /// Marks the body of a reply whose status is known to be OK (see the field).
    pub(crate) fn settled_ok(mut self) -> Self {
        self.settled_ok = true;
        self
    }

    /// Whether the call this body answers is known to have succeeded already.
    pub(crate) fn is_settled_ok(&self) -> bool {
        self.settled_ok
    }

    /// Wraps any body of [`Bytes`]; a [`Body`] passed in is returned as it is.
    pub fn new<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut body = Some(body);
        if let Some(own) = <dyn std::any::Any>::downcast_mut::<Option<Body>>(&mut body)
            && let Some(own) = own.take()
        {
            return own;
        }
        match body {
            Some(body) => Body::from_engine(tonic::body::Body::new(body)),
            None => Body::empty(),
        }
    }

    /// Takes the engine's body, for free.
    pub(crate) fn from_engine(body: tonic::body::Body) -> Self {
        Body {
            inner: body,
            settled_ok: false,
        }
    }

    /// Gives the engine its body, for free.
    pub(crate) fn into_engine(self) -> tonic::body::Body {
        self.inner
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Body::new(http_body_util::Full::new(bytes))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map(|frame| frame.map(|f| f.map_err(BodyError)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body stopped with an error: the connection broke, a frame was malformed or too
/// large, or a wrapper's body failed. Carries the gRPC code the call ends with.
#[derive(Debug)]
pub struct BodyError(tonic::Status);

impl BodyError {
    /// The gRPC code the call ends with.
    pub fn code(&self) -> Code {
        Code::from_tonic(self.0.code())
    }

    /// What went wrong, in words.
    pub fn message(&self) -> &str {
        self.0.message()
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for BodyError {
    // The engine finds its status through the source chain when this error travels
    // back into it, so the code survives a round trip.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn carries_bytes_and_passes_its_own_type_through() {
        let body = Body::from(Bytes::from_static(b"abc"));
        let again = Body::new(body);
        assert_eq!(again.size_hint().exact(), Some(3));
        let collected = again.collect().await.map(|c| c.to_bytes());
        assert_eq!(collected.ok(), Some(Bytes::from_static(b"abc")));
    }

    #[tokio::test]
    async fn an_error_keeps_its_code_through_the_engine() {
        let failing = http_body_util::StreamBody::new(futures_util::stream::iter([Err::<
            Frame<Bytes>,
            BoxError,
        >(
            Box::new(BodyError(tonic::Status::resource_exhausted("too big"))),
        )]));
        let mut body = Body::new(failing);
        let err = body.frame().await.and_then(Result::err);
        let err = err.map(|e| (e.code(), e.message().to_owned()));
        assert_eq!(err, Some((Code::ResourceExhausted, "too big".to_owned())));
    }
}
