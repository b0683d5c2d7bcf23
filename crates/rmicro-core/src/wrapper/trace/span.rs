//! rmicro's own spans: the SERVER, CLIENT, PRODUCER and CONSUMER spans of calls
//! and messages. They are OpenTelemetry spans (`opentelemetry::trace::Span`: a
//! handler adds events and attributes to its span as to any other), recorded
//! into one plain struct and encoded to OTLP by the thread that ends them. The
//! application's own spans are the SDK's, from [`Tracing::provider`]; both are
//! exported together.
//!
//! [`Tracing::provider`]: super::Tracing::provider

use super::export::Spool;
use super::otlp::{Attributes, AttributesView, SpanView};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Event, Link, SpanContext, SpanId, SpanKind, Status};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

/// Attributes, events, links and attributes per event a span keeps at most (the
/// SDK's defaults, `OTEL_SPAN_*_COUNT_LIMIT`); more are counted as dropped.
const LIMIT: usize = 128;

/// Keeps the first [`LIMIT`] of `attributes`; says how many it dropped.
fn capped(attributes: &mut Vec<KeyValue>) -> u32 {
    let dropped = attributes.len().saturating_sub(LIMIT);
    attributes.truncate(LIMIT);
    u32::try_from(dropped).unwrap_or(u32::MAX)
}

/// Adds `item` to `list` unless it holds [`LIMIT`] already (then counts it in
/// `dropped`) or the span has `ended` (then ignores it).
fn bounded<T>(ended: bool, list: &mut Vec<T>, dropped: &mut u32, item: impl FnOnce() -> T) {
    if ended {
        return;
    }
    if list.len() >= LIMIT {
        *dropped = dropped.saturating_add(1);
        return;
    }
    list.push(item());
}

/// A span rmicro makes; see the module's documentation.
#[derive(Debug)]
pub(crate) struct RecordedSpan {
    /// Where the span goes when it ends (under the spool's own scope).
    spool: Arc<Spool>,
    context: SpanContext,
    /// The parent's id and whether it is remote; `None` for a root span.
    parent: Option<(SpanId, bool)>,
    name: Cow<'static, str>,
    kind: SpanKind,
    start: SystemTime,
    attributes: Attributes,
    dropped_attributes: u32,
    events: Vec<Event>,
    dropped_events: u32,
    links: Vec<Link>,
    dropped_links: u32,
    status: Status,
    ended: bool,
}

impl RecordedSpan {
    /// A span started now, recording until it ends; exported when `context` is
    /// sampled.
    pub(crate) fn start(
        spool: Arc<Spool>,
        context: SpanContext,
        parent: Option<(SpanId, bool)>,
        name: Cow<'static, str>,
        kind: SpanKind,
        attributes: Attributes,
    ) -> Self {
        RecordedSpan {
            spool,
            context,
            parent,
            name,
            kind,
            start: opentelemetry::time::now(),
            attributes,
            dropped_attributes: 0,
            events: Vec::new(),
            dropped_events: 0,
            links: Vec::new(),
            dropped_links: 0,
            status: Status::Unset,
            ended: false,
        }
    }
}

impl opentelemetry::trace::Span for RecordedSpan {
    fn add_event_with_timestamp<T>(
        &mut self,
        name: T,
        timestamp: SystemTime,
        mut attributes: Vec<KeyValue>,
    ) where
        T: Into<Cow<'static, str>>,
    {
        bounded(
            self.ended,
            &mut self.events,
            &mut self.dropped_events,
            || {
                let dropped = capped(&mut attributes);
                Event::new(name, timestamp, attributes, dropped)
            },
        );
    }

    fn span_context(&self) -> &SpanContext {
        &self.context
    }

    fn is_recording(&self) -> bool {
        !self.ended
    }

    fn set_attribute(&mut self, attribute: KeyValue) {
        if self.ended {
            return;
        }
        if self.attributes.len() >= LIMIT {
            self.dropped_attributes = self.dropped_attributes.saturating_add(1);
            return;
        }
        self.attributes.push(&attribute);
    }

    fn set_attributes(&mut self, attributes: impl IntoIterator<Item = KeyValue>) {
        for attribute in attributes {
            self.set_attribute(attribute);
        }
    }

    fn set_status(&mut self, status: Status) {
        // Ok > Error > Unset: a status only ever moves up, as the SDK's.
        if !self.ended && status > self.status {
            self.status = status;
        }
    }

    fn update_name<T>(&mut self, new_name: T)
    where
        T: Into<Cow<'static, str>>,
    {
        if !self.ended {
            self.name = new_name.into();
        }
    }

    fn add_link(&mut self, span_context: SpanContext, mut attributes: Vec<KeyValue>) {
        bounded(self.ended, &mut self.links, &mut self.dropped_links, || {
            let dropped = capped(&mut attributes);
            Link::new(span_context, attributes, dropped)
        });
    }

    fn end_with_timestamp(&mut self, timestamp: SystemTime) {
        if std::mem::replace(&mut self.ended, true) || !self.context.is_sampled() {
            return;
        }
        let view = SpanView {
            context: &self.context,
            parent: self.parent,
            name: &self.name,
            kind: &self.kind,
            start: self.start,
            end: timestamp,
            attributes: AttributesView::Encoded(&self.attributes),
            dropped_attributes: self.dropped_attributes,
            events: &self.events,
            dropped_events: self.dropped_events,
            links: &self.links,
            dropped_links: self.dropped_links,
            status: &self.status,
        };
        self.spool.push(None, &view);
    }
}

impl Drop for RecordedSpan {
    /// A span dropped unended ends now, as the SDK's do.
    fn drop(&mut self) {
        use opentelemetry::trace::Span as _;
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::InstrumentationScope;
    use opentelemetry::trace::{Span as _, TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;

    fn recorder(max_queue: usize) -> (Arc<Spool>, Arc<super::super::ExportStats>) {
        let scope = InstrumentationScope::builder("rmicro")
            .with_version("1.2.3")
            .build();
        Spool::for_tests(&scope, max_queue)
    }

    fn context(span: u64, flags: TraceFlags) -> SpanContext {
        let state = TraceState::from_key_value([("vendor", "x")]).unwrap();
        SpanContext::new(
            TraceId::from(0xabc_u128),
            SpanId::from(span),
            flags,
            false,
            state,
        )
    }

    fn span(recorder: &Arc<Spool>, id: u64, flags: TraceFlags) -> RecordedSpan {
        RecordedSpan::start(
            recorder.clone(),
            context(id, flags),
            Some((SpanId::from(7_u64), true)),
            "greeter.v1.Greeter/SayHello".into(),
            SpanKind::Server,
            {
                let mut attributes = Attributes::default();
                attributes.str("rpc.system", &["gr", "pc"]);
                attributes
            },
        )
    }

    /// Everything a span records reaches OTLP, decoded by opentelemetry-proto.
    #[test]
    fn a_recorded_span_is_encoded_with_all_it_recorded() {
        let (recorder, stats) = recorder(16);
        let mut s = span(&recorder, 9, TraceFlags::SAMPLED);
        s.set_attribute(KeyValue::new("rpc.grpc.status_code", 0_i64));
        s.add_event("attempt", vec![KeyValue::new("rpc.attempt", 1_i64)]);
        s.add_link(
            context(3, TraceFlags::default()),
            vec![KeyValue::new("k", "v")],
        );
        s.set_status(Status::error("broke"));
        s.update_name("renamed");
        s.end();
        // Ended: nothing more is taken, and it is not sent twice.
        s.set_attribute(KeyValue::new("late", true));
        s.end();
        drop(s);
        let request = recorder.take_decoded();
        let scope_spans = &request.resource_spans[0].scope_spans[0];
        let scope = scope_spans.scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("rmicro", "1.2.3")
        );
        assert_eq!(scope_spans.spans.len(), 1);
        let got = &scope_spans.spans[0];
        assert_eq!(got.trace_id, 0xabc_u128.to_be_bytes());
        assert_eq!(got.span_id, 9_u64.to_be_bytes());
        assert_eq!(got.parent_span_id, 7_u64.to_be_bytes());
        assert_eq!(got.trace_state, "vendor=x");
        assert_eq!(got.name, "renamed");
        assert_eq!(got.kind, 2, "SERVER");
        assert_eq!(got.flags, 0x301, "sampled, parent known remote");
        assert!(got.end_time_unix_nano >= got.start_time_unix_nano);
        assert!(got.start_time_unix_nano > 1_700_000_000_000_000_000);
        let keys: Vec<&str> = got.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["rpc.system", "rpc.grpc.status_code"]);
        assert_eq!(
            got.attributes[0]
                .value
                .as_ref()
                .and_then(|v| v.value.clone()),
            Some(Any::StringValue("grpc".into()))
        );
        assert_eq!(got.events[0].name, "attempt");
        assert_eq!(got.events[0].attributes[0].key, "rpc.attempt");
        assert_eq!(got.links[0].span_id, 3_u64.to_be_bytes());
        assert_eq!(got.links[0].attributes[0].key, "k");
        let status = got.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "broke"));
        assert_eq!(stats.dropped(), 0);
    }

    #[test]
    fn limits_count_what_they_drop_and_status_only_moves_up() {
        let (recorder, _) = recorder(16);
        let mut s = span(&recorder, 1, TraceFlags::SAMPLED);
        for i in 0..LIMIT + 1 {
            s.set_attribute(KeyValue::new("n", i as i64));
            s.add_event("e", Vec::new());
            s.add_link(context(2, TraceFlags::SAMPLED), Vec::new());
        }
        s.add_event(
            "wide",
            (0..LIMIT + 3)
                .map(|i| KeyValue::new("a", i as i64))
                .collect(),
        );
        s.set_status(Status::Ok);
        s.set_status(Status::error("later"));
        s.set_status(Status::Unset);
        drop(s); // an unended span ends when dropped
        let request = recorder.take_decoded();
        let got = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(got.attributes.len(), LIMIT);
        // One attribute came with the span, so two of the LIMIT + 1 set were dropped.
        assert_eq!(got.dropped_attributes_count, 2);
        assert_eq!(got.events.len(), LIMIT);
        assert_eq!(got.dropped_events_count, 2);
        assert_eq!(got.links.len(), LIMIT);
        assert_eq!(got.dropped_links_count, 1);
        assert_eq!(got.status.as_ref().map(|s| s.code), Some(1), "OK stays");
    }

    #[test]
    fn unsampled_spans_are_not_sent_and_a_full_queue_drops_and_counts() {
        let (recorder, stats) = recorder(2);
        span(&recorder, 1, TraceFlags::default()).end();
        for id in 2..6 {
            span(&recorder, id, TraceFlags::SAMPLED).end();
        }
        assert_eq!(stats.dropped(), 2, "two fit, two were dropped");
        let request = recorder.take_decoded();
        let ids: Vec<Vec<u8>> = request.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.span_id.clone())
            .collect();
        assert_eq!(
            ids,
            [2_u64.to_be_bytes().to_vec(), 3_u64.to_be_bytes().to_vec()]
        );
        // Taken, the queue has room again.
        span(&recorder, 6, TraceFlags::SAMPLED).end();
        assert_eq!(stats.dropped(), 2);
    }
}
