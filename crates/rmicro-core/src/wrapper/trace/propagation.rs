//! Carrying a trace across processes: W3C Trace Context and Baggage, and Jaeger's
//! `uber-trace-id` / `uberctx-*`, in gRPC metadata and broker message headers.
//!
//! Extraction tries Jaeger's header first and W3C's after it, so a caller that sends
//! both is read by its `traceparent`; a header that does not parse is ignored (the
//! call starts a new trace). Injection writes every format, so a go-micro service
//! using jaeger-client and an OpenTelemetry one both join the trace.

use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use std::collections::BTreeMap;

/// Jaeger's trace header: `{trace-id}:{span-id}:{parent-span-id}:{flags}` in hex.
pub const UBER_TRACE_ID: &str = "uber-trace-id";

/// The prefix of Jaeger's baggage headers (`uberctx-{key}: {value}`).
pub const UBERCTX_PREFIX: &str = "uberctx-";

/// The most baggage entries read from Jaeger headers (W3C's limit is 180).
const MAX_UBERCTX: usize = 64;

/// Jaeger's propagation format, as jaeger-client (and go-micro's opentracing
/// wrapper on it) writes and reads it.
#[derive(Debug)]
pub struct JaegerPropagator {
    fields: [String; 1],
}

impl Default for JaegerPropagator {
    fn default() -> Self {
        JaegerPropagator {
            fields: [UBER_TRACE_ID.to_owned()],
        }
    }
}

impl JaegerPropagator {
    /// The span context in `value`, if it is a valid `uber-trace-id`.
    pub fn parse(value: &str) -> Option<SpanContext> {
        // Some clients URL-encode the colons.
        let decoded;
        let value = if value.contains("%3A") || value.contains("%3a") {
            decoded = value.replace("%3A", ":").replace("%3a", ":");
            decoded.as_str()
        } else {
            value
        };
        let mut parts = value.split(':');
        let (Some(trace), Some(span), Some(_parent), Some(flags), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let hex = |s: &str, max: usize| {
            !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_hexdigit())
        };
        if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
            return None;
        }
        let trace_id = TraceId::from(u128::from_str_radix(trace, 16).ok()?);
        let span_id = SpanId::from(u64::from_str_radix(span, 16).ok()?);
        let flags = u8::from_str_radix(flags, 16).ok()?;
        if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
            return None;
        }
        // Bit 1 is "sampled"; bit 2 ("debug") also means sampled.
        let sampled = flags & 0x03 != 0;
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        Some(SpanContext::new(
            trace_id,
            span_id,
            flags,
            true,
            TraceState::default(),
        ))
    }
}

impl TextMapPropagator for JaegerPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if sc.is_valid() {
            let flags = if sc.is_sampled() { 1 } else { 0 };
            injector.set(
                UBER_TRACE_ID,
                format!("{}:{}:0:{flags}", sc.trace_id(), sc.span_id()),
            );
        }
        for (key, (value, _)) in cx.baggage().iter() {
            injector.set(&format!("{UBERCTX_PREFIX}{key}"), value.to_string());
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let mut cx = match extractor.get(UBER_TRACE_ID).and_then(Self::parse) {
            Some(sc) => cx.with_remote_span_context(sc),
            None => cx.clone(),
        };
        let baggage: Vec<KeyValue> = extractor
            .keys()
            .into_iter()
            .filter_map(|key| {
                let name = key.strip_prefix(UBERCTX_PREFIX)?;
                let value = extractor.get(key)?;
                (!name.is_empty()).then(|| KeyValue::new(name.to_owned(), value.to_owned()))
            })
            .take(MAX_UBERCTX)
            .collect();
        if !baggage.is_empty() {
            let mut all: Vec<KeyValue> = cx
                .baggage()
                .iter()
                .map(|(k, (v, _))| KeyValue::new(k.clone(), v.clone()))
                .collect();
            all.extend(baggage);
            cx = cx.with_baggage(all);
        }
        cx
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

/// Which formats a service reads and writes (`OTEL_PROPAGATORS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Formats {
    /// W3C `traceparent` / `tracestate`.
    pub trace_context: bool,
    /// W3C `baggage`.
    pub baggage: bool,
    /// Jaeger's `uber-trace-id` / `uberctx-*`.
    pub jaeger: bool,
}

impl Default for Formats {
    fn default() -> Self {
        Formats {
            trace_context: true,
            baggage: true,
            jaeger: true,
        }
    }
}

impl Formats {
    /// Reads `OTEL_PROPAGATORS`'s syntax (`tracecontext,baggage,jaeger`; `none`);
    /// names it does not know are an error naming them.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut formats = Formats {
            trace_context: false,
            baggage: false,
            jaeger: false,
        };
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "tracecontext" => formats.trace_context = true,
                "baggage" => formats.baggage = true,
                "jaeger" => formats.jaeger = true,
                "none" => {}
                other => {
                    return Err(format!(
                        "unknown propagator `{other}` (known: tracecontext, baggage, jaeger, none)"
                    ));
                }
            }
        }
        Ok(formats)
    }

    /// The propagator for these formats; Jaeger's is read first so W3C's wins.
    pub fn propagator(self) -> TextMapCompositePropagator {
        let mut all: Vec<Box<dyn TextMapPropagator + Send + Sync>> = Vec::new();
        if self.jaeger {
            all.push(Box::new(JaegerPropagator::default()));
        }
        if self.trace_context {
            all.push(Box::new(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            ));
        }
        if self.baggage {
            all.push(Box::new(
                opentelemetry_sdk::propagation::BaggagePropagator::new(),
            ));
        }
        TextMapCompositePropagator::new(all)
    }
}

/// The default formats' propagator, shared.
#[cfg(test)]
pub(crate) static DEFAULT: std::sync::LazyLock<TextMapCompositePropagator> =
    std::sync::LazyLock::new(|| Formats::default().propagator());

/// Whether `headers` hold any propagation header at all (a cheap check first: most
/// calls from outside carry none).
pub(crate) fn carries_trace(headers: &http::HeaderMap) -> bool {
    // One pass over the few headers a call has, no hashing.
    headers.keys().any(|k| {
        let k = k.as_str();
        matches!(k, "traceparent" | "baggage" | UBER_TRACE_ID) || k.starts_with(UBERCTX_PREFIX)
    })
}

/// gRPC metadata (HTTP/2 headers) as a carrier.
pub struct HeaderCarrier<'a>(pub &'a mut http::HeaderMap);

impl Injector for HeaderCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(mut value)) = (
            http::HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            // A new trace context every call: never indexed (see `is_per_call`).
            if crate::metadata::is_per_call(name.as_str()) {
                value.set_sensitive(true);
            }
            self.0.insert(name, value);
        }
    }
}

/// Read-only gRPC metadata as a carrier.
pub struct HeaderReader<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Broker message headers as a carrier (keys lower case, as in HTTP).
pub struct MessageCarrier<'a>(pub &'a mut BTreeMap<String, String>);

impl Injector for MessageCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_ascii_lowercase(), value);
    }
}

/// Read-only broker message headers as a carrier; keys match without case.
pub struct MessageReader<'a>(pub &'a BTreeMap<String, String>);

impl Extractor for MessageReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).or_else(|| {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
        })
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn extract(pairs: &[(&str, &str)]) -> Context {
        DEFAULT.extract(&HeaderReader(&headers(pairs)))
    }

    #[test]
    fn a_jaeger_header_is_read_with_its_baggage() {
        let cx = extract(&[
            (
                "uber-trace-id",
                "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
            ),
            ("uberctx-tenant", "acme"),
        ]);
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(
            cx.baggage().get("tenant").map(|v| v.to_string()),
            Some("acme".into())
        );
    }

    #[test]
    fn short_ids_and_encoded_colons_are_jaeger_too() {
        let sc = JaegerPropagator::parse("abc%3A12%3A0%3A0").expect("valid");
        assert_eq!(sc.trace_id().to_string(), format!("{:032x}", 0xabc));
        assert_eq!(sc.span_id().to_string(), format!("{:016x}", 0x12));
        assert!(!sc.is_sampled());
    }

    #[test]
    fn malformed_headers_are_ignored_not_errors() {
        for bad in [
            "",
            "zz:12:0:1",
            "1:2:3",
            "1:2:3:4:5",
            "0:12:0:1",
            "12:0:0:1",
            "123456789012345678901234567890123:1:0:1",
        ] {
            assert!(JaegerPropagator::parse(bad).is_none(), "{bad:?}");
        }
        let cx = extract(&[("traceparent", "garbage"), ("uber-trace-id", "nope")]);
        assert!(!cx.span().span_context().is_valid());
    }

    #[test]
    fn traceparent_wins_over_uber_trace_id() {
        let cx = extract(&[
            ("uber-trace-id", "1111:2222:0:1"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ]);
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn every_format_is_written_and_read_back() {
        let sc = SpanContext::new(
            TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128),
            SpanId::from(0x00f0_67aa_0ba9_02b7_u64),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let cx = Context::new()
            .with_remote_span_context(sc.clone())
            .with_baggage([KeyValue::new("tenant", "acme")]);
        let mut map = http::HeaderMap::new();
        DEFAULT.inject_context(&cx, &mut HeaderCarrier(&mut map));
        assert_eq!(
            map["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(
            map["uber-trace-id"],
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1"
        );
        assert_eq!(map["uberctx-tenant"], "acme");
        assert_eq!(map["baggage"], "tenant=acme");
        // And through a broker message's headers.
        let mut message = BTreeMap::new();
        DEFAULT.inject_context(&cx, &mut MessageCarrier(&mut message));
        let back = DEFAULT.extract(&MessageReader(&message));
        assert_eq!(back.span().span_context().trace_id(), sc.trace_id());
        assert_eq!(back.span().span_context().span_id(), sc.span_id());
    }

    #[test]
    fn unknown_propagator_names_are_refused_by_name() {
        assert_eq!(
            Formats::parse("tracecontext, jaeger").unwrap(),
            Formats {
                trace_context: true,
                baggage: false,
                jaeger: true
            }
        );
        let err = Formats::parse("b3").unwrap_err();
        assert!(err.contains("`b3`"), "{err}");
    }
}
