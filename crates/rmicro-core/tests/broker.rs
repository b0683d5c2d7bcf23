//! Publish/subscribe through a service and its client on the in-process broker.

extern crate rmicro_core as rmicro;

use rmicro::broker::typed::Event;
use rmicro::broker::{self, SubscribeOptions};
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn service(name: &str, broker: &rmicro::broker::SharedBroker) -> rmicro::Service {
    rmicro::Service::builder(name)
        .args([name, "--log-level", "error"])
        .registry(Arc::new(rmicro::registry::MemoryRegistry::new()))
        .broker(broker.clone())
        .build()
        .expect("valid flags")
}

#[tokio::test]
async fn typed_events_carry_standard_headers_and_bad_payloads_end_in_the_dlq() {
    let broker: rmicro::broker::SharedBroker = Arc::new(rmicro::broker::MemoryBroker::new());
    let users = service("users", &broker);
    let mailer = service("mailer", &broker);

    let seen: Arc<Mutex<Vec<(i64, String, String)>>> = Arc::default();
    let sink = seen.clone();
    mailer
        .subscribe(
            "user.created",
            move |event: Event<prost_types::Timestamp>| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push((
                        event.message().seconds,
                        event.header(broker::FROM_SERVICE).unwrap_or("").to_owned(),
                        event.header(broker::MESSAGE_ID).unwrap_or("").to_owned(),
                    ));
                    Ok(())
                }
            },
        )
        .await
        .unwrap();
    let dead: Arc<Mutex<Vec<broker::Message>>> = Arc::default();
    let dlq = dead.clone();
    broker
        .subscribe(
            "user.created.dlq",
            broker::handler(move |d: broker::Delivery| {
                let dlq = dlq.clone();
                async move {
                    dlq.lock().unwrap().push(d.message);
                    Ok(())
                }
            }),
            SubscribeOptions::default(),
        )
        .await
        .unwrap();

    users
        .client()
        .publish(
            "user.created",
            &prost_types::Timestamp {
                seconds: 42,
                nanos: 0,
            },
        )
        .await
        .unwrap();
    wait_until("the event arrives", || !seen.lock().unwrap().is_empty()).await;
    let (seconds, from, id) = seen.lock().unwrap()[0].clone();
    assert_eq!((seconds, from.as_str(), id.len()), (42, "users", 36));

    // JSON where protobuf is expected: never a crash, five failed deliveries, a dead letter.
    users
        .client()
        .publish_json("user.created", &serde_json::json!({"seconds": 1}))
        .await
        .unwrap();
    wait_until("the malformed event is dead-lettered", || {
        !dead.lock().unwrap().is_empty()
    })
    .await;
    let dead = dead.lock().unwrap()[0].clone();
    assert!(
        dead.headers[broker::ERROR].contains("expected a protobuf event"),
        "{:?}",
        dead.headers
    );
    assert_eq!(dead.headers[broker::DELIVERIES], "5");
    assert_eq!(seen.lock().unwrap().len(), 1);

    mailer.unsubscribe_all().await;
}
