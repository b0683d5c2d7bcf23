//! Call metadata: the key/value pairs that travel with a request as HTTP/2 headers.
//!
//! Handlers read the caller's metadata from [`crate::Request::metadata`]; callers set
//! outgoing metadata per call with `.metadata(key, value)`. Keys are lower-case ASCII;
//! keys ending in `-bin` carry binary values (base64 on the wire, as gRPC specifies).
//! Protocol headers (`content-type`, `te`, `grpc-*`, `:authority`, …) are not metadata.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// Metadata of one call: gRPC custom headers (go-micro's `metadata.Metadata`).
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    headers: HeaderMap,
}

/// Whether a header's value is new on every call (a request id, a trace
/// context): HPACK would add each one to the connection's table, pushing out the
/// headers that do repeat, so such values are sent as never indexed.
pub(crate) fn is_per_call(name: &str) -> bool {
    per_call_name(name).is_some()
}

/// The header name of a per-call key (see [`is_per_call`]), made without an
/// allocation: such a key is set on every call, and a name parsed from text
/// would be copied and then shared (another allocation) each time.
fn per_call_name(name: &str) -> Option<HeaderName> {
    Some(HeaderName::from_static(match name {
        "x-request-id" => "x-request-id",
        "traceparent" => "traceparent",
        "tracestate" => "tracestate",
        "uber-trace-id" => "uber-trace-id",
        "baggage" => "baggage",
        _ => return None,
    }))
}

/// Whether a header (lower-case) belongs to the gRPC protocol, never to the
/// application: such a key cannot be call metadata.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with("grpc-")
        || matches!(
            name,
            "content-type" | "te" | "user-agent" | "content-length" | "host" | "connection"
        )
}

impl Metadata {
    /// An empty set of metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wraps the headers of an incoming request.
    pub(crate) fn from_headers(headers: HeaderMap) -> Self {
        Metadata { headers }
    }

    /// The text value of `key`, if present and valid UTF-8.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.headers.get(key).and_then(|v| v.to_str().ok())
    }

    /// The decoded bytes of a binary key (`*-bin`).
    pub fn get_bin(&self, key: &str) -> Option<Vec<u8>> {
        decode_bin(self.headers.get(key)?.as_bytes())
    }

    /// Sets `key` to a text value. Fails if the key or value cannot be an HTTP/2 header.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), InvalidMetadata> {
        let (name, per_call) = match per_call_name(key) {
            Some(name) => (name, true),
            // `from_bytes` lower-cases what it copies.
            None => (
                HeaderName::from_bytes(key.as_bytes())
                    .map_err(|_| InvalidMetadata::Key(key.to_owned()))?,
                false,
            ),
        };
        if is_reserved(name.as_str()) {
            return Err(InvalidMetadata::Reserved(key.to_owned()));
        }
        let mut value =
            HeaderValue::from_str(value).map_err(|_| InvalidMetadata::Value(key.to_owned()))?;
        // A per-call key in capitals (`X-Request-Id`) is still one.
        if per_call || is_per_call(name.as_str()) {
            value.set_sensitive(true);
        }
        self.headers.insert(name, value);
        Ok(())
    }

    /// Iterates over the application's key/value pairs (text values only).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().filter_map(|(k, v)| {
            let key = k.as_str();
            if is_reserved(key) {
                return None;
            }
            Some((key, v.to_str().ok()?))
        })
    }

    /// Number of application keys.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there is no application metadata.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies every application key into outgoing request headers.
    pub(crate) fn write_to(&self, headers: &mut HeaderMap) {
        for (k, v) in &self.headers {
            if !is_reserved(k.as_str()) {
                headers.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Decodes a binary header value (base64, padded or not, as gRPC allows).
pub(crate) fn decode_bin(raw: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(
            raw.strip_suffix(b"==")
                .or(raw.strip_suffix(b"="))
                .unwrap_or(raw),
        )
        .ok()
}

/// A metadata key or value that cannot travel as an HTTP/2 header.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum InvalidMetadata {
    /// The key has characters HTTP/2 header names may not have.
    #[error(
        "metadata key `{0}` is not a valid header name: use lower-case ASCII letters, digits, `-`, `_` and `.`"
    )]
    Key(String),
    /// The key is a protocol header.
    #[error("metadata key `{0}` is reserved for the gRPC protocol; pick another name")]
    Reserved(String),
    /// The value has characters HTTP/2 header values may not have.
    #[error(
        "metadata value for `{0}` is not a valid header value: use printable ASCII, or a `-bin` key for bytes"
    )]
    Value(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_new_on_every_call_are_never_indexed() {
        let mut md = Metadata::new();
        md.insert("X-Request-Id", "5b0c6e").unwrap();
        md.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .unwrap();
        md.insert("x-user", "ann").unwrap();
        let mut headers = HeaderMap::new();
        md.write_to(&mut headers);
        assert!(headers["x-request-id"].is_sensitive());
        assert!(headers["traceparent"].is_sensitive());
        // Values that repeat stay indexable: HPACK sends them as one byte later.
        assert!(!headers["x-user"].is_sensitive());
    }

    #[test]
    fn hides_protocol_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-timeout", HeaderValue::from_static("1S"));
        headers.insert("x-user", HeaderValue::from_static("ann"));
        let md = Metadata::from_headers(headers);
        assert_eq!(md.iter().collect::<Vec<_>>(), vec![("x-user", "ann")]);
        assert_eq!(md.get("x-user"), Some("ann"));
    }

    #[test]
    fn refuses_reserved_and_invalid_keys() {
        let mut md = Metadata::new();
        assert!(matches!(
            md.insert("grpc-status", "0"),
            Err(InvalidMetadata::Reserved(_))
        ));
        assert!(matches!(
            md.insert("bad key", "v"),
            Err(InvalidMetadata::Key(_))
        ));
        assert!(matches!(
            md.insert("k", "line\nbreak"),
            Err(InvalidMetadata::Value(_))
        ));
        md.insert("X-Trace", "abc").unwrap();
        assert_eq!(md.get("x-trace"), Some("abc"));
    }
}
