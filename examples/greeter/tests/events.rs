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
