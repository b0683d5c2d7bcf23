//! A conformance suite every [`Broker`] runs in its tests, so the in-process broker
//! and the adapter crates deliver alike. Each check uses topics under `prefix` and
//! returns the topics it used, for the caller to clean up.

// A conformance suite asserts: a failed expectation is a failed test, reported by
// the panic with what was expected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::{
    Broker, Delivery, ERROR, Handler, Message, ORIGINAL_TOPIC, SubscribeOptions, dead_letter_topic,
    handler,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `broker` if it connects; otherwise a failure under `CI=true`, or a printed skip
/// of `test` and `None` (for tests against a server the machine should run).
pub async fn reachable_or_skip<B: Broker>(broker: B, test: &str) -> Option<B> {
    match broker.connect().await {
        Ok(()) => Some(broker),
        Err(err) => {
            assert!(
                !crate::testing::in_ci(),
                "{} is not reachable and CI=true: {err}",
                broker.describe()
            );
            eprintln!(
                "SKIPPED {test}: {} is not reachable ({err})",
                broker.describe()
            );
            None
        }
    }
}

/// Subscribes to `topic`, publishes one message and waits (up to 30 s) until the
/// subscriber has it: the whole path through a live connection, for tests of how a
/// broker connects (TLS, credentials). Errors from subscribing or publishing are
/// returned; a message that never arrives fails the test.
pub async fn round_trip(broker: &dyn Broker, topic: &str) -> Result<(), super::BrokerError> {
    let (kept, keep) = collecting();
    let subscriber = broker
        .subscribe(topic, keep, SubscribeOptions::default())
        .await?;
    let body = format!("round trip on {topic}");
    // A subscription may take a moment to reach the server: publish until it lands.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        broker.publish(topic, Message::new(body.clone())).await?;
        let arrived = {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
            loop {
                if crate::sync::lock(&kept)
                    .iter()
                    .any(|m| m.body == body.as_bytes())
                {
                    break true;
                }
                if tokio::time::Instant::now() > deadline {
                    break false;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        if arrived {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing published on {topic} reached its subscriber within 30 s"
        );
    }
    subscriber.unsubscribe().await;
    Ok(())
}

/// How `broker` fails to connect (the test fails if it connects).
pub async fn refusal(broker: &dyn Broker) -> String {
    match broker.connect().await {
        Ok(()) => panic!("{} should have been refused", broker.describe()),
        Err(err) => err.to_string(),
    }
}

/// The checks every broker's link over mutual TLS with a password passes, against
/// a server the caller started with a certificate of `ca`, requiring client
/// certificates of `ca` and a password: `broker(userinfo, ca_file, client)` makes
/// a broker for it (`userinfo` is `user:password@`). A message goes through with
/// the right settings; a wrong password is refused with a message containing
/// `password_refusal` (the server's words) and without the password; a server
/// certificate of another CA and a missing client certificate are each refused
/// with the sentence that names them. The password never shows in `describe()`.
#[cfg(feature = "testing")]
pub async fn mutual_tls_link<B: Broker>(
    ca: &crate::testing::TestCa,
    broker: impl Fn(&str, &std::path::Path, Option<&crate::testing::TestCert>) -> B,
    userinfo: &str,
    password_refusal: &str,
    topic: &str,
) {
    let client = ca.client("app", &[]);
    let (user, password) = userinfo
        .trim_end_matches('@')
        .split_once(':')
        .expect("userinfo is user:password@");
    let good = broker(userinfo, &ca.cert_file(), Some(&client));
    assert!(!good.describe().contains(password), "{}", good.describe());
    round_trip(&good, topic).await.unwrap();

    let wrong = "wrong-pw-x31";
    let err = refusal(&broker(
        &format!("{user}:{wrong}@"),
        &ca.cert_file(),
        Some(&client),
    ))
    .await;
    assert!(
        err.to_lowercase()
            .contains(&password_refusal.to_lowercase()),
        "{err}"
    );
    assert!(!err.contains(wrong), "the password shown: {err}");

    let other = crate::testing::TestCa::new("other-ca");
    let err = refusal(&broker(userinfo, &other.cert_file(), Some(&client))).await;
    assert!(
        err.contains("not signed by a CA this client trusts"),
        "{err}"
    );

    let err = refusal(&broker(userinfo, &ca.cert_file(), None)).await;
    assert!(
        err.contains("the server requires a client certificate"),
        "{err}"
    );
}

/// Waits (up to 30 s) until `cond` holds.
pub async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A handler that counts its calls.
pub fn counting(count: &Arc<AtomicUsize>) -> Handler {
    let count = count.clone();
    handler(move |_d| {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    })
}

/// A handler that keeps every message it gets, and the list it keeps them in.
pub fn collecting() -> (Arc<Mutex<Vec<Message>>>, Handler) {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let sink = kept.clone();
    let keep = handler(move |d: Delivery| {
        let sink = sink.clone();
        async move {
            {
                let mut sink = crate::sync::lock(&sink);
                sink.push(d.message);
            }
            Ok(())
        }
    });
    (kept, keep)
}

/// Two plain subscribers each get all 200 messages; two members of one queue group
/// share them, each message going to exactly one member.
pub async fn fan_out_and_queue_group(broker: &dyn Broker, prefix: &str) -> Vec<String> {
    let topic = format!("{prefix}fanout");
    let counts: Vec<Arc<AtomicUsize>> = (0..4).map(|_| Arc::default()).collect();
    let opts = SubscribeOptions::default;
    let mut subs = Vec::new();
    for (i, options) in [
        opts(),
        opts(),
        opts().queue("workers"),
        opts().queue("workers"),
    ]
    .into_iter()
    .enumerate()
    {
        subs.push(
            broker
                .subscribe(&topic, counting(&counts[i]), options)
                .await
                .expect("subscribe"),
        );
    }
    for i in 0..200 {
        broker
            .publish(&topic, Message::new(format!("m{i}")))
            .await
            .expect("publish");
    }
    let c = |i: usize| counts[i].load(Ordering::SeqCst);
    wait_until("every subscriber and one member per message got it", || {
        c(0) == 200 && c(1) == 200 && c(2) + c(3) == 200
    })
    .await;
    assert!(
        c(2) > 0 && c(3) > 0,
        "both queue members worked: {} {}",
        c(2),
        c(3)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c(2) + c(3), 200, "no message went to two members");
    for sub in subs {
        sub.unsubscribe().await;
    }
    vec![topic]
}

/// A handler failing every time sees attempts 1, 2, 3 and the message then lands
/// in `<topic>.dlq` with its body, headers and the last error.
pub async fn redelivery_then_dead_letter(broker: &dyn Broker, prefix: &str) -> Vec<String> {
    let topic = format!("{prefix}orders");
    let dlq = dead_letter_topic(&topic);
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let failing = handler(move |d: Delivery| {
        let seen = seen.clone();
        async move {
            {
                let mut seen = crate::sync::lock(&seen);
                seen.push(d.attempt);
            }
            Err(crate::Error::internal(
                "orders",
                format!("attempt {} failed", d.attempt),
            ))
        }
    });
    let (dead, dead_handler) = collecting();
    let failing_sub = broker
        .subscribe(
            &topic,
            failing,
            SubscribeOptions::default()
                .queue("orders")
                .max_deliveries(3),
        )
        .await
        .expect("subscribe");
    let dead_sub = broker
        .subscribe(&dlq, dead_handler, SubscribeOptions::default())
        .await
        .expect("subscribe to the dead letters");
    broker
        .publish(&topic, Message::new("o1").header("k", "v"))
        .await
        .expect("publish");
    wait_until("a dead letter", || !crate::sync::lock(&dead).is_empty()).await;
    assert_eq!(
        *attempts.lock().expect("attempts"),
        [1, 2, 3],
        "delivery count"
    );
    let dead = dead.lock().expect("dead letters")[0].clone();
    assert_eq!(dead.body, "o1");
    assert_eq!(dead.headers["k"], "v", "headers travel");
    assert_eq!(dead.headers[ERROR], "attempt 3 failed");
    assert_eq!(dead.headers[ORIGINAL_TOPIC], topic);
    failing_sub.unsubscribe().await;
    dead_sub.unsubscribe().await;
    vec![topic, dlq]
}

/// For persistent backends (whose ack wait is short in the test): a member that
/// takes a message and never finishes it (a hung or dead process) does not keep it;
/// after the ack wait another member of the group gets it.
pub async fn unacked_messages_go_to_another_member(
    broker: &dyn Broker,
    prefix: &str,
) -> Vec<String> {
    let topic = format!("{prefix}unacked");
    let taken = Arc::new(AtomicUsize::new(0));
    let took = taken.clone();
    let stuck = handler(move |_d| {
        let took = took.clone();
        async move {
            took.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let _stuck = broker
        .subscribe(&topic, stuck, SubscribeOptions::default().queue("q"))
        .await
        .expect("subscribe");
    broker
        .publish(&topic, Message::new("only"))
        .await
        .expect("publish");
    wait_until("the stuck member took it", || {
        taken.load(Ordering::SeqCst) == 1
    })
    .await;
    let done = Arc::new(AtomicUsize::new(0));
    let healthy = broker
        .subscribe(
            &topic,
            counting(&done),
            SubscribeOptions::default().queue("q"),
        )
        .await
        .expect("subscribe");
    wait_until("the message is delivered again after the ack wait", || {
        done.load(Ordering::SeqCst) >= 1 || taken.load(Ordering::SeqCst) >= 2
    })
    .await;
    healthy.unsubscribe().await;
    vec![topic]
}

/// Publishes `count` messages on `topic` while `restart` stops and starts the
/// server (after a third of them are confirmed); a publish that fails is retried
/// until confirmed. Every confirmed message must reach the subscriber (subscribed
/// with `subscription`, e.g. a queue group or a durable subscription) at least once.
/// Returns (confirmed, distinct delivered, deliveries, failed publishes).
pub async fn confirmed_messages_survive_a_restart<R, Fut>(
    broker: &dyn Broker,
    topic: &str,
    count: u64,
    subscription: SubscribeOptions,
    restart: R,
) -> (usize, usize, usize, u32)
where
    R: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use std::collections::BTreeSet;
    let received: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let deliveries = Arc::new(AtomicUsize::new(0));
    let (sink, counter) = (received.clone(), deliveries.clone());
    let subscriber = broker
        .subscribe(
            topic,
            handler(move |d: Delivery| {
                let (sink, counter) = (sink.clone(), counter.clone());
                async move {
                    let n: u64 = std::str::from_utf8(&d.message.body)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| crate::Error::bad_request("test", "not a number"))?;
                    {
                        let mut sink = crate::sync::lock(&sink);
                        sink.insert(n);
                    }
                    counter.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
            }),
            subscription,
        )
        .await
        .expect("subscribe");
    let confirmed: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let failures = Arc::new(AtomicUsize::new(0));
    let publishing = async {
        for n in 0..count {
            loop {
                match broker.publish(topic, Message::new(n.to_string())).await {
                    Ok(()) => {
                        {
                            let mut confirmed = crate::sync::lock(&confirmed);
                            confirmed.insert(n);
                        }
                        break;
                    }
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    };
    let restarting = async {
        wait_until("a third of the messages are confirmed", || {
            confirmed
                .lock()
                .map(|c| c.len() as u64 >= count / 3)
                .unwrap_or(false)
        })
        .await;
        restart().await;
    };
    let ((), ()) = tokio::join!(publishing, restarting);
    let confirmed = confirmed.lock().expect("confirmed").clone();
    assert_eq!(
        confirmed.len() as u64,
        count,
        "every message was finally confirmed"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let missing: Vec<u64> = confirmed
            .difference(&received.lock().expect("received"))
            .copied()
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} confirmed messages never delivered after the restart (first: {:?}; {} of {count} were confirmed when the restart began)",
            missing.len(),
            &missing[..missing.len().min(10)],
            count / 3
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    subscriber.unsubscribe().await;
    let distinct = received.lock().expect("received").len();
    (
        confirmed.len(),
        distinct,
        deliveries.load(Ordering::Relaxed),
        u32::try_from(failures.load(Ordering::Relaxed)).unwrap_or(u32::MAX),
    )
}

/// A payload that does not decode as the subscriber's event type is a handler
/// error like any other: redelivered, then dead-lettered with the decode error —
/// never a crash — and the subscriber goes on with the next message.
pub async fn malformed_payload_is_dead_lettered(broker: &dyn Broker, prefix: &str) -> Vec<String> {
    let topic = format!("{prefix}typed");
    let dlq = dead_letter_topic(&topic);
    let good = Arc::new(AtomicUsize::new(0));
    let seen = good.clone();
    let typed = handler(move |d: Delivery| {
        let seen = seen.clone();
        async move {
            let _: prost_types::Duration = super::typed::decode_proto(&d.message)?;
            seen.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let (dead, dead_handler) = collecting();
    let typed_sub = broker
        .subscribe(
            &topic,
            typed,
            SubscribeOptions::default().queue("typed").max_deliveries(2),
        )
        .await
        .expect("subscribe");
    let dead_sub = broker
        .subscribe(&dlq, dead_handler, SubscribeOptions::default())
        .await
        .expect("subscribe to the dead letters");
    let garbage = Message::new(vec![0xff, 0xff, 0xff, 0x01])
        .header(super::CONTENT_TYPE, super::typed::PROTOBUF);
    broker
        .publish(&topic, garbage)
        .await
        .expect("publish garbage");
    let valid = super::typed::encode_proto(&prost_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    broker
        .publish(&topic, valid)
        .await
        .expect("publish a valid event");
    wait_until(
        "the garbage is dead-lettered and the valid event handled",
        || good.load(Ordering::SeqCst) == 1 && !crate::sync::lock(&dead).is_empty(),
    )
    .await;
    let dead = dead.lock().expect("dead letters")[0].clone();
    assert!(
        dead.headers[ERROR].contains("malformed protobuf event"),
        "{:?}",
        dead.headers
    );
    typed_sub.unsubscribe().await;
    dead_sub.unsubscribe().await;
    vec![topic, dlq]
}
