//! proto3 JSON ⇄ protobuf, driven by the descriptors that codegen embeds.

use crate::Error;
use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor, SerializeOptions,
};

/// The id of errors the JSON codec raises.
const CODEC: &str = "rmicro.codec.json";

/// Descriptors could not be loaded into the transcoder.
#[derive(Debug, thiserror::Error)]
#[error("invalid file descriptor set for the JSON codec: {0}")]
pub struct TranscodeError(#[from] prost_reflect::DescriptorError);

/// Converts messages between proto3 JSON and protobuf for the services it knows.
#[derive(Debug, Clone, Default)]
pub struct JsonTranscoder {
    pool: DescriptorPool,
}

impl JsonTranscoder {
    /// An empty transcoder; add services with [`JsonTranscoder::add_file_descriptor_set`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Learns every message and service of an encoded `FileDescriptorSet`.
    pub fn add_file_descriptor_set(&mut self, bytes: &[u8]) -> Result<(), TranscodeError> {
        self.pool.decode_file_descriptor_set(bytes)?;
        Ok(())
    }

    /// The method at a gRPC path (`/greeter.v1.Greeter/SayHello`), if known.
    pub fn method(&self, service: &str, method: &str) -> Option<MethodDescriptor> {
        self.pool
            .get_service_by_name(service)?
            .methods()
            .find(|m| m.name() == method)
    }

    /// The descriptor of a message by its full name (`greeter.v1.HelloRequest`).
    pub fn message(&self, full_name: &str) -> Option<MessageDescriptor> {
        self.pool.get_message_by_name(full_name)
    }
}

/// Parses a proto3 JSON document as `desc` and encodes it as protobuf; a document that
/// does not fit `desc` is a 400 (`INVALID_ARGUMENT`) naming the message type.
pub fn json_to_proto(desc: &MessageDescriptor, json: &[u8]) -> Result<Bytes, Error> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let message = DynamicMessage::deserialize(desc.clone(), &mut de)
        .and_then(|m| de.end().map(|()| m))
        .map_err(|e| {
            Error::bad_request(
                CODEC,
                format!("request is not valid JSON for `{}`: {e}", desc.full_name()),
            )
        })?;
    Ok(Bytes::from(message.encode_to_vec()))
}

/// Decodes protobuf bytes as `desc` and writes them as proto3 JSON (fields in
/// lowerCamelCase, default values included so callers see every field); bytes that are
/// not a `desc` are a 500 (`INTERNAL`).
pub fn proto_to_json(desc: &MessageDescriptor, proto: &[u8]) -> Result<Bytes, Error> {
    let message = DynamicMessage::decode(desc.clone(), proto).map_err(|e| {
        Error::internal(
            CODEC,
            format!("message is not a valid `{}`: {e}", desc.full_name()),
        )
    })?;
    let options = SerializeOptions::new().skip_default_fields(false);
    let mut out = Vec::with_capacity(proto.len() * 2 + 2);
    let mut ser = serde_json::Serializer::new(&mut out);
    message
        .serialize_with_options(&mut ser, &options)
        .map_err(|e| {
            Error::internal(
                CODEC,
                format!("cannot write `{}` as JSON: {e}", desc.full_name()),
            )
        })?;
    Ok(Bytes::from(out))
}
