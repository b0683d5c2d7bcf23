//! The one reply of a unary or client-streaming call, read straight off the
//! response body: its frames collected (usually one data frame and the trailers),
//! the gRPC message taken out without a copy when it came in one piece, and the
//! call's status read from the trailers — gRPC's rules as tonic's `Streaming`
//! applies them, without the boxed decoder, body and buffer a stream needs.

use crate::codec::{DecodeReply, FRAME_HEADER};
use crate::transport::Body;
use crate::wrapper::MessageCounts;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use tonic::{Code, Status};

/// What came back for a call that has one reply: the message and the trailers.
pub(super) struct OneMessage<D> {
    pub(super) message: D,
    pub(super) trailers: Option<http::HeaderMap>,
}

/// The bytes of the response body so far: the first data frame as it came, and
/// a buffer only once a second one arrives.
enum Received {
    Nothing,
    One(Bytes),
    Many(BytesMut),
}

impl Received {
    fn push(&mut self, data: Bytes) {
        *self = match std::mem::replace(self, Received::Nothing) {
            Received::Nothing => Received::One(data),
            Received::One(first) => {
                let mut all = BytesMut::with_capacity(first.len() + data.len());
                all.extend_from_slice(&first);
                all.extend_from_slice(&data);
                Received::Many(all)
            }
            Received::Many(mut all) => {
                all.extend_from_slice(&data);
                Received::Many(all)
            }
        };
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Received::Nothing => &[],
            Received::One(b) => b,
            Received::Many(b) => b,
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Received::Nothing => Bytes::new(),
            Received::One(b) => b,
            Received::Many(b) => b.freeze(),
        }
    }
}

/// Checks the header of the message at the start of `bytes` (when it has come):
/// the compression flag and the length against `max`. The message's length.
fn message_len(
    bytes: &[u8],
    max: usize,
    status: http::StatusCode,
) -> Result<Option<usize>, Status> {
    let Some(header) = bytes.get(..FRAME_HEADER) else {
        return Ok(None);
    };
    match header[0] {
        0 => {}
        // rmicro's client asks for no compression, so a compressed reply is a
        // protocol error, as gRPC says it must be (INTERNAL).
        1 => {
            return Err(Status::internal(
                "protocol error: received message with compressed-flag but no grpc-encoding was specified",
            ));
        }
        flag => {
            return Err(Status::internal(format!(
                "protocol error: received message with invalid compression flag: {flag} (valid flags are 0 and 1) while receiving response with status: {status}"
            )));
        }
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > max {
        return Err(Status::out_of_range(format!(
            "Error, decoded message length too large: found {len} bytes, the limit is: {max} bytes"
        )));
    }
    Ok(Some(len))
}

/// The call's status from its trailers, or from the HTTP status when the server
/// sent no `grpc-status` (gRPC's HTTP-to-gRPC mapping).
fn final_status(trailers: Option<&http::HeaderMap>, http: http::StatusCode) -> Result<(), Status> {
    if let Some(status) = trailers.and_then(Status::from_header_map) {
        return if status.code() == Code::Ok {
            Ok(())
        } else {
            Err(status)
        };
    }
    let code = match http {
        http::StatusCode::OK => {
            return Err(Status::unknown(
                "protocol error: missing grpc-status trailer, stream was terminated without a final status (possible truncation by a proxy or load balancer)",
            ));
        }
        http::StatusCode::BAD_REQUEST => Code::Internal,
        http::StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        http::StatusCode::FORBIDDEN => Code::PermissionDenied,
        http::StatusCode::NOT_FOUND => Code::Unimplemented,
        http::StatusCode::TOO_MANY_REQUESTS
        | http::StatusCode::BAD_GATEWAY
        | http::StatusCode::SERVICE_UNAVAILABLE
        | http::StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    };
    Err(Status::new(
        code,
        format!(
            "grpc-status header missing, mapped from HTTP status code {}",
            http.as_u16()
        ),
    ))
}

/// Reads the one reply of `response` (whose head said nothing of a status) and its
/// trailers, counting the reply in `counts`. A reply over `max` bytes, compressed,
/// cut short, missing, or followed by a second one is an error, as is a status
/// other than OK in the trailers (which wins over what the body held).
pub(super) async fn read_one<D: DecodeReply>(
    response: http::Response<Body>,
    max: usize,
    counts: &MessageCounts,
) -> Result<OneMessage<D>, Status> {
    let http_status = response.status();
    let mut body = response.into_body();
    let mut received = Received::Nothing;
    let mut trailers: Option<http::HeaderMap> = None;
    let mut counted = false;
    if http_status != http::StatusCode::OK {
        // Not a gRPC answer (a proxy's error page): its status, not its bytes.
        drain_trailers(&mut body, &mut trailers).await?;
        final_status(trailers.as_ref(), http_status)?;
        return Err(Status::unknown(format!(
            "the server answered HTTP status {http_status} with grpc-status OK"
        )));
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Status::from_error(e.into()))?;
        match frame.into_data() {
            Ok(data) => {
                received.push(data);
                // Refuse an oversized or compressed reply as soon as its header
                // is in, before its bytes are buffered.
                let Some(len) = message_len(received.bytes(), max, http_status)? else {
                    continue;
                };
                let have = received.bytes().len();
                if have >= FRAME_HEADER + len && !counted {
                    // Counted once whole, before the trailers end the call
                    // (wrappers read the counts when its status arrives).
                    counts.record_received(len);
                    counted = true;
                }
                if have > FRAME_HEADER + len {
                    // A second message (even a partial one): the status decides
                    // first if it is an error, else the reply breaks gRPC's rule.
                    drain_trailers(&mut body, &mut trailers).await?;
                    final_status(trailers.as_ref(), http_status)?;
                    return Err(Status::internal(
                        "cardinality violation: expected <EOF> for a call with one reply, but received another message",
                    ));
                }
            }
            Err(frame) => {
                if let Ok(more) = frame.into_trailers() {
                    keep(&mut trailers, more);
                }
            }
        }
    }
    final_status(trailers.as_ref(), http_status)?;
    let len = match message_len(received.bytes(), max, http_status)? {
        Some(len) if received.bytes().len() == FRAME_HEADER + len => len,
        _ if received.bytes().is_empty() => {
            return Err(Status::internal("the server sent no reply message"));
        }
        _ => return Err(Status::internal("Unexpected EOF decoding stream.")),
    };
    debug_assert!(
        counted,
        "a whole reply was counted as it arrived ({len} bytes)"
    );
    let mut message = received.into_bytes();
    message.advance(FRAME_HEADER);
    let message = D::decode_reply(&mut message)
        .map_err(|e| Status::internal(format!("cannot decode reply: {e}")))?;
    Ok(OneMessage { message, trailers })
}

/// Reads the rest of `body`, keeping its trailers.
async fn drain_trailers(
    body: &mut Body,
    trailers: &mut Option<http::HeaderMap>,
) -> Result<(), Status> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Status::from_error(e.into()))?;
        if let Ok(more) = frame.into_trailers() {
            keep(trailers, more);
        }
    }
    Ok(())
}

/// Adds `more` to the trailers kept so far.
fn keep(trailers: &mut Option<http::HeaderMap>, more: http::HeaderMap) {
    match trailers {
        Some(all) => all.extend(more),
        None => *trailers = Some(more),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::RawMessage;
    use http_body::Frame;

    /// A response whose body sends `data` in the pieces given, then `trailers`.
    fn response(
        status: http::StatusCode,
        data: &[&[u8]],
        trailers: Option<&[(&'static str, &'static str)]>,
    ) -> http::Response<Body> {
        let mut frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = data
            .iter()
            .map(|d| Ok(Frame::data(Bytes::copy_from_slice(d))))
            .collect();
        if let Some(trailers) = trailers {
            let mut map = http::HeaderMap::new();
            for (name, value) in trailers {
                map.insert(*name, http::HeaderValue::from_static(value));
            }
            frames.push(Ok(Frame::trailers(map)));
        }
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let mut response = http::Response::new(Body::new(body));
        *response.status_mut() = status;
        response
    }

    fn framed(message: &[u8]) -> Vec<u8> {
        crate::codec::frame(message).to_vec()
    }

    const OK: &[(&str, &str)] = &[("grpc-status", "0")];

    async fn read(response: http::Response<Body>) -> (Result<OneMessage<RawMessage>, Status>, u64) {
        let counts = MessageCounts::default();
        let result = read_one::<RawMessage>(response, 64, &counts).await;
        (result, counts.received())
    }

    #[tokio::test]
    async fn a_reply_in_one_frame_or_in_pieces_is_read_whole() {
        let whole = framed(b"hello");
        let (reply, counted) = read(response(http::StatusCode::OK, &[&whole], Some(OK))).await;
        let reply = reply.expect("a reply");
        assert_eq!(reply.message.0, &b"hello"[..]);
        assert_eq!(counted, 1);
        assert!(reply.trailers.is_some());
        // The header split, then the message split.
        let (a, b) = whole.split_at(3);
        let (b, c) = b.split_at(4);
        let (reply, _) = read(response(http::StatusCode::OK, &[a, b, c], Some(OK))).await;
        assert_eq!(reply.expect("a reply").message.0, &b"hello"[..]);
        // An empty message is a reply too.
        let (reply, _) = read(response(http::StatusCode::OK, &[&framed(b"")], Some(OK))).await;
        assert!(reply.expect("an empty reply").message.0.is_empty());
    }

    #[tokio::test]
    async fn the_trailers_status_wins_over_the_reply() {
        let (reply, _) = read(response(
            http::StatusCode::OK,
            &[&framed(b"hello")],
            Some(&[("grpc-status", "5"), ("grpc-message", "gone")]),
        ))
        .await;
        let status = reply.err().expect("an error");
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "gone");
    }

    #[tokio::test]
    async fn broken_replies_are_errors_that_say_why() {
        // (response, code, words in the message, replies counted)
        let cases: Vec<(http::Response<Body>, Code, &str, u64)> = vec![
            (
                response(http::StatusCode::OK, &[], Some(OK)),
                Code::Internal,
                "no reply message",
                0,
            ),
            (
                response(
                    http::StatusCode::OK,
                    &[&framed(b"one"), &framed(b"two")],
                    Some(OK),
                ),
                Code::Internal,
                "cardinality violation",
                1,
            ),
            (
                response(http::StatusCode::OK, &[&[1, 0, 0, 0, 1, 7]], Some(OK)),
                Code::Internal,
                "compressed-flag",
                0,
            ),
            (
                response(http::StatusCode::OK, &[&[0, 0, 0, 1, 0]], Some(OK)),
                Code::OutOfRange,
                "found 256 bytes, the limit is: 64 bytes",
                0,
            ),
            (
                response(http::StatusCode::OK, &[&framed(b"hello")[..6]], Some(OK)),
                Code::Internal,
                "Unexpected EOF",
                0,
            ),
            (
                response(http::StatusCode::OK, &[&framed(b"hello")], None),
                Code::Unknown,
                "missing grpc-status",
                1,
            ),
            (
                response(http::StatusCode::SERVICE_UNAVAILABLE, &[b"<html>"], None),
                Code::Unavailable,
                "mapped from HTTP status code 503",
                0,
            ),
        ];
        for (i, (response, code, words, replies)) in cases.into_iter().enumerate() {
            let (reply, counted) = read(response).await;
            let status = reply.err().unwrap_or_else(|| panic!("case {i}: no error"));
            assert_eq!(status.code(), code, "case {i}: {status:?}");
            assert!(status.message().contains(words), "case {i}: {status:?}");
            assert_eq!(counted, replies, "case {i}: replies counted");
        }
    }

    #[tokio::test]
    async fn an_error_status_wins_over_a_second_message() {
        let (reply, _) = read(response(
            http::StatusCode::OK,
            &[&framed(b"one"), &framed(b"two")],
            Some(&[("grpc-status", "14"), ("grpc-message", "draining")]),
        ))
        .await;
        assert_eq!(reply.err().expect("an error").code(), Code::Unavailable);
    }
}
