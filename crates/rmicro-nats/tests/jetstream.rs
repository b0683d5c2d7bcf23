//! The NATS broker against the NATS server running on this machine (127.0.0.1:4222,
//! JetStream enabled). Topics carry the process id and their streams are deleted at
//! the end, so runs neither collide nor leave anything behind.

use rmicro::broker::{self, Broker, Delivery, Message, SubscribeOptions};
use rmicro_nats::NatsBroker;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ADDRESS: &str = rmicro_nats::testing::SHARED_ADDRESS;

/// Deletes the streams of `topics` when the test ends.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let topics = std::mem::take(&mut self.0);
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let nats = NatsBroker::jetstream(ADDRESS);
                for topic in topics {
                    let _ = nats.delete_topic(&topic).await;
                }
            });
        });
        let _ = done.join();
    }
}

fn topic(name: &str) -> String {
    format!("rmicro-test.{}.{name}", std::process::id())
}

fn counting(count: &Arc<AtomicUsize>) -> broker::Handler {
    let count = count.clone();
    broker::handler(move |_d| {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    })
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fan_out_to_every_subscriber_and_one_member_per_queue_group() {
    let Some(nats) = rmicro_nats::testing::shared_or_skip("jetstream fan-out").await else {
        return;
    };
    let t = topic("fanout");
    let _cleanup = Cleanup(vec![t.clone()]);
    let counts: Vec<Arc<AtomicUsize>> = (0..4).map(|_| Arc::default()).collect();
    let opts = SubscribeOptions::default;
    let subs = vec![
        nats.subscribe(&t, counting(&counts[0]), opts())
            .await
            .unwrap(),
        nats.subscribe(&t, counting(&counts[1]), opts())
            .await
            .unwrap(),
        nats.subscribe(&t, counting(&counts[2]), opts().queue("workers"))
            .await
            .unwrap(),
        nats.subscribe(&t, counting(&counts[3]), opts().queue("workers"))
            .await
            .unwrap(),
    ];
    for i in 0..200 {
        nats.publish(&t, Message::new(format!("m{i}")))
            .await
            .unwrap();
    }
    let c = |i: usize| counts[i].load(Ordering::SeqCst);
    wait_until("every delivery", || {
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
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_handler_gets_redeliveries_then_the_message_is_dead_lettered() {
    let Some(nats) = rmicro_nats::testing::shared_or_skip("jetstream redelivery").await else {
        return;
    };
    let t = topic("orders");
    let dlq = broker::dead_letter_topic(&t);
    let _cleanup = Cleanup(vec![t.clone(), dlq.clone()]);
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let failing = broker::handler(move |d: Delivery| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(d.attempt);
            Err(rmicro::Error::internal(
                "orders",
                format!("attempt {} failed", d.attempt),
            ))
        }
    });
    let dead = Arc::new(Mutex::new(Vec::new()));
    let sink = dead.clone();
    let dead_handler = broker::handler(move |d: Delivery| {
        let sink = sink.clone();
        async move {
            sink.lock().unwrap().push(d.message);
            Ok(())
        }
    });
    let s1 = nats
        .subscribe(
            &t,
            failing,
            SubscribeOptions::default()
                .queue("orders")
                .max_deliveries(3),
        )
        .await
        .unwrap();
    let s2 = nats
        .subscribe(&dlq, dead_handler, SubscribeOptions::default())
        .await
        .unwrap();
    nats.publish(&t, Message::new("o1").header("k", "v"))
        .await
        .unwrap();
    wait_until("a dead letter", || !dead.lock().unwrap().is_empty()).await;
    assert_eq!(
        *attempts.lock().unwrap(),
        [1, 2, 3],
        "JetStream's delivery count"
    );
    let dead = dead.lock().unwrap()[0].clone();
    assert_eq!(dead.body, "o1");
    assert_eq!(dead.headers["k"], "v", "headers travel");
    assert_eq!(dead.headers[broker::ERROR], "attempt 3 failed");
    assert_eq!(dead.headers[broker::ORIGINAL_TOPIC], t);
    s1.unsubscribe().await;
    s2.unsubscribe().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_that_stops_without_acking_leaves_its_messages_to_the_group() {
    let Some(nats) = rmicro_nats::testing::shared_or_skip("jetstream unacked").await else {
        return;
    };
    let nats = nats.with_ack_wait(Duration::from_secs(1));
    let t = topic("unacked");
    let _cleanup = Cleanup(vec![t.clone()]);
    // A member that takes messages and never finishes them (as a hung or dead process).
    let taken = Arc::new(AtomicUsize::new(0));
    let took = taken.clone();
    let stuck = broker::handler(move |_d| {
        let took = took.clone();
        async move {
            took.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let stuck_sub = nats
        .subscribe(&t, stuck, SubscribeOptions::default().queue("q"))
        .await
        .unwrap();
    nats.publish(&t, Message::new("only")).await.unwrap();
    wait_until("the stuck member took it", || {
        taken.load(Ordering::SeqCst) == 1
    })
    .await;
    // Another member joins; after the ack wait JetStream redelivers to a member.
    let done = Arc::new(AtomicUsize::new(0));
    let healthy = nats
        .subscribe(&t, counting(&done), SubscribeOptions::default().queue("q"))
        .await
        .unwrap();
    wait_until("redelivered after the ack wait", || {
        done.load(Ordering::SeqCst) >= 1 || taken.load(Ordering::SeqCst) >= 2
    })
    .await;
    healthy.unsubscribe().await;
    drop(stuck_sub);
}

#[tokio::test(flavor = "multi_thread")]
async fn core_nats_fans_out_and_retries_in_process() {
    let Some(_) = rmicro_nats::testing::shared_or_skip("core nats").await else {
        return;
    };
    let nats = NatsBroker::core(ADDRESS);
    let t = topic("core");
    let count = Arc::new(AtomicUsize::new(0));
    let flaky_count = Arc::new(AtomicUsize::new(0));
    let fc = flaky_count.clone();
    let flaky = broker::handler(move |d: Delivery| {
        let fc = fc.clone();
        async move {
            fc.fetch_add(1, Ordering::SeqCst);
            if d.attempt < 2 {
                Err(rmicro::Error::internal("t", "first try fails"))
            } else {
                Ok(())
            }
        }
    });
    let a = nats
        .subscribe(&t, counting(&count), SubscribeOptions::default())
        .await
        .unwrap();
    let b = nats
        .subscribe(&t, flaky, SubscribeOptions::default())
        .await
        .unwrap();
    for i in 0..10 {
        nats.publish(&t, Message::new(format!("{i}")))
            .await
            .unwrap();
    }
    wait_until("all handled", || {
        count.load(Ordering::SeqCst) == 10 && flaky_count.load(Ordering::SeqCst) == 20
    })
    .await;
    a.unsubscribe().await;
    b.unsubscribe().await;
    let err = NatsBroker::jetstream(ADDRESS)
        .publish("bad topic.>", Message::new("x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("wildcards"), "{err}");
}
