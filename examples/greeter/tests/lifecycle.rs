//! Lifecycle holes closed: a dropped server leaves no zombie node, and the end of
//! the grace period cuts the calls still running instead of leaving them behind.

mod common;

use common::{start_with, wait_until};
use greeter::proto::{self, HelloReply, HelloRequest};
use rmicro::registry::{MemoryRegistry, Registry};
use rmicro::{Error, Request, RequestStream, ResponseSender};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A greeter whose `say_hello` never answers, counting the handlers alive.
#[derive(Clone, Default)]
struct Stuck {
    alive: Arc<AtomicUsize>,
}

struct Alive(Arc<AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl proto::Greeter for Stuck {
    async fn say_hello(&self, _: Request<HelloRequest>) -> Result<HelloReply, Error> {
        self.alive.fetch_add(1, Ordering::SeqCst);
        let _alive = Alive(self.alive.clone());
        std::future::pending::<()>().await;
        Ok(HelloReply::default())
    }

    async fn say_hello_stream(
        &self,
        _: Request<HelloRequest>,
        _: ResponseSender<HelloReply>,
    ) -> Result<(), Error> {
        Ok(())
    }

    async fn collect(&self, _: Request<RequestStream<HelloRequest>>) -> Result<HelloReply, Error> {
        Ok(HelloReply::default())
    }

    async fn chat(
        &self,
        _: Request<RequestStream<HelloRequest>>,
        _: ResponseSender<HelloReply>,
    ) -> Result<(), Error> {
        Ok(())
    }
}

async fn nodes(registry: &dyn Registry) -> usize {
    registry
        .get_service("greeter")
        .await
        .unwrap_or_default()
        .iter()
        .map(|s| s.nodes.len())
        .sum()
}

#[tokio::test]
async fn a_dropped_server_deregisters_and_stops_serving() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let reg = registry.clone();
    let (_service, server) = start_with(greeter::Greeter, move |b| {
        b.registry(reg)
            .register_ttl(Duration::from_secs(60))
            .register_interval(Duration::from_millis(50))
    })
    .await;
    let address = server.local_addr().to_string();
    assert_eq!(nodes(&*registry).await, 1);
    drop(server);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while nodes(&*registry).await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dropped node stayed registered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The heartbeat stopped too: the record does not come back.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        nodes(&*registry).await,
        0,
        "the heartbeat re-registered a dropped node"
    );
    // And the listener is closed.
    let client = rmicro::Client::default().with_route("greeter", address);
    let err = proto::GreeterClient::new("greeter", client)
        .say_hello(HelloRequest::default())
        .timeout(Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(err.code, 503, "{err}");
}

#[tokio::test]
async fn the_grace_period_ends_by_cutting_the_calls_still_running() {
    let stuck = Stuck::default();
    let alive = stuck.alive.clone();
    let (_service, server) =
        start_with(stuck, |b| b.grace_period(Duration::from_millis(300))).await;
    let client = common::client_for(&server);
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .say_hello(HelloRequest::default())
                    .timeout(Duration::from_secs(30))
                    .await
            })
        })
        .collect();
    wait_until("3 handlers run", Duration::from_secs(10), || {
        alive.load(Ordering::SeqCst) == 3
    })
    .await;
    assert!(
        !server.stop().await,
        "stuck calls cannot finish in the grace period"
    );
    // The cut calls end now, not at their own 30 s timeout, and their handlers are gone.
    for call in calls {
        let result = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("a cut call ends at once")
            .unwrap();
        assert!(result.is_err());
    }
    assert_eq!(
        alive.load(Ordering::SeqCst),
        0,
        "handlers outlived the server"
    );
}
