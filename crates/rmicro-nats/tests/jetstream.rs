//! The NATS broker against the NATS server running on this machine (127.0.0.1:4222,
//! JetStream enabled). Topics carry the process id and their streams are deleted at
//! the end, so runs neither collide nor leave anything behind.

use rmicro::broker::testing::{self, counting, wait_until};
use rmicro::broker::{self, Broker, Delivery, Message, SubscribeOptions};
use rmicro_nats::NatsBroker;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

#[tokio::test(flavor = "multi_thread")]
async fn jetstream_broker_conforms() {
    let Some(nats) = rmicro_nats::testing::shared_or_skip("jetstream conformance").await else {
        return;
    };
    let nats = nats.with_ack_wait(Duration::from_secs(1));
    let prefix = topic("");
    let mut used = Vec::new();
    used.extend(testing::fan_out_and_queue_group(&nats, &prefix).await);
    used.extend(testing::redelivery_then_dead_letter(&nats, &prefix).await);
    used.extend(testing::malformed_payload_is_dead_lettered(&nats, &prefix).await);
    used.extend(testing::unacked_messages_go_to_another_member(&nats, &prefix).await);
    drop(Cleanup(used));
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

#[tokio::test]
async fn tokens_never_show_and_bare_addresses_work() {
    let Some(_) = rmicro_nats::testing::shared_or_skip("nats addresses").await else {
        return;
    };
    let secret = rmicro_nats::from_address(
        Some("nats://app:s3cretpw@127.0.0.1:4222"),
        rmicro_nats::Mode::Core,
    )
    .unwrap();
    assert!(
        !secret.describe().contains("s3cretpw"),
        "{}",
        secret.describe()
    );
    assert!(!format!("{secret:?}").contains("s3cretpw"));
    let err = rmicro_nats::from_address(
        Some("nats://app:s3cretpw@127.0.0.1:4222?x=1"),
        rmicro_nats::Mode::Core,
    )
    .unwrap_err()
    .to_string();
    assert!(
        !err.contains("s3cretpw") && err.contains("unknown option `x=1`"),
        "{err}"
    );
    let bare = rmicro_nats::from_address(Some("127.0.0.1:4222"), rmicro_nats::Mode::Core).unwrap();
    bare.connect().await.unwrap();
}

/// Processes that publish to a new topic at the same moment each create its stream;
/// the server refuses all but one ("subjects overlap with an existing stream"), and
/// the others must use the stream that won, not fail the publish.
#[tokio::test(flavor = "multi_thread")]
async fn brokers_creating_one_stream_at_once_all_publish() {
    let Some(_) = rmicro_nats::testing::shared_or_skip("concurrent stream creation").await else {
        return;
    };
    for round in 0..20 {
        let topic = topic(&format!("race{round}"));
        let cleanup = Cleanup(vec![topic.clone()]);
        // Separate brokers: separate connections, no shared "already created" set.
        let brokers: Vec<NatsBroker> = (0..8).map(|_| NatsBroker::jetstream(ADDRESS)).collect();
        let publishes = brokers.iter().enumerate().map(|(i, broker)| {
            let topic = topic.clone();
            async move {
                broker
                    .publish(&topic, Message::new(format!("{i}").into_bytes()))
                    .await
            }
        });
        let results = futures_util::future::join_all(publishes).await;
        for (i, result) in results.iter().enumerate() {
            assert!(result.is_ok(), "round {round}, broker {i}: {result:?}");
        }
        drop(cleanup);
    }
}

/// A stream deleted behind a broker's back (an operator's `nats stream rm`) is made
/// again by the next publish, which is stored, not refused with "no stream".
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_deleted_behind_the_brokers_back_is_made_again() {
    let Some(_) = rmicro_nats::testing::shared_or_skip("a deleted stream").await else {
        return;
    };
    let topic = topic("deleted");
    let _cleanup = Cleanup(vec![topic.clone()]);
    let publisher = NatsBroker::jetstream(ADDRESS);
    publisher
        .publish(&topic, Message::new(b"first".to_vec()))
        .await
        .unwrap();
    // Another broker (its own connection and stream cache) deletes the stream.
    NatsBroker::jetstream(ADDRESS)
        .delete_topic(&topic)
        .await
        .unwrap();
    publisher
        .publish(&topic, Message::new(b"second".to_vec()))
        .await
        .unwrap();
    let client = async_nats::connect(ADDRESS).await.unwrap();
    let mut stream = async_nats::jetstream::new(client)
        .get_stream(rmicro_nats::stream_name(&topic))
        .await
        .unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(
        info.state.messages, 1,
        "only the publish after the delete is stored"
    );
}
