//! A greeter that also subscribes to events: the subscription shows in its registry
//! record as go-micro lists subscribers.

use rmicro::broker::SubscribeOptions;
use rmicro::broker::typed::Event;
use rmicro::registry::Registry;
use std::sync::Arc;

#[tokio::test]
async fn subscriptions_appear_in_the_registry_record() {
    let registry = Arc::new(rmicro::registry::MemoryRegistry::new());
    let service = rmicro::Service::builder("greeter")
        .address("127.0.0.1:0")
        .args(["greeter", "--log-level", "error"])
        .registry(registry.clone())
        .build()
        .unwrap();
    service
        .subscribe_json(
            "user.created",
            SubscribeOptions::default().queue("greeters"),
            |_event: Event<serde_json::Value>| async { Ok(()) },
        )
        .await
        .unwrap();
    service
        .handle(greeter::proto::GreeterServer::new(greeter::Greeter))
        .expect("not started yet");
    let server = service.start().await.unwrap();
    let record = registry.get_service("greeter").await.unwrap();
    let subscriber = record[0]
        .endpoints
        .iter()
        .find(|e| e.metadata.get("subscriber").is_some_and(|v| v == "true"))
        .expect("a subscriber endpoint");
    assert_eq!(subscriber.metadata["topic"], "user.created");
    assert_eq!(subscriber.metadata["queue"], "greeters");
    assert_eq!(subscriber.request.as_ref().unwrap().name, "Value");
    assert!(server.stop().await);
    service.unsubscribe_all().await;
}

/// `wrap_publisher` and `wrap_subscriber` hold for the typed API over the
/// embedded HTTP broker: the publisher's header reaches the subscriber, and the
/// subscriber wrapper runs once per delivery, redeliveries included.
#[tokio::test]
async fn broker_wrappers_see_every_publish_and_every_delivery() {
    use rmicro::wrapper::{publisher_fn, subscriber_fn};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    let registry = Arc::new(rmicro::registry::MemoryRegistry::new());
    let published = Arc::new(AtomicU32::new(0));
    let counted = published.clone();
    let publisher = rmicro::Service::builder("orders")
        .args(["orders", "--log-level", "error"])
        .registry(registry.clone())
        .wrap_publisher(publisher_fn(move |topic, message, next| {
            counted.fetch_add(1, Ordering::SeqCst);
            next(topic, message.header("X-Tenant", "acme"))
        }))
        .build()
        .unwrap();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let noted = attempts.clone();
    let subscriber = rmicro::Service::builder("audit")
        .args(["audit", "--log-level", "error"])
        .registry(registry.clone())
        .wrap_subscriber(subscriber_fn(move |delivery, next| {
            let tenant = delivery.message.headers.get("X-Tenant").cloned();
            noted
                .lock()
                .unwrap()
                .push((delivery.attempt, tenant.unwrap_or_default()));
            next(delivery)
        }))
        .build()
        .unwrap();
    let handled = Arc::new(AtomicU32::new(0));
    let seen = handled.clone();
    subscriber
        .subscribe_json(
            "order.placed",
            SubscribeOptions::default(),
            move |_event: Event<serde_json::Value>| {
                // The first delivery fails, so the wrapper must run again.
                let n = seen.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        Err(rmicro::Error::internal("audit", "first try fails"))
                    } else {
                        Ok(())
                    }
                }
            },
        )
        .await
        .unwrap();
    publisher
        .client()
        .publish_json("order.placed", &serde_json::json!({"id": 7}))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while handled.load(Ordering::SeqCst) < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(published.load(Ordering::SeqCst), 1);
    assert_eq!(handled.load(Ordering::SeqCst), 2, "redelivered once");
    assert_eq!(
        *attempts.lock().unwrap(),
        [(1, "acme".to_owned()), (2, "acme".to_owned())]
    );
    subscriber.unsubscribe_all().await;
}
