//! A NATS server killed and restarted while 10,000 messages are in flight: every
//! message whose publish was confirmed is delivered at least once; publisher and
//! subscriber resume by themselves. A private nats-server (free port, own store)
//! keeps the machine's shared server out of it.

use rmicro::broker::SubscribeOptions;
use rmicro_nats::NatsBroker;
use rmicro_nats::testing::NatsServer;
use std::time::Duration;

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
    let (confirmed, distinct, deliveries, failures) =
        rmicro::broker::testing::confirmed_messages_survive_a_restart(
            &nats,
            "orders",
            10_000,
            SubscribeOptions::default().queue("restart").concurrency(8),
            || async {
                server.stop();
                tokio::time::sleep(Duration::from_secs(1)).await;
                server.resume().await.expect("nats-server restarts");
            },
        )
        .await;
    eprintln!(
        "NATS restart with 10,000 in flight: {confirmed} confirmed, {distinct} distinct delivered, {deliveries} deliveries, {failures} publish attempts failed during the outage"
    );
}
