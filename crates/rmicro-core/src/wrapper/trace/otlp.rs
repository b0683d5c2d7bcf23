//! OTLP trace export: finished spans encoded straight into an
//! `ExportTraceServiceRequest` (opentelemetry-proto's `trace.proto` and
//! `trace_service.proto`, field numbers as published) and sent over gRPC
//! (`TraceService/Export`) or HTTP/protobuf (`POST /v1/traces`).
//!
//! Encoding writes the protobuf bytes from the spans as they are, with no
//! intermediate message structs: each message's length is computed, then its
//! fields written, so a batch costs one buffer.

use super::Protocol;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{Array, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;
use std::time::{SystemTime, UNIX_EPOCH};

// Wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag_len(field: u32) -> usize {
    varint_len(u64::from(field << 3))
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(out, u64::from((field << 3) | wire));
}

/// A length-delimited field of `n` bytes, with its tag and length.
fn delimited_len(field: u32, n: usize) -> usize {
    tag_len(field) + varint_len(n as u64) + n
}

fn put_delimited_head(out: &mut Vec<u8>, field: u32, n: usize) {
    put_tag(out, field, LEN);
    put_varint(out, n as u64);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_delimited_head(out, field, bytes.len());
    out.extend_from_slice(bytes);
}

/// A string field, left out when empty (proto3's default).
fn string_len(field: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        delimited_len(field, s.len())
    }
}

fn put_string(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        put_bytes(out, field, s.as_bytes());
    }
}

fn put_uint(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        put_tag(out, field, VARINT);
        put_varint(out, v);
    }
}

fn put_fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    put_tag(out, field, FIXED64);
    out.extend_from_slice(&v.to_le_bytes());
}

/// A length-delimited field whose body `body` writes, in one pass: one byte is
/// kept for the length (most messages here are shorter than 128 bytes) and the
/// body moved along in the rare case its length needs more. The bytes are the
/// canonical encoding, as if the length had been known first.
fn put_message(out: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    put_tag(out, field, LEN);
    let at = out.len();
    out.push(0);
    body(out);
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
        return;
    }
    let width = varint_len(len as u64);
    out.resize(out.len() + width - 1, 0);
    out.copy_within(at + 1..at + 1 + len, at + width);
    let mut v = len as u64;
    for byte in &mut out[at..at + width] {
        *byte = (v as u8 & 0x7f) | if v >= 0x80 { 0x80 } else { 0 };
        v >>= 7;
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

// AnyValue { string_value = 1; bool_value = 2; int_value = 3; double_value = 4;
// array_value = 5 (ArrayValue { repeated AnyValue values = 1 }) }

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Bool(b) => {
            put_tag(out, 2, VARINT);
            out.push(u8::from(*b));
        }
        Value::I64(i) => {
            put_tag(out, 3, VARINT);
            put_varint(out, *i as u64);
        }
        Value::F64(f) => {
            put_tag(out, 4, FIXED64);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::String(s) => put_bytes(out, 1, s.as_str().as_bytes()),
        Value::Array(array) => put_message(out, 5, |out| {
            let item = |out: &mut Vec<u8>, value: Value| {
                put_message(out, 1, |out| put_value(out, &value));
            };
            match array {
                Array::Bool(v) => v.iter().for_each(|b| item(out, Value::Bool(*b))),
                Array::I64(v) => v.iter().for_each(|i| item(out, Value::I64(*i))),
                Array::F64(v) => v.iter().for_each(|f| item(out, Value::F64(*f))),
                Array::String(v) => v.iter().for_each(|s| {
                    put_message(out, 1, |out| put_bytes(out, 1, s.as_str().as_bytes()));
                }),
                _ => {}
            }
        }),
        _ => {}
    }
}

// KeyValue { string key = 1; AnyValue value = 2 }

fn put_kvs<'a>(out: &mut Vec<u8>, field: u32, kvs: impl Iterator<Item = (&'a str, &'a Value)>) {
    for (key, value) in kvs {
        put_message(out, field, |out| {
            put_string(out, 1, key);
            put_message(out, 2, |out| put_value(out, value));
        });
    }
}

fn pairs(kvs: &[KeyValue]) -> impl Iterator<Item = (&str, &Value)> + Clone {
    kvs.iter().map(|kv| (kv.key.as_str(), &kv.value))
}

/// Span attributes encoded as they are set (`Span.attributes` fields, ready to be
/// copied into the span's message), so a span keeps one buffer and not a value
/// per attribute. rmicro's own attributes are written straight from their parts.
#[derive(Debug, Default)]
pub(crate) struct Attributes {
    bytes: Vec<u8>,
    count: usize,
}

impl Attributes {
    /// Room for `bytes` bytes of attributes.
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        Attributes {
            bytes: Vec::with_capacity(bytes),
            count: 0,
        }
    }

    /// How many attributes are set.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Starts an attribute: its `KeyValue`'s head and key, and the head of an
    /// `AnyValue` of `value` bytes, which the caller writes next.
    fn start(&mut self, key: &str, value: usize) {
        self.count += 1;
        let out = &mut self.bytes;
        let kv = delimited_len(1, key.len()) + delimited_len(2, value);
        out.reserve(delimited_len(9, kv) - value);
        if kv < 0x80 {
            // Every length is one byte: the heads are fixed runs of bytes.
            out.extend_from_slice(&[
                9 << 3 | LEN as u8,
                kv as u8,
                1 << 3 | LEN as u8,
                key.len() as u8,
            ]);
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(&[2 << 3 | LEN as u8, value as u8]);
        } else {
            put_delimited_head(out, 9, kv);
            put_bytes(out, 1, key.as_bytes());
            put_delimited_head(out, 2, value);
        }
    }

    /// A string attribute whose value is `parts` one after another.
    pub(crate) fn str(&mut self, key: &str, parts: &[&str]) {
        let text: usize = parts.iter().map(|p| p.len()).sum();
        // AnyValue { string_value = 1 }.
        self.start(key, delimited_len(1, text));
        let out = &mut self.bytes;
        out.reserve(delimited_len(1, text));
        put_delimited_head(out, 1, text);
        for part in parts {
            out.extend_from_slice(part.as_bytes());
        }
    }

    /// An integer attribute.
    pub(crate) fn int(&mut self, key: &str, v: i64) {
        // AnyValue { int_value = 3 }.
        self.start(key, tag_len(3) + varint_len(v as u64));
        put_tag(&mut self.bytes, 3, VARINT);
        put_varint(&mut self.bytes, v as u64);
    }

    /// Any attribute.
    pub(crate) fn push(&mut self, kv: &KeyValue) {
        match &kv.value {
            Value::I64(v) => self.int(kv.key.as_str(), *v),
            Value::String(s) => self.str(kv.key.as_str(), &[s.as_str()]),
            _ => {
                put_kvs(&mut self.bytes, 9, pairs(std::slice::from_ref(kv)));
                self.count += 1;
            }
        }
    }

    /// Every attribute of `kvs`.
    pub(crate) fn extend(&mut self, kvs: impl IntoIterator<Item = KeyValue>) {
        for kv in kvs {
            self.push(&kv);
        }
    }
}

/// A span's attributes: values (the SDK's spans) or already encoded (rmicro's).
pub(crate) enum AttributesView<'a> {
    Values(&'a [KeyValue]),
    Encoded(&'a Attributes),
}

// Span { trace_id = 1; span_id = 2; trace_state = 3; parent_span_id = 4; name = 5;
// kind = 6; start = 7 (fixed64); end = 8 (fixed64); attributes = 9;
// dropped_attributes_count = 10; events = 11; dropped_events_count = 12;
// links = 13; dropped_links_count = 14; status = 15; flags = 16 (fixed32) }

fn kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// Status { string message = 2; StatusCode code = 3 }.
fn status_parts(status: &Status) -> (&str, u64) {
    match status {
        Status::Unset => ("", 0),
        Status::Ok => ("", 1),
        Status::Error { description } => (description.as_ref(), 2),
    }
}

/// A finished span's fields as OTLP encodes them: borrowed from the SDK's
/// [`SpanData`] (the application's own spans) or from rmicro's call spans.
pub(crate) struct SpanView<'a> {
    pub(crate) context: &'a opentelemetry::trace::SpanContext,
    /// The parent's id and whether it is remote; `None` for a root span.
    pub(crate) parent: Option<(opentelemetry::trace::SpanId, bool)>,
    pub(crate) name: &'a str,
    pub(crate) kind: &'a SpanKind,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    pub(crate) attributes: AttributesView<'a>,
    pub(crate) dropped_attributes: u32,
    pub(crate) events: &'a [opentelemetry::trace::Event],
    pub(crate) dropped_events: u32,
    pub(crate) links: &'a [opentelemetry::trace::Link],
    pub(crate) dropped_links: u32,
    pub(crate) status: &'a Status,
}

impl<'a> From<&'a SpanData> for SpanView<'a> {
    fn from(span: &'a SpanData) -> Self {
        let parent = (span.parent_span_id != opentelemetry::trace::SpanId::INVALID)
            .then_some((span.parent_span_id, span.parent_span_is_remote));
        SpanView {
            context: &span.span_context,
            parent,
            name: &span.name,
            kind: &span.span_kind,
            start: span.start_time,
            end: span.end_time,
            attributes: AttributesView::Values(&span.attributes),
            dropped_attributes: span.dropped_attributes_count,
            events: &span.events.events,
            dropped_events: span.events.dropped_count,
            links: &span.links.links,
            dropped_links: span.links.dropped_count,
            status: &span.status,
        }
    }
}

/// W3C flags in the low byte, plus "whether the parent is remote" is known (0x100)
/// and its answer (0x200).
fn span_flags(span: &SpanView<'_>) -> u32 {
    let mut flags = u32::from(span.context.trace_flags().to_u8()) | 0x100;
    if span.parent.is_some_and(|(_, remote)| remote) {
        flags |= 0x200;
    }
    flags
}

/// A link's flags: the linked span's W3C flags, and whether it is remote (known).
fn link_flags(sc: &opentelemetry::trace::SpanContext) -> u32 {
    u32::from(sc.trace_flags().to_u8()) | 0x100 | if sc.is_remote() { 0x200 } else { 0 }
}

/// A trace state's header, not made at all when it is empty (nearly always).
fn state_header(state: &opentelemetry::trace::TraceState) -> std::borrow::Cow<'static, str> {
    if *state == opentelemetry::trace::TraceState::NONE {
        std::borrow::Cow::Borrowed("")
    } else {
        std::borrow::Cow::Owned(state.header())
    }
}

/// Appends `span` to `out` as a `ScopeSpans.spans` field (tag, length, message).
pub(crate) fn put_span(out: &mut Vec<u8>, span: &SpanView<'_>) {
    put_message(out, 2, |out| {
        let sc = span.context;
        put_bytes(out, 1, &sc.trace_id().to_bytes());
        put_bytes(out, 2, &sc.span_id().to_bytes());
        put_string(out, 3, &state_header(sc.trace_state()));
        if let Some((parent, _)) = span.parent {
            put_bytes(out, 4, &parent.to_bytes());
        }
        put_string(out, 5, span.name);
        put_uint(out, 6, kind(span.kind));
        put_fixed64(out, 7, nanos(span.start));
        put_fixed64(out, 8, nanos(span.end));
        match &span.attributes {
            AttributesView::Values(kvs) => put_kvs(out, 9, pairs(kvs)),
            AttributesView::Encoded(encoded) => out.extend_from_slice(&encoded.bytes),
        }
        put_uint(out, 10, u64::from(span.dropped_attributes));
        for event in span.events {
            put_message(out, 11, |out| {
                put_fixed64(out, 1, nanos(event.timestamp));
                put_string(out, 2, &event.name);
                put_kvs(out, 3, pairs(&event.attributes));
                put_uint(out, 4, u64::from(event.dropped_attributes_count));
            });
        }
        put_uint(out, 12, u64::from(span.dropped_events));
        for link in span.links {
            let sc = &link.span_context;
            put_message(out, 13, |out| {
                put_bytes(out, 1, &sc.trace_id().to_bytes());
                put_bytes(out, 2, &sc.span_id().to_bytes());
                put_string(out, 3, &state_header(sc.trace_state()));
                put_kvs(out, 4, pairs(&link.attributes));
                put_uint(out, 5, u64::from(link.dropped_attributes_count));
                put_tag(out, 6, FIXED32);
                out.extend_from_slice(&link_flags(sc).to_le_bytes());
            });
        }
        put_uint(out, 14, u64::from(span.dropped_links));
        let (message, code) = status_parts(span.status);
        if code != 0 || !message.is_empty() {
            put_message(out, 15, |out| {
                put_string(out, 2, message);
                put_uint(out, 3, code);
            });
        }
        put_tag(out, 16, FIXED32);
        out.extend_from_slice(&span_flags(span).to_le_bytes());
    });
}

/// An `InstrumentationScope` message's body { name = 1; version = 2; attributes = 3 }.
pub(crate) fn scope_body(scope: &opentelemetry::InstrumentationScope) -> Vec<u8> {
    let mut out = Vec::new();
    put_string(&mut out, 1, scope.name());
    put_string(&mut out, 2, scope.version().unwrap_or(""));
    put_kvs(
        &mut out,
        3,
        scope.attributes().map(|kv| (kv.key.as_str(), &kv.value)),
    );
    out
}

/// A `Resource` message's body { attributes = 1 }, and its schema URL.
pub(crate) fn resource_body(resource: &Resource) -> (Vec<u8>, String) {
    let mut out = Vec::new();
    put_kvs(&mut out, 1, resource.iter().map(|(k, v)| (k.as_str(), v)));
    (out, resource.schema_url().unwrap_or("").to_owned())
}

/// One scope's encoded spans for a request: its `InstrumentationScope` body, its
/// schema URL and the spans as `ScopeSpans.spans` fields, one after another.
pub(crate) struct ScopeSpans<'a> {
    pub(crate) scope: &'a [u8],
    pub(crate) schema_url: &'a str,
    pub(crate) spans: &'a [u8],
}

/// `ExportTraceServiceRequest` { resource_spans = 1: ResourceSpans { resource = 1:
/// Resource, scope_spans = 2: ScopeSpans { scope = 1, spans = 2, schema_url = 3 },
/// schema_url = 3 } } around spans already encoded ([`put_span`]), one resource.
pub(crate) fn request(
    resource: &[u8],
    resource_schema: &str,
    scopes: &[ScopeSpans<'_>],
    out: &mut Vec<u8>,
) {
    let scope_len = |s: &ScopeSpans<'_>| {
        delimited_len(1, s.scope.len()) + s.spans.len() + string_len(3, s.schema_url)
    };
    let resource_spans_len = delimited_len(1, resource.len())
        + scopes
            .iter()
            .map(|s| delimited_len(2, scope_len(s)))
            .sum::<usize>()
        + string_len(3, resource_schema);
    out.reserve(delimited_len(1, resource_spans_len));
    put_delimited_head(out, 1, resource_spans_len);
    put_bytes(out, 1, resource);
    for s in scopes {
        put_delimited_head(out, 2, scope_len(s));
        put_bytes(out, 1, s.scope);
        out.extend_from_slice(s.spans);
        put_string(out, 3, s.schema_url);
    }
    put_string(out, 3, resource_schema);
}

/// The gRPC method spans are exported to.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// Sends encoded batches to an OTLP collector.
#[derive(Debug)]
pub(crate) struct OtlpExporter {
    protocol: Protocol,
    uri: http::Uri,
    headers: http::HeaderMap,
    client: HttpClient,
}

impl OtlpExporter {
    /// An exporter to `endpoint` (for HTTP the full `/v1/traces` URL) with the
    /// extra `headers` (`OTEL_EXPORTER_OTLP_HEADERS`); an endpoint that is not an
    /// `http://` URL is an error, as a sentence.
    pub(crate) fn new(
        protocol: Protocol,
        endpoint: &str,
        headers: http::HeaderMap,
    ) -> Result<Self, String> {
        let base: http::Uri = endpoint
            .parse()
            .map_err(|e| format!("tracing endpoint `{endpoint}` is not a URL: {e}"))?;
        if base.scheme_str() != Some("http") {
            return Err(format!(
                "tracing endpoint `{endpoint}`: only http:// collectors are supported (TLS to the collector is not yet)"
            ));
        }
        let uri = match protocol {
            Protocol::Grpc => format!("{}{EXPORT_PATH}", endpoint.trim_end_matches('/'))
                .parse()
                .map_err(|e| format!("tracing endpoint `{endpoint}`: {e}"))?,
            Protocol::HttpProtobuf => base,
        };
        let executor = hyper_util::rt::TokioExecutor::new();
        let mut builder = hyper_util::client::legacy::Client::builder(executor);
        if protocol == Protocol::Grpc {
            builder.http2_only(true);
        }
        Ok(OtlpExporter {
            protocol,
            uri,
            headers,
            client: builder.build_http(),
        })
    }

    async fn send(&self, payload: Vec<u8>) -> Result<(), String> {
        let (body, content_type) = match self.protocol {
            Protocol::Grpc => {
                let mut framed = Vec::with_capacity(payload.len() + 5);
                framed.push(0);
                framed.extend_from_slice(
                    &u32::try_from(payload.len())
                        .unwrap_or(u32::MAX)
                        .to_be_bytes(),
                );
                framed.extend_from_slice(&payload);
                (framed, "application/grpc")
            }
            Protocol::HttpProtobuf => (payload, "application/x-protobuf"),
        };
        let mut request = http::Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.extend(self.headers.clone());
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        if self.protocol == Protocol::Grpc {
            headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        }
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("cannot reach the collector at {}: {e}", self.uri))?;
        let (head, body) = response.into_parts();
        let collected = body
            .collect()
            .await
            .map_err(|e| format!("the collector's answer broke off: {e}"))?;
        if !head.status.is_success() {
            let text = collected.to_bytes();
            let text = String::from_utf8_lossy(&text[..text.len().min(200)]).into_owned();
            return Err(format!(
                "the collector answered HTTP {}: {text}",
                head.status
            ));
        }
        if self.protocol == Protocol::Grpc {
            let trailers = collected.trailers().cloned().unwrap_or_default();
            let status = trailers
                .get("grpc-status")
                .or_else(|| head.headers.get("grpc-status"))
                .map(|v| v.to_str().unwrap_or("?").to_owned())
                .unwrap_or_else(|| "missing".into());
            if status != "0" {
                let message = trailers
                    .get("grpc-message")
                    .or_else(|| head.headers.get("grpc-message"))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                return Err(format!(
                    "the collector answered grpc-status {status}: {message}"
                ));
            }
        }
        Ok(())
    }
}

impl super::export::Collector for OtlpExporter {
    async fn export(&self, request: Vec<u8>) -> Result<(), String> {
        self.send(request).await
    }
}

/// `OTEL_EXPORTER_OTLP_HEADERS`'s `key=value,key2=value2` (values percent-encoded).
pub(crate) fn parse_headers(list: &str) -> Result<http::HeaderMap, String> {
    let mut headers = http::HeaderMap::new();
    for pair in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("OTEL_EXPORTER_OTLP_HEADERS: `{pair}` is not key=value"))?;
        let value = percent_encoding::percent_decode_str(value.trim()).decode_utf8_lossy();
        let name = http::HeaderName::from_bytes(key.trim().to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("OTEL_EXPORTER_OTLP_HEADERS: `{key}` is not a header name"))?;
        let value = http::HeaderValue::from_str(&value).map_err(|_| {
            format!("OTEL_EXPORTER_OTLP_HEADERS: the value of `{key}` is not a header value")
        })?;
        headers.append(name, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_as_long_as_protobuf_says() {
        for (v, n) in [
            (0u64, 1),
            (1, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u64::MAX, 10),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), n, "{v}");
            assert_eq!(varint_len(v), n, "{v}");
        }
        assert_eq!(tag_len(15), 1);
        assert_eq!(tag_len(16), 2);
    }

    /// A span with every kind of field, decoded by opentelemetry-proto's types.
    #[test]
    fn a_batch_decodes_with_opentelemetrys_own_types() {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
        use prost::Message as _;
        let state = TraceState::from_key_value([("vendor", "x")]).unwrap();
        let context = SpanContext::new(
            TraceId::from(0x0102_u128 << 64 | 0x0304),
            SpanId::from(0x0a0b_u64),
            TraceFlags::SAMPLED,
            false,
            state,
        );
        let linked = SpanContext::new(
            TraceId::from(7_u128),
            SpanId::from(8_u64),
            TraceFlags::default(),
            true,
            TraceState::default(),
        );
        let start = UNIX_EPOCH + std::time::Duration::from_nanos(1_700_000_000_123_456_789);
        let span = SpanData {
            span_context: context,
            parent_span_id: SpanId::from(0x0c0d_u64),
            parent_span_is_remote: true,
            span_kind: SpanKind::Consumer,
            name: "process orders".into(),
            start_time: start,
            end_time: start + std::time::Duration::from_micros(250),
            attributes: vec![
                KeyValue::new("s", "text"),
                KeyValue::new("i", -42_i64),
                KeyValue::new("f", 1.5),
                KeyValue::new("b", true),
                KeyValue::new(
                    "a",
                    Value::Array(Array::String(vec!["x".into(), "y".into()])),
                ),
                KeyValue::new("n", Value::Array(Array::I64(vec![1, 300]))),
                // Lengths of two and three bytes (the whole span's too).
                KeyValue::new("medium", "m".repeat(200)),
                KeyValue::new("long", "l".repeat(20_000)),
            ],
            dropped_attributes_count: 2,
            events: opentelemetry_sdk::trace::SpanEvents::default(),
            links: opentelemetry_sdk::trace::SpanLinks::default(),
            status: Status::error("it broke"),
            instrumentation_scope: opentelemetry::InstrumentationScope::builder("rmicro")
                .with_version("0.1.0")
                .build(),
        };
        let mut span = span;
        span.events.events.push(opentelemetry::trace::Event::new(
            "attempt",
            start,
            vec![KeyValue::new("rpc.attempt", 2_i64)],
            0,
        ));
        span.links.links.push(opentelemetry::trace::Link::new(
            linked,
            vec![KeyValue::new("k", "v")],
            0,
        ));
        let resource = Resource::builder_empty()
            .with_attributes([KeyValue::new("service.name", "orders")])
            .build();
        let mut spans = Vec::new();
        put_span(&mut spans, &SpanView::from(&span));
        put_span(&mut spans, &SpanView::from(&span));
        let (resource, schema) = resource_body(&resource);
        let scope = scope_body(&span.instrumentation_scope);
        let mut out = Vec::new();
        request(
            &resource,
            &schema,
            &[ScopeSpans {
                scope: &scope,
                schema_url: "",
                spans: &spans,
            }],
            &mut out,
        );
        let decoded = ExportTraceServiceRequest::decode(out.as_slice()).expect("valid OTLP");
        let rs = &decoded.resource_spans[0];
        let resource = rs.resource.as_ref().unwrap();
        assert_eq!(resource.attributes[0].key, "service.name");
        assert_eq!(rs.scope_spans.len(), 1, "one scope, both spans in it");
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().unwrap().name, "rmicro");
        assert_eq!(ss.scope.as_ref().unwrap().version, "0.1.0");
        assert_eq!(ss.spans.len(), 2);
        let s = &ss.spans[0];
        assert_eq!(s.trace_id, (0x0102_u128 << 64 | 0x0304).to_be_bytes());
        assert_eq!(s.span_id, 0x0a0b_u64.to_be_bytes());
        assert_eq!(s.parent_span_id, 0x0c0d_u64.to_be_bytes());
        assert_eq!(s.trace_state, "vendor=x");
        assert_eq!(s.name, "process orders");
        assert_eq!(s.kind, 5);
        assert_eq!(s.start_time_unix_nano, 1_700_000_000_123_456_789);
        assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 250_000);
        assert_eq!(s.dropped_attributes_count, 2);
        assert_eq!(s.flags, 0x301, "sampled, parent known remote");
        let value = |key: &str| {
            s.attributes
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| v.value.clone())
        };
        assert_eq!(value("s"), Some(Any::StringValue("text".into())));
        assert_eq!(value("i"), Some(Any::IntValue(-42)));
        assert_eq!(value("f"), Some(Any::DoubleValue(1.5)));
        assert_eq!(value("b"), Some(Any::BoolValue(true)));
        let Some(Any::ArrayValue(array)) = value("a") else {
            panic!("an array")
        };
        assert_eq!(array.values.len(), 2);
        assert_eq!(array.values[1].value, Some(Any::StringValue("y".into())));
        let Some(Any::ArrayValue(numbers)) = value("n") else {
            panic!("an array")
        };
        assert_eq!(numbers.values[1].value, Some(Any::IntValue(300)));
        assert_eq!(s.events[0].name, "attempt");
        assert_eq!(s.events[0].time_unix_nano, 1_700_000_000_123_456_789);
        assert_eq!(s.events[0].attributes[0].key, "rpc.attempt");
        assert_eq!(s.links[0].trace_id, 7_u128.to_be_bytes());
        assert_eq!(s.links[0].attributes[0].key, "k");
        assert_eq!(s.links[0].flags, 0x300, "not sampled, remote");
        let status = s.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "it broke"));
        // Re-encoded by prost, the same bytes: lengths and field order agree.
        assert_eq!(decoded.encode_to_vec(), out);
    }

    /// Attributes written from their parts are the bytes the general encoder
    /// writes for the same values, on the short path and the long.
    #[test]
    fn attributes_from_parts_encode_as_values_do() {
        let long = "v".repeat(20_000);
        let texts = ["", "grpc", &"m".repeat(100), &"m".repeat(130), &long];
        let mut fast = Attributes::default();
        let mut kvs = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let key = if i % 2 == 0 { "rpc.service" } else { "k" };
            let (head, tail) = text.split_at(text.len() / 2);
            fast.str(key, &[head, tail]);
            kvs.push(KeyValue::new(key, text.to_string()));
        }
        for v in [0_i64, 1, -1, 300, i64::MAX, i64::MIN] {
            fast.int("client.port", v);
            kvs.push(KeyValue::new("client.port", v));
        }
        for kv in [
            KeyValue::new("b", true),
            KeyValue::new("f", 2.5),
            KeyValue::new("s", "x"),
        ] {
            fast.push(&kv);
            kvs.push(kv);
        }
        let mut general = Vec::new();
        put_kvs(&mut general, 9, pairs(&kvs));
        assert_eq!(fast.bytes, general);
        assert_eq!(fast.len(), kvs.len());
    }

    #[test]
    fn headers_parse_and_bad_ones_are_named() {
        let headers = parse_headers("api-key=abc%20def, X-Tenant = acme").unwrap();
        assert_eq!(headers["api-key"], "abc def");
        assert_eq!(headers["x-tenant"], "acme");
        let err = parse_headers("novalue").unwrap_err();
        assert!(err.contains("`novalue`"), "{err}");
    }
}
