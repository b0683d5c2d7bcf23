//! The in-process broker: for tests and single-process apps. Nothing is persisted;
//! a message published while a topic has no subscriber is dropped.

use super::{
    Broker, BrokerError, Delivery, Handler, Message, Outcome, SubscribeOptions, Subscriber,
    dead_letter_topic, process, redelivery_delay,
};
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use tokio::sync::mpsc;

struct Sub {
    id: u64,
    queue: Option<String>,
    tx: mpsc::UnboundedSender<Delivery>,
}

#[derive(Default)]
struct State {
    topics: HashMap<String, Vec<Sub>>,
    next_id: u64,
    turn: HashMap<(String, String), usize>,
}

/// An in-process [`Broker`] with the same semantics as the others: fan-out, queue
/// groups (round-robin), redelivery on handler error with backoff, dead letters
/// after `max_deliveries`, per-subscriber concurrency.
#[derive(Clone, Default)]
pub struct MemoryBroker {
    state: Arc<Mutex<State>>,
}

impl MemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
        crate::sync::lock(state)
    }

    /// Hands `delivery` to every plain subscriber and one member of each group.
    fn dispatch(state: &Mutex<State>, topic: &str, message: &Message) {
        let mut state = Self::lock(state);
        let State { topics, turn, .. } = &mut *state;
        let Some(subs) = topics.get(topic) else {
            return;
        };
        let mut groups: HashMap<&str, Vec<&Sub>> = HashMap::new();
        for sub in subs {
            match &sub.queue {
                None => {
                    let _ = sub.tx.send(Delivery::new(topic, message.clone(), 1));
                }
                Some(queue) => groups.entry(queue.as_str()).or_default().push(sub),
            }
        }
        for (queue, members) in groups {
            let next = turn
                .entry((topic.to_owned(), queue.to_owned()))
                .or_insert(0);
            let member = members[*next % members.len()];
            *next = next.wrapping_add(1);
            let _ = member.tx.send(Delivery::new(topic, message.clone(), 1));
        }
    }
}

impl Broker for MemoryBroker {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn connect(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async { Ok(()) })
    }

    fn disconnect(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        let state = self.state.clone();
        Box::pin(async move {
            Self::lock(&state).topics.clear();
            Ok(())
        })
    }

    fn publish(&self, topic: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        Self::dispatch(&self.state, topic, &message);
        Box::pin(async { Ok(()) })
    }

    fn subscribe(
        &self,
        topic: &str,
        handler: Handler,
        options: SubscribeOptions,
    ) -> BoxFuture<'_, Result<Subscriber, BrokerError>> {
        let topic = topic.to_owned();
        let state = self.state.clone();
        Box::pin(async move {
            let (tx, rx) = mpsc::unbounded_channel();
            let id = {
                let mut guard = Self::lock(&state);
                guard.next_id += 1;
                let id = guard.next_id;
                guard.topics.entry(topic.clone()).or_default().push(Sub {
                    id,
                    queue: options.queue.clone(),
                    tx: tx.clone(),
                });
                id
            };
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            let mut workers = Vec::new();
            for _ in 0..options.concurrency.max(1) {
                workers.push(tokio::spawn(work(
                    rx.clone(),
                    tx.downgrade(),
                    Arc::downgrade(&state),
                    handler.clone(),
                    options.clone(),
                )));
            }
            drop(tx);
            let stop_topic = topic.clone();
            Ok(Subscriber::new(topic, options, move || async move {
                if let Some(subs) = Self::lock(&state).topics.get_mut(&stop_topic) {
                    subs.retain(|s| s.id != id);
                }
                for worker in workers {
                    let _ = worker.await;
                }
            }))
        })
    }
}

/// One worker of a subscription: handles deliveries until the subscription ends.
async fn work(
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Delivery>>>,
    requeue: mpsc::WeakUnboundedSender<Delivery>,
    state: Weak<Mutex<State>>,
    handler: Handler,
    options: SubscribeOptions,
) {
    loop {
        let delivery = rx.lock().await.recv().await;
        let Some(delivery) = delivery else { return };
        let (topic, message, attempt) = (
            delivery.topic.clone(),
            delivery.message.clone(),
            delivery.attempt,
        );
        match process(&handler, delivery, &options).await {
            Outcome::Ack => {}
            Outcome::Retry(_) => {
                let Some(requeue) = requeue.upgrade() else {
                    continue;
                };
                tokio::spawn(async move {
                    tokio::time::sleep(redelivery_delay(attempt)).await;
                    let _ = requeue.send(Delivery::new(topic, message, attempt + 1));
                });
            }
            Outcome::DeadLetter(dead) => {
                if let Some(state) = state.upgrade() {
                    MemoryBroker::dispatch(&state, &dead_letter_topic(&topic), &dead);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::handler;
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    async fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn counter() -> (Arc<AtomicUsize>, Handler) {
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let h = handler(move |_d| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        });
        (count, h)
    }

    #[tokio::test]
    async fn memory_broker_conforms() {
        let broker = MemoryBroker::new();
        super::super::testing::fan_out_and_queue_group(&broker, "").await;
        super::super::testing::redelivery_then_dead_letter(&broker, "").await;
        super::super::testing::malformed_payload_is_dead_lettered(&broker, "").await;
    }

    #[tokio::test]
    async fn nothing_arrives_after_unsubscribe() {
        let broker = MemoryBroker::new();
        let (count, h) = counter();
        let sub = broker
            .subscribe("t", h, SubscribeOptions::default())
            .await
            .unwrap();
        broker.publish("t", Message::new("a")).await.unwrap();
        wait_until("delivered", || count.load(Ordering::SeqCst) == 1).await;
        sub.unsubscribe().await;
        broker.publish("t", Message::new("late")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }
}
