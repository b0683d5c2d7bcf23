//! PRODUCER spans around publishes and CONSUMER spans around deliveries.

use super::Tracer;
use super::conventions as attr;
use super::layer::{CurrentTrace, current_parent};
use super::propagation::{MessageCarrier, MessageReader};
use crate::broker::{Delivery, Handler, MESSAGE_ID};
use crate::wrapper::Publisher;
use crate::wrapper::{PublisherWrapper, SubscriberWrapper};
use opentelemetry::context::FutureExt as _;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use std::sync::Arc;

fn attributes(tracer: &Tracer, topic: &str, operation: &'static str) -> Vec<KeyValue> {
    vec![
        KeyValue::new(attr::MESSAGING_SYSTEM, tracer.messaging_system.clone()),
        KeyValue::new(attr::MESSAGING_DESTINATION_NAME, topic.to_owned()),
        KeyValue::new(attr::MESSAGING_OPERATION_TYPE, operation),
        KeyValue::new(attr::MESSAGING_OPERATION_NAME, operation),
    ]
}

fn header<'a>(
    headers: &'a std::collections::BTreeMap<String, String>,
    name: &str,
) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Ends `cx`'s span with the result of the operation.
fn end<E: std::fmt::Display>(cx: &Context, result: &Result<(), E>) {
    let span = cx.span();
    if let Err(err) = result {
        span.set_status(Status::error(err.to_string()));
    }
    span.end();
}

pub(super) fn publisher(tracer: Arc<Tracer>) -> impl PublisherWrapper {
    move |next: Publisher| -> Publisher {
        let tracer = tracer.clone();
        Arc::new(move |topic: String, mut message: crate::broker::Message| {
            let parent = current_parent();
            let (cx, _) = tracer.start(
                format!("publish {topic}"),
                SpanKind::Producer,
                &parent,
                |a| {
                    let mut attributes = attributes(&tracer, &topic, "publish");
                    attributes.push(KeyValue::new(
                        attr::MESSAGING_MESSAGE_BODY_SIZE,
                        message.body.len() as i64,
                    ));
                    if let Some(id) = header(&message.headers, MESSAGE_ID) {
                        attributes.push(KeyValue::new(attr::MESSAGING_MESSAGE_ID, id.to_owned()));
                    }
                    a.extend(attributes);
                },
            );
            tracer
                .propagator
                .inject_context(&cx, &mut MessageCarrier(&mut message.headers));
            let sent = next(topic, message);
            Box::pin(async move {
                let result = sent.await;
                end(&cx, &result);
                result
            })
        })
    }
}

pub(super) fn subscriber(tracer: Arc<Tracer>) -> impl SubscriberWrapper {
    move |next: Handler| -> Handler {
        let tracer = tracer.clone();
        Arc::new(move |delivery: Delivery| {
            let parent = tracer
                .propagator
                .extract(&MessageReader(&delivery.message.headers));
            let (cx, _) = tracer.start(
                format!("process {}", delivery.topic),
                SpanKind::Consumer,
                &parent,
                |a| {
                    let mut attributes = attributes(&tracer, &delivery.topic, "process");
                    attributes.push(KeyValue::new(
                        attr::MESSAGING_MESSAGE_BODY_SIZE,
                        delivery.message.body.len() as i64,
                    ));
                    attributes.push(KeyValue::new(
                        attr::MICRO_DELIVERY_ATTEMPT,
                        i64::from(delivery.attempt),
                    ));
                    if let Some(id) = header(&delivery.message.headers, MESSAGE_ID) {
                        attributes.push(KeyValue::new(attr::MESSAGING_MESSAGE_ID, id.to_owned()));
                    }
                    a.extend(attributes);
                },
            );
            // The handler's calls and publishes are the delivery's children.
            let ctx = Arc::new(
                crate::Context::new("", delivery.topic.clone())
                    .with_extension(CurrentTrace(cx.clone())),
            );
            let handled = crate::Context::scope(ctx, next(delivery)).with_context(cx.clone());
            Box::pin(async move {
                let result = handled.await;
                end(&cx, &result);
                result
            })
        })
    }
}
