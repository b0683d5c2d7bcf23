//! The circuit breaker on a real client and real connections: `--breaker` on a
//! calling service; a node that accepts connections and answers none opens the
//! circuit, which then fails fast without dialling; after the sleep window one trial
//! reaches a healthy node and closes it.

mod common;

use common::start_with;
use greeter::proto::{self, HelloRequest};
use rmicro::registry::{MemoryRegistry, Node, Registry, Service};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A node that takes TCP connections and closes them at once, counting them.
async fn black_hole() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let address = listener.local_addr().expect("bound").to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (address, accepted)
}

fn record(id: &str, address: &str) -> Service {
    Service {
        name: "greeter".into(),
        version: "1.0.0".into(),
        nodes: vec![Node {
            id: id.into(),
            address: address.into(),
            metadata: Default::default(),
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn breaker_flag_opens_on_a_dead_node_fails_fast_and_a_trial_closes_it() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let (hole, accepted) = black_hole().await;
    let dead = record("greeter-dead", &hole);
    registry
        .register(&dead, Duration::from_secs(60))
        .await
        .expect("register the dead node");
    let caller = rmicro::Service::builder("base")
        .args([
            "base",
            "--log-level",
            "warn",
            "--breaker",
            "--breaker-volume",
            "4",
            "--breaker-sleep-window",
            "500ms",
            "--client-retries",
            "0",
        ])
        .registry(registry.clone())
        .build()
        .expect("valid flags");
    let greeter = proto::GreeterClient::new("greeter", caller.client().clone());
    let hello = || HelloRequest {
        name: "ann".into(),
        count: 0,
    };

    // Four calls reach the dead node and fail: the circuit opens.
    for _ in 0..4 {
        let err = greeter
            .say_hello(hello())
            .await
            .expect_err("the node is dead");
        assert_eq!(err.grpc_code(), rmicro::Code::Unavailable, "{err:?}");
        assert!(!err.detail.starts_with("circuit open"), "{err:?}");
    }
    let dialled = accepted.load(Ordering::SeqCst);
    assert!(dialled >= 1, "the calls reached the node");

    // Open: calls fail at once, with who refused and why, and dial nothing.
    for _ in 0..10 {
        let err = greeter.say_hello(hello()).await.expect_err("open");
        assert_eq!(err.grpc_code(), rmicro::Code::Unavailable);
        assert_eq!(err.id, "base");
        assert!(
            err.detail.starts_with(
                "circuit open for greeter.Greeter.SayHello: 4 of 4 calls failed in the last 10 s; next trial in"
            ),
            "{err:?}"
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        dialled,
        "an open circuit dialled"
    );

    // A healthy node replaces the dead one; after the sleep window one trial gets
    // through, succeeds and closes the circuit.
    let reg = registry.clone();
    let (_service, server) = start_with(greeter::Greeter, move |b| b.registry(reg)).await;
    registry
        .deregister(&dead)
        .await
        .expect("deregister the dead node");
    // (Until the caller's registry watch drops the dead node, a trial may still go
    // there, fail, and open the circuit for another window.)
    let mut replies = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while replies == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the circuit never closed"
        );
        match greeter.say_hello(hello()).await {
            Ok(reply) => {
                assert_eq!(reply.message, "Hello ann");
                replies += 1;
            }
            Err(err) => {
                assert_eq!(err.grpc_code(), rmicro::Code::Unavailable, "{err:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    for _ in 0..5 {
        greeter
            .say_hello(hello())
            .await
            .expect("closed: calls go through");
    }
    drop(server);
}
