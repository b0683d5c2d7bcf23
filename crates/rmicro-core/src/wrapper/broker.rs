//! Wrappers around the broker: one around every subscription's handler
//! (`wrap_subscriber`), one around every publish (`wrap_publisher`).
//!
//! The service applies them inside the broker it hands out
//! ([`crate::Service::broker`], and the client's `publish`), so they hold for every
//! backend and every way of publishing or subscribing through the service. The
//! first registered is the outermost. A subscriber wrapper runs once per delivery
//! (a redelivery runs it again, with [`Delivery::attempt`] counting up); its error
//! is the handler's error (the message is redelivered, then dead-lettered), and a
//! panic in it counts as a failed delivery, as a panicking handler does.

use crate::broker::{
    Broker, BrokerError, Delivery, Handler, Message, SharedBroker, SubscribeOptions, Subscriber,
};
use futures_util::future::BoxFuture;
use std::future::Future;
use std::sync::Arc;

/// Wraps every subscription's handler; see [`subscriber_fn`] for one that is a
/// function, or implement it for a type that keeps state across deliveries.
pub trait SubscriberWrapper: Send + Sync + 'static {
    /// The handler to run in place of `next` (which it normally calls).
    fn wrap(&self, next: Handler) -> Handler;
}

impl<F> SubscriberWrapper for F
where
    F: Fn(Handler) -> Handler + Send + Sync + 'static,
{
    fn wrap(&self, next: Handler) -> Handler {
        self(next)
    }
}

/// The publish step a [`PublisherWrapper`] wraps: topic and message in, the
/// backend's confirmation out.
pub type Publisher =
    Arc<dyn Fn(String, Message) -> BoxFuture<'static, Result<(), BrokerError>> + Send + Sync>;

/// Wraps every publish through the service's broker; see [`publisher_fn`].
pub trait PublisherWrapper: Send + Sync + 'static {
    /// The publish step to run in place of `next` (which it normally calls).
    fn wrap(&self, next: Publisher) -> Publisher;
}

impl<F> PublisherWrapper for F
where
    F: Fn(Publisher) -> Publisher + Send + Sync + 'static,
{
    fn wrap(&self, next: Publisher) -> Publisher {
        self(next)
    }
}

/// A subscriber wrapper that is an async function of the delivery and the next
/// handler.
///
/// ```
/// # extern crate rmicro_core as rmicro;
/// use rmicro::wrapper::subscriber_fn;
/// let log = subscriber_fn(|delivery, next| async move {
///     let topic = delivery.topic.clone();
///     let result = next(delivery).await;
///     tracing::info!(%topic, ok = result.is_ok(), "handled");
///     result
/// });
/// let service = rmicro::Service::builder("audit")
///     .args(["audit"])
///     .wrap_subscriber(log)
///     .build()
///     .expect("valid flags");
/// # let _ = service;
/// ```
pub fn subscriber_fn<F, Fut>(f: F) -> impl SubscriberWrapper
where
    F: Fn(Delivery, Handler) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), crate::Error>> + Send + 'static,
{
    let f = Arc::new(f);
    move |next: Handler| -> Handler {
        let f = f.clone();
        Arc::new(move |delivery| Box::pin(f(delivery, next.clone())))
    }
}

/// A publisher wrapper that is an async function of the topic, the message and the
/// next publish step — to add a header, count, or refuse.
///
/// ```
/// # extern crate rmicro_core as rmicro;
/// use rmicro::wrapper::publisher_fn;
/// let tag = publisher_fn(|topic, message, next| async move {
///     next(topic, message.header("X-Region", "eu-west")).await
/// });
/// let service = rmicro::Service::builder("orders")
///     .args(["orders"])
///     .wrap_publisher(tag)
///     .build()
///     .expect("valid flags");
/// # let _ = service;
/// ```
pub fn publisher_fn<F, Fut>(f: F) -> impl PublisherWrapper
where
    F: Fn(String, Message, Publisher) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BrokerError>> + Send + 'static,
{
    let f = Arc::new(f);
    move |next: Publisher| -> Publisher {
        let f = f.clone();
        Arc::new(move |topic, message| Box::pin(f(topic, message, next.clone())))
    }
}

/// A broker whose publishes and subscriptions go through wrappers, first
/// registered outermost; everything else passes to the broker inside.
pub(crate) struct WrappedBroker {
    inner: SharedBroker,
    subscribers: Arc<[Arc<dyn SubscriberWrapper>]>,
    publish: Publisher,
}

impl WrappedBroker {
    /// `inner` behind `subscribers` and `publishers`; `inner` itself when there are
    /// none, so an unwrapped service pays nothing.
    pub(crate) fn wrap(
        inner: SharedBroker,
        subscribers: Vec<Arc<dyn SubscriberWrapper>>,
        publishers: Vec<Arc<dyn PublisherWrapper>>,
    ) -> SharedBroker {
        if subscribers.is_empty() && publishers.is_empty() {
            return inner;
        }
        let base = inner.clone();
        let innermost: Publisher = Arc::new(move |topic, message| {
            let broker = base.clone();
            Box::pin(async move { broker.publish(&topic, message).await })
        });
        let publish = publishers
            .iter()
            .rev()
            .fold(innermost, |next, wrapper| wrapper.wrap(next));
        Arc::new(WrappedBroker {
            inner,
            subscribers: subscribers.into(),
            publish,
        })
    }
}

impl Broker for WrappedBroker {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn connect(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.inner.connect()
    }

    fn disconnect(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.inner.disconnect()
    }

    fn publish(&self, topic: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        (self.publish)(topic.to_owned(), message)
    }

    fn subscribe(
        &self,
        topic: &str,
        handler: Handler,
        options: SubscribeOptions,
    ) -> BoxFuture<'_, Result<Subscriber, BrokerError>> {
        let handler = self
            .subscribers
            .iter()
            .rev()
            .fold(handler, |next, wrapper| wrapper.wrap(next));
        self.inner.subscribe(topic, handler, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{MemoryBroker, handler};
    use std::sync::Mutex;
    use std::time::Duration;

    type Log = Arc<Mutex<Vec<String>>>;

    fn noting(log: &Log, name: &'static str) -> Arc<dyn SubscriberWrapper> {
        let log = log.clone();
        Arc::new(subscriber_fn(move |delivery, next| {
            let log = log.clone();
            async move {
                log.lock().expect("test log").push(format!("{name} in"));
                let result = next(delivery).await;
                log.lock().expect("test log").push(format!("{name} out"));
                result
            }
        }))
    }

    async fn wait_for(log: &Log, len: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let seen = log.lock().expect("test log").clone();
            if seen.len() >= len || tokio::time::Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn first_registered_is_outermost_on_both_sides() {
        let log: Log = Arc::default();
        let tag = |name: &'static str| -> Arc<dyn PublisherWrapper> {
            Arc::new(publisher_fn(move |topic, message: Message, next| {
                let seen = message.headers.get("X-Order").cloned().unwrap_or_default();
                next(topic, message.header("X-Order", format!("{seen}{name}")))
            }))
        };
        let broker = WrappedBroker::wrap(
            Arc::new(MemoryBroker::new()),
            vec![noting(&log, "outer"), noting(&log, "inner")],
            vec![tag("a"), tag("b")],
        );
        assert_eq!(broker.describe(), "memory");
        let seen = log.clone();
        let h = handler(move |delivery: Delivery| {
            let seen = seen.clone();
            async move {
                let order = delivery.message.headers.get("X-Order").cloned();
                seen.lock()
                    .expect("test log")
                    .push(format!("handler {}", order.unwrap_or_default()));
                Ok(())
            }
        });
        let sub = broker
            .subscribe("t", h, SubscribeOptions::default())
            .await
            .expect("subscribe");
        broker
            .publish("t", Message::new("x"))
            .await
            .expect("publish");
        let seen = wait_for(&log, 5).await;
        assert_eq!(
            seen,
            [
                "outer in",
                "inner in",
                "handler ab",
                "inner out",
                "outer out"
            ]
        );
        sub.unsubscribe().await;
    }

    #[tokio::test]
    async fn a_publisher_wrapper_can_refuse() {
        let refuse: Arc<dyn PublisherWrapper> = Arc::new(publisher_fn(
            |topic: String, message, next: Publisher| async move {
                if topic == "secret" {
                    return Err(BrokerError::BadName {
                        broker: "memory".into(),
                        what: "topic",
                        name: topic,
                        detail: "not allowed here".into(),
                    });
                }
                next(topic, message).await
            },
        ));
        let broker = WrappedBroker::wrap(Arc::new(MemoryBroker::new()), vec![], vec![refuse]);
        let log: Log = Arc::default();
        let mut subs = Vec::new();
        for topic in ["secret", "open"] {
            let seen = log.clone();
            let h = handler(move |delivery: Delivery| {
                let seen = seen.clone();
                async move {
                    seen.lock().expect("test log").push(delivery.topic);
                    Ok(())
                }
            });
            let options = SubscribeOptions::default();
            subs.push(
                broker
                    .subscribe(topic, h, options)
                    .await
                    .expect("subscribe"),
            );
        }
        let err = broker
            .publish("secret", Message::new("x"))
            .await
            .expect_err("refused");
        assert!(err.to_string().contains("not allowed here"), "{err}");
        broker
            .publish("open", Message::new("y"))
            .await
            .expect("publish");
        assert_eq!(wait_for(&log, 1).await, ["open"]);
        for sub in subs {
            sub.unsubscribe().await;
        }
    }
}
