//! A NATS server restarted while 10,000 messages are in flight: every message whose
//! publish was confirmed is delivered at least once, and publisher and subscriber
//! resume by themselves. Uses a private nats-server (free port, own store) so the
//! machine's shared server is left alone.

use rmicro::broker::{self, Broker, Delivery, Message, SubscribeOptions};
use rmicro_nats::NatsBroker;
use rmicro_nats::testing::NatsServer;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_confirmed_message_survives_a_server_restart() {
    let mut server = match NatsServer::start().await.expect("nats-server starts") {
        Some(server) => server,
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("nats-server is not installed and CI=true")
        }
        None => {
            eprintln!("SKIPPED: nats-server is not installed");
            return;
        }
    };
    let nats = NatsBroker::jetstream(&server.address()).with_ack_wait(Duration::from_secs(2));
    let received: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let deliveries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (sink, count) = (received.clone(), deliveries.clone());
    let subscriber = nats
        .subscribe(
            "orders",
            broker::handler(move |d: Delivery| {
                let (sink, count) = (sink.clone(), count.clone());
                async move {
                    let n: u64 = std::str::from_utf8(&d.message.body)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| rmicro::Error::bad_request("t", "not a number"))?;
                    sink.lock().unwrap().insert(n);
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Ok(())
                }
            }),
            SubscribeOptions::default().queue("billing").concurrency(8),
        )
        .await
        .expect("subscribes");

    let confirmed: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let publisher = {
        let (nats, confirmed) = (nats.clone(), confirmed.clone());
        tokio::spawn(async move {
            let mut failures = 0u32;
            for n in 0..10_000u64 {
                // A publish that fails while the server is away is retried until
                // confirmed; only confirmed messages are promised.
                loop {
                    match nats.publish("orders", Message::new(n.to_string())).await {
                        Ok(()) => {
                            confirmed.lock().unwrap().insert(n);
                            break;
                        }
                        Err(_) => {
                            failures += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
            failures
        })
    };

    // Restart the server while messages are in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    while confirmed.lock().unwrap().len() < 3_000 {
        assert!(
            Instant::now() < deadline,
            "publishing stalled before the restart"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.resume().await.expect("nats-server restarts");
    let failures = tokio::time::timeout(Duration::from_secs(120), publisher)
        .await
        .expect("the publisher finishes after the restart")
        .unwrap();

    let confirmed = confirmed.lock().unwrap().clone();
    assert_eq!(confirmed.len(), 10_000);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing = confirmed.difference(&received.lock().unwrap()).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} confirmed messages never delivered after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "restart with 10,000 in flight: {} confirmed, {} distinct delivered, {} deliveries, {failures} publish attempts failed during the outage",
        confirmed.len(),
        received.lock().unwrap().len(),
        deliveries.load(std::sync::atomic::Ordering::Relaxed),
    );
    subscriber.unsubscribe().await;
}
