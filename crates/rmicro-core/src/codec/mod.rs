//! Codecs: how messages become bytes, chosen per request by its `content-type`.
//!
//! | content-type | codec |
//! |---|---|
//! | `application/grpc`, `application/grpc+proto` | protobuf (the default, the fast path) |
//! | `application/grpc+json` | proto3 JSON mapping |
//!
//! Handlers always see typed protobuf messages. A JSON request is transcoded message
//! by message to protobuf on the way in, with the endpoint's descriptor, and the reply
//! is transcoded back to JSON on the way out, so the response uses the request's codec
//! while protobuf requests pay nothing for JSON support.

pub(crate) mod frames;
mod json;

pub(crate) use frames::MapFrames;
pub use json::{JsonTranscoder, TranscodeError, json_to_proto, proto_to_json};

use bytes::{Buf, BufMut, Bytes};
use std::marker::PhantomData;
use tonic::Status;
use tonic::codec::{DecodeBuf, Decoder};

/// The codec a request asked for with its `content-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/grpc` or `application/grpc+proto`.
    Proto,
    /// `application/grpc+json`.
    Json,
}

impl Format {
    /// Reads the codec from a `content-type` value; `None` if it is not gRPC or the
    /// sub-type is unknown.
    pub fn from_content_type(value: &[u8]) -> Option<Format> {
        let rest = value.strip_prefix(b"application/grpc")?;
        // Parameters such as `; charset=utf-8` do not change the codec.
        let subtype = rest.split(|&b| b == b';').next().unwrap_or_default();
        match subtype.trim_ascii() {
            b"" | b"+proto" => Some(Format::Proto),
            b"+json" => Some(Format::Json),
            _ => None,
        }
    }

    /// The `content-type` value of this codec.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Proto => "application/grpc",
            Format::Json => "application/grpc+json",
        }
    }
}

/// A reply type a client can decode: a protobuf message, or raw bytes for dynamic calls.
pub trait DecodeReply: Send + Sync + 'static + Sized {
    /// Decodes one message from the bytes of one gRPC frame (its 5-byte header removed).
    fn decode_reply<B: Buf>(buf: &mut B) -> Result<Self, prost::DecodeError>;
}

impl<T: prost::Message + Default + Send + Sync + 'static> DecodeReply for T {
    fn decode_reply<B: Buf>(buf: &mut B) -> Result<Self, prost::DecodeError> {
        T::decode(buf)
    }
}

/// Raw message bytes, for calls that carry JSON or pass messages through unparsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage(pub Bytes);

impl DecodeReply for RawMessage {
    fn decode_reply<B: Buf>(buf: &mut B) -> Result<Self, prost::DecodeError> {
        let len = buf.remaining();
        Ok(RawMessage(buf.copy_to_bytes(len)))
    }
}

/// Decodes each reply frame as `D`, counting what it decodes.
#[derive(Debug)]
pub(crate) struct ReplyDecoder<D> {
    counts: Option<std::sync::Arc<crate::wrapper::MessageCounts>>,
    _reply: PhantomData<fn() -> D>,
}

impl<D> ReplyDecoder<D> {
    /// A decoder that records each reply in `counts`.
    pub(crate) fn counting(counts: std::sync::Arc<crate::wrapper::MessageCounts>) -> Self {
        ReplyDecoder {
            counts: Some(counts),
            _reply: PhantomData,
        }
    }
}

impl<D: DecodeReply> Decoder for ReplyDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        if let Some(counts) = &self.counts {
            counts.record_received(src.remaining());
        }
        D::decode_reply(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode reply: {e}")))
    }

    /// Starts the reply buffer at [`REPLY_BUFFER`] bytes instead of tonic's 8 KiB:
    /// most replies are small, and a block that size comes from the allocator's
    /// per-thread cache, where an 8 KiB one takes its slow path on every call. A
    /// bigger reply grows the buffer as it arrives.
    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        tonic::codec::BufferSettings::new(REPLY_BUFFER, 32 * 1024)
    }
}

/// The reply buffer's first size (see [`ReplyDecoder`]'s `buffer_settings`).
pub(crate) const REPLY_BUFFER: usize = 512;

/// Bytes in front of every gRPC message: a compression flag and a 4-byte length.
pub(crate) const FRAME_HEADER: usize = 5;

/// Frames one uncompressed message as gRPC sends it.
pub(crate) fn frame(message: &[u8]) -> Bytes {
    let mut buf = bytes::BytesMut::with_capacity(FRAME_HEADER + message.len());
    buf.put_u8(0);
    buf.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    buf.put_slice(message);
    buf.freeze()
}

/// Encodes a protobuf message straight into a gRPC frame (no second copy).
pub(crate) fn encode_framed<M: prost::Message>(message: &M) -> Bytes {
    let len = message.encoded_len();
    let mut buf = bytes::BytesMut::with_capacity(FRAME_HEADER + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // Cannot fail: the buffer was sized to the message.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_codec_from_the_content_type() {
        assert_eq!(
            Format::from_content_type(b"application/grpc"),
            Some(Format::Proto)
        );
        assert_eq!(
            Format::from_content_type(b"application/grpc+proto"),
            Some(Format::Proto)
        );
        assert_eq!(
            Format::from_content_type(b"application/grpc+json"),
            Some(Format::Json)
        );
        assert_eq!(
            Format::from_content_type(b"application/grpc+json; charset=utf-8"),
            Some(Format::Json)
        );
        assert_eq!(Format::from_content_type(b"application/grpc+thrift"), None);
        assert_eq!(Format::from_content_type(b"application/json"), None);
    }
}
