//! The proto3 JSON codec (`application/grpc+json`) on messages with strings,
//! enums, oneofs, nested and repeated fields (health and reflection): JSON in →
//! protobuf, which must turn back into JSON and into the same protobuf; and
//! arbitrary protobuf bytes → JSON.
#![no_main]
use rmicro_core::codec::{JsonTranscoder, json_to_proto, proto_to_json};
use std::sync::OnceLock;

fn transcoder() -> &'static JsonTranscoder {
    static T: OnceLock<JsonTranscoder> = OnceLock::new();
    T.get_or_init(|| {
        let mut t = JsonTranscoder::new();
        t.add_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .expect("health descriptors");
        t.add_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .expect("reflection descriptors");
        t
    })
}

const MESSAGES: [&str; 4] = [
    "grpc.health.v1.HealthCheckRequest",
    "grpc.health.v1.HealthCheckResponse",
    "grpc.reflection.v1.ServerReflectionRequest",
    "grpc.reflection.v1.ServerReflectionResponse",
];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Some(desc) = transcoder().message(MESSAGES[usize::from(pick) % MESSAGES.len()]) else {
        return;
    };
    if let Ok(proto) = json_to_proto(&desc, rest) {
        let json = proto_to_json(&desc, &proto).expect("what we encoded, we print");
        let again = json_to_proto(&desc, &json).expect("what we print, we read");
        assert_eq!(proto, again, "{}", String::from_utf8_lossy(&json));
    }
    let _ = proto_to_json(&desc, rest);
});
