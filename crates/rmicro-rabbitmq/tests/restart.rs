//! A RabbitMQ node killed (SIGKILL) and restarted while 10,000 messages are in
//! flight: every message whose publish was confirmed reaches the queue-group
//! subscriber (durable quorum queue, persistent messages), and publisher and
//! subscriber resume by themselves. A private node keeps the machine's shared one
//! out of it.

use rmicro::broker::SubscribeOptions;
use rmicro_rabbitmq::RabbitBroker;
use rmicro_rabbitmq::testing::RabbitServer;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_confirmed_message_survives_a_server_restart() {
    let mut server = match RabbitServer::start().await.expect("rabbitmq-server starts") {
        Some(server) => server,
        None if rmicro::testing::in_ci() => panic!("rabbitmq-server is not installed and CI=true"),
        None => {
            eprintln!("SKIPPED: rabbitmq-server is not installed");
            return;
        }
    };
    let rabbit = RabbitBroker::new(&server.address()).unwrap();
    let (confirmed, distinct, deliveries, failures) =
        rmicro::broker::testing::confirmed_messages_survive_a_restart(
            &rabbit,
            "orders",
            10_000,
            SubscribeOptions::default().queue("restart").concurrency(8),
            || async {
                server.stop();
                tokio::time::sleep(Duration::from_secs(1)).await;
                server.resume().await.expect("rabbitmq-server restarts");
            },
        )
        .await;
    eprintln!(
        "RabbitMQ restart with 10,000 in flight: {confirmed} confirmed, {distinct} distinct delivered, {deliveries} deliveries, {failures} publish attempts failed during the outage"
    );
}
