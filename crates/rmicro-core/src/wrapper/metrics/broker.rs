//! The broker's figures per topic: publishes, deliveries handled, redeliveries and
//! dead letters.

use crate::broker::{Delivery, Handler, Message};
use crate::wrapper::{Publisher, PublisherWrapper, SubscriberWrapper};
use prometheus::{IntCounterVec, Opts, Registry};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Distinct topics before the rest count as `other`.
const MAX_TOPICS: usize = 1000;

/// The broker families of one service.
pub(super) struct Families {
    identity: [String; 3],
    published: IntCounterVec,
    consumed: IntCounterVec,
    redelivered: IntCounterVec,
    dead_lettered: IntCounterVec,
    topics: Mutex<HashSet<String>>,
}

impl Families {
    pub(super) fn new(
        registry: &Registry,
        identity: [String; 3],
    ) -> Result<Self, prometheus::Error> {
        let base = ["micro_name", "micro_version", "micro_id", "micro_topic"];
        let with_status = [
            "micro_name",
            "micro_version",
            "micro_id",
            "micro_topic",
            "micro_status",
        ];
        let family =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let family = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(family.clone()))?;
                Ok(family)
            };
        Ok(Families {
            published: family(
                "micro_broker_published_total",
                "Messages published, by topic and whether the broker took them.",
                &with_status,
            )?,
            consumed: family(
                "micro_broker_consumed_total",
                "Deliveries handled, by topic and whether the handler succeeded.",
                &with_status,
            )?,
            redelivered: family(
                "micro_broker_redelivered_total",
                "Deliveries that were redeliveries (attempt 2 and later), by topic.",
                &base,
            )?,
            dead_lettered: family(
                "micro_broker_dead_lettered_total",
                "Messages whose last allowed delivery failed, sent to `<topic>.dlq`.",
                &base,
            )?,
            identity,
            topics: Mutex::new(HashSet::new()),
        })
    }

    /// The label values for `topic`, `other` past the bound.
    fn labels(&self, topic: &str) -> Vec<String> {
        let mut topics = crate::sync::lock(&self.topics);
        let known = topics.contains(topic)
            || (topics.len() < MAX_TOPICS && topics.insert(topic.to_owned()));
        let topic = if known { topic } else { "other" };
        let mut labels = self.identity.to_vec();
        labels.push(topic.to_owned());
        labels
    }

    fn count(family: &IntCounterVec, labels: &[String], extra: Option<&str>) {
        let mut values: Vec<&str> = labels.iter().map(String::as_str).collect();
        values.extend(extra);
        family.with_label_values(&values).inc();
    }
}

fn status(ok: bool) -> &'static str {
    if ok { "success" } else { "failure" }
}

/// Counts publishes (`wrap_publisher`).
pub(super) fn publisher(families: Arc<Families>) -> impl PublisherWrapper {
    move |next: Publisher| -> Publisher {
        let families = families.clone();
        Arc::new(move |topic: String, message: Message| {
            let labels = families.labels(&topic);
            let sent = next(topic, message);
            let families = families.clone();
            Box::pin(async move {
                let result = sent.await;
                Families::count(&families.published, &labels, Some(status(result.is_ok())));
                result
            })
        })
    }
}

/// Counts deliveries, redeliveries and dead letters (`wrap_subscriber`).
pub(super) fn subscriber(families: Arc<Families>) -> impl SubscriberWrapper {
    move |next: Handler| -> Handler {
        let families = families.clone();
        Arc::new(move |delivery: Delivery| {
            let labels = families.labels(&delivery.topic);
            if delivery.attempt > 1 {
                Families::count(&families.redelivered, &labels, None);
            }
            let last = delivery.is_last();
            let handled = next(delivery);
            let families = families.clone();
            Box::pin(async move {
                let result = handled.await;
                Families::count(&families.consumed, &labels, Some(status(result.is_ok())));
                if result.is_err() && last {
                    Families::count(&families.dead_lettered, &labels, None);
                }
                result
            })
        })
    }
}
