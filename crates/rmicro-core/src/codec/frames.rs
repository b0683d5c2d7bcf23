//! A body adapter that rewrites each length-prefixed gRPC message of a stream.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tonic::Status;

/// gRPC message header: 1 byte compression flag, 4 bytes big-endian length.
const HEADER: usize = 5;

pin_project_lite::pin_project! {
    /// Applies `map` to every complete message of the inner body, leaving trailers as
    /// they are. A message larger than `max_len`, a compressed message, or a failing
    /// `map` ends the body with that [`Status`] as its error.
    pub(crate) struct MapFrames<B, F> {
        #[pin]
        inner: B,
        map: F,
        buf: BytesMut,
        max_len: usize,
        failed: bool,
    }
}

impl<B, F> MapFrames<B, F> {
    /// Wraps `inner`, refusing messages above `max_len` bytes.
    pub(crate) fn new(inner: B, max_len: usize, map: F) -> Self {
        MapFrames {
            inner,
            map,
            buf: BytesMut::new(),
            max_len,
            failed: false,
        }
    }
}

/// Takes one complete message off the front of `buf`, if it holds one.
pub(crate) fn next_message(buf: &mut BytesMut, max_len: usize) -> Result<Option<Bytes>, Status> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    if buf[0] != 0 {
        return Err(Status::unimplemented(
            "compressed messages are not supported with the JSON codec; send them uncompressed",
        ));
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > max_len {
        return Err(Status::resource_exhausted(format!(
            "message of {len} bytes is larger than the limit of {max_len} bytes"
        )));
    }
    if buf.len() < HEADER + len {
        return Ok(None);
    }
    buf.advance(HEADER);
    Ok(Some(buf.split_to(len).freeze()))
}

fn frame(message: Bytes) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put(message);
    out.freeze()
}

impl<B, F> HttpBody for MapFrames<B, F>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<tower::BoxError>,
    F: FnMut(Bytes) -> Result<Bytes, Status>,
{
    type Data = Bytes;
    type Error = tower::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        loop {
            match next_message(this.buf, *this.max_len)
                .and_then(|m| m.map(&mut *this.map).transpose())
            {
                Ok(Some(mapped)) => return Poll::Ready(Some(Ok(Frame::data(frame(mapped))))),
                Ok(None) => {}
                Err(status) => {
                    *this.failed = true;
                    return Poll::Ready(Some(Err(Box::new(status))));
                }
            }
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(f)) => match f.into_data() {
                    Ok(data) => this.buf.extend_from_slice(&data),
                    Err(f) => return Poll::Ready(Some(Ok(f))),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None if this.buf.is_empty() => return Poll::Ready(None),
                None => {
                    *this.failed = true;
                    let status = Status::internal("stream ended inside a gRPC message");
                    return Poll::Ready(Some(Err(Box::new(status))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || (self.buf.is_empty() && self.inner.is_end_stream())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn body_of(
        chunks: Vec<Bytes>,
    ) -> impl HttpBody<Data = Bytes, Error = std::convert::Infallible> {
        StreamBody::new(futures_util::stream::iter(
            chunks.into_iter().map(|c| Ok(Frame::data(c))),
        ))
    }

    #[tokio::test]
    async fn maps_messages_split_across_chunks() {
        let mut wire = BytesMut::new();
        wire.put(frame(Bytes::from_static(b"ab")));
        wire.put(frame(Bytes::from_static(b"cde")));
        let wire = wire.freeze();
        let chunks = vec![wire.slice(0..3), wire.slice(3..9), wire.slice(9..)];
        let body = MapFrames::new(body_of(chunks), 100, |m: Bytes| {
            Ok(Bytes::from(m.to_ascii_uppercase()))
        });
        let out = body.collect().await.unwrap().to_bytes();
        let mut expected = BytesMut::new();
        expected.put(frame(Bytes::from_static(b"AB")));
        expected.put(frame(Bytes::from_static(b"CDE")));
        assert_eq!(out, expected.freeze());
    }

    #[tokio::test]
    async fn refuses_oversized_and_truncated_messages() {
        let big = frame(Bytes::from(vec![0u8; 20]));
        let err = MapFrames::new(body_of(vec![big.clone()]), 10, Ok)
            .collect()
            .await
            .err()
            .unwrap();
        let status = err.downcast::<Status>().unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);

        let cut = big.slice(0..8);
        let err = MapFrames::new(body_of(vec![cut]), 100, Ok)
            .collect()
            .await
            .err()
            .unwrap();
        assert_eq!(
            err.downcast::<Status>().unwrap().code(),
            tonic::Code::Internal
        );
    }
}
