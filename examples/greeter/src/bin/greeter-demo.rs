//! The demo: starts the greeter on a free loopback port, calls every endpoint over
//! real HTTP/2, publishes an event that the service receives through the embedded
//! broker, then shuts the server down gracefully. Needs nothing installed.

use greeter::Greeter;
use greeter::proto::{GreeterServer, HelloReply};
use rmicro::broker::typed::Event;
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let service = match rmicro::Service::builder("greeter")
        .version("1.0.0")
        .address("127.0.0.1:0")
        .wrap_handler(rmicro::wrapper::logging::LoggingLayer::new())
        .handle(GreeterServer::new(Greeter))
        .build()
    {
        Ok(service) => service,
        Err(err) => err.exit(),
    };
    // Events: a protobuf message on a topic, through the embedded broker (the
    // subscriber is a node in the registry; the publisher delivers over HTTP/2).
    let (received, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    service
        .subscribe("greeter.greeted", move |event: Event<HelloReply>| {
            let received = received.clone();
            async move {
                let from = event.header("Micro-From-Service").unwrap_or("?").to_owned();
                let _ = received.send((event.message().message.clone(), from));
                Ok(())
            }
        })
        .await?;
    let server = service.start().await?;
    let address = server.local_addr().to_string();
    println!("greeter listening on {address}; calling it:\n");
    let mut result = greeter::tour(service.client(), Some(&address), "rmicro").await;
    if result.is_ok() {
        let event = HelloReply {
            message: "Hello rmicro, by event".into(),
        };
        result = service.client().publish("greeter.greeted", &event).await;
        match tokio::time::timeout(Duration::from_secs(10), arrived.recv()).await {
            Ok(Some((message, from))) => {
                println!("event          -> {message} (from {from}, on greeter.greeted)")
            }
            _ => println!("event          -> not received within 10 s"),
        }
    }
    let drained = server.stop().await;
    service.unsubscribe_all().await;
    println!("\nserver stopped gracefully: {drained}");
    result?;
    Ok(())
}
