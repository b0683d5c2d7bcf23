//! Typed events on top of [`Message`]: encode with a codec (protobuf by default,
//! JSON), stamp the standard headers, decode by content type.

use super::{
    CONTENT_TYPE, Delivery, FROM_SERVICE, MESSAGE_ID, Message, TIMESTAMP, TOPIC, TRACEPARENT,
};
use crate::Error;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Content type of protobuf events.
pub const PROTOBUF: &str = "application/protobuf";
/// Content type of JSON events.
pub const JSON: &str = "application/json";

/// Encodes a protobuf event.
pub fn encode_proto<M: prost::Message>(event: &M) -> Message {
    Message::new(event.encode_to_vec()).header(CONTENT_TYPE, PROTOBUF)
}

/// Encodes a JSON event.
pub fn encode_json<T: Serialize + ?Sized>(event: &T) -> Result<Message, Error> {
    let body = serde_json::to_vec(event).map_err(|e| {
        Error::bad_request(
            "rmicro.broker",
            format!("cannot encode the event as JSON: {e}"),
        )
    })?;
    Ok(Message::new(body).header(CONTENT_TYPE, JSON))
}

fn content_type(message: &Message) -> &str {
    message
        .headers
        .get(CONTENT_TYPE)
        .map(String::as_str)
        .unwrap_or("")
}

/// Decodes a protobuf event; a JSON or garbled body is an error (the message then
/// goes the way of any failed delivery, ending in the dead-letter topic).
pub fn decode_proto<M: prost::Message + Default>(message: &Message) -> Result<M, Error> {
    let kind = content_type(message);
    if !(kind.is_empty() || kind == PROTOBUF || kind == "application/x-protobuf") {
        return Err(Error::bad_request(
            "rmicro.broker",
            format!("expected a protobuf event, got content type `{kind}`"),
        ));
    }
    M::decode(message.body.as_ref())
        .map_err(|e| Error::bad_request("rmicro.broker", format!("malformed protobuf event: {e}")))
}

/// Decodes a JSON event.
pub fn decode_json<T: DeserializeOwned>(message: &Message) -> Result<T, Error> {
    let kind = content_type(message);
    if !(kind.is_empty() || kind.starts_with(JSON)) {
        return Err(Error::bad_request(
            "rmicro.broker",
            format!("expected a JSON event, got content type `{kind}`"),
        ));
    }
    serde_json::from_slice(&message.body)
        .map_err(|e| Error::bad_request("rmicro.broker", format!("malformed JSON event: {e}")))
}

/// Fills the standard headers a publisher sends: topic, a fresh message id, the
/// time, the publishing service and — inside a handler — the caller's trace
/// context. Headers already set are kept.
pub fn stamp(mut message: Message, topic: &str, from_service: Option<&str>) -> Message {
    let headers = &mut message.headers;
    headers
        .entry(TOPIC.into())
        .or_insert_with(|| topic.to_owned());
    headers
        .entry(MESSAGE_ID.into())
        .or_insert_with(|| uuid::Uuid::new_v4().to_string());
    headers
        .entry(TIMESTAMP.into())
        .or_insert_with(|| rfc3339(std::time::SystemTime::now()));
    if let Some(service) = from_service {
        headers
            .entry(FROM_SERVICE.into())
            .or_insert_with(|| service.to_owned());
    }
    if let Some(ctx) = crate::context::Context::current()
        && let Some(trace) = ctx.metadata().get(TRACEPARENT)
    {
        headers
            .entry(TRACEPARENT.into())
            .or_insert_with(|| trace.to_owned());
    }
    message
}

/// `2026-11-24T10:51:33.123Z`.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    String::from_utf8_lossy(&rfc3339_bytes(time)).into_owned()
}

/// [`rfc3339`] without an allocation or the formatting machinery (every ECS log
/// line starts with one): `YYYY-MM-DDTHH:MM:SS.mmmZ`, years past 9999 written as 9999.
pub(crate) fn rfc3339_bytes(time: std::time::SystemTime) -> [u8; 24] {
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = (yoe + era * 400 + i64::from(month <= 2)).clamp(0, 9999) as u64;
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, rest / 3600);
    put(14, 2, rest % 3600 / 60);
    put(17, 2, rest % 60);
    put(20, 3, u64::from(since.subsec_millis()));
    out
}

/// A decoded event as a typed subscriber sees it.
#[derive(Debug, Clone)]
pub struct Event<T> {
    message: T,
    delivery: Delivery,
}

impl<T> Event<T> {
    /// Wraps a decoded message and its delivery.
    pub fn new(message: T, delivery: Delivery) -> Self {
        Event { message, delivery }
    }

    /// The decoded event.
    pub fn message(&self) -> &T {
        &self.message
    }

    /// Takes the decoded event.
    pub fn into_message(self) -> T {
        self.message
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.delivery.topic
    }

    /// A header (`Micro-Id`, `Micro-From-Service`, `traceparent`, …).
    pub fn header(&self, key: &str) -> Option<&str> {
        self.delivery.message.headers.get(key).map(String::as_str)
    }

    /// 1 for the first delivery, more for redeliveries.
    pub fn attempt(&self) -> u32 {
        self.delivery.attempt
    }

    /// Acknowledges (with manual ack).
    pub fn ack(&self) {
        self.delivery.ack();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_the_wrong_codec() {
        let event = prost_types::Duration {
            seconds: 5,
            nanos: 0,
        };
        let message = encode_proto(&event);
        assert_eq!(message.headers[CONTENT_TYPE], PROTOBUF);
        assert_eq!(
            decode_proto::<prost_types::Duration>(&message).unwrap(),
            event
        );
        let json = encode_json(&serde_json::json!({"id": 1})).unwrap();
        let err = decode_proto::<prost_types::Duration>(&json).unwrap_err();
        assert!(err.detail.contains("application/json"), "{err}");
        let garbled = Message::new(vec![0xff, 0xff, 0xff]).header(CONTENT_TYPE, PROTOBUF);
        assert!(decode_proto::<prost_types::Duration>(&garbled).is_err());
        let err = decode_json::<serde_json::Value>(&Message::new("{oops")).unwrap_err();
        assert!(err.detail.contains("malformed JSON"), "{err}");
    }

    #[test]
    fn stamps_standard_headers() {
        let message = stamp(Message::new("x"), "user.created", Some("users"));
        assert_eq!(message.headers[TOPIC], "user.created");
        assert_eq!(message.headers[FROM_SERVICE], "users");
        assert_eq!(message.headers[MESSAGE_ID].len(), 36);
        assert!(message.headers[TIMESTAMP].ends_with('Z'));
        let epoch = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_787_000_000_123);
        assert_eq!(rfc3339(epoch), "2026-08-17T20:53:20.123Z");
    }

    #[test]
    fn timestamps_are_civil_utc_dates() {
        let at = |ms: u64| rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        // A leap day, the last millisecond of a century year, and a non-leap 2100.
        assert_eq!(at(1_709_164_800_007), "2024-02-29T00:00:00.007Z");
        assert_eq!(at(978_307_199_999), "2000-12-31T23:59:59.999Z");
        assert_eq!(at(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        // Before the epoch reads as the epoch; past year 9999 stays four digits.
        let before = std::time::UNIX_EPOCH - std::time::Duration::from_secs(5);
        assert_eq!(rfc3339(before), "1970-01-01T00:00:00.000Z");
        assert!(at(300_000_000_000_000).starts_with("9999-"));
    }
}
