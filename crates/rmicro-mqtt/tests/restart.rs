//! A Mosquitto restarted (cleanly: it saves its sessions on exit) while 10,000 QoS 1
//! messages are in flight: every message whose publish was acknowledged reaches the
//! durable subscriber, whose persistent session survives the restart, and publisher
//! and subscriber resume by themselves. A private mosquitto (free port, own
//! persistence, no queue limit) keeps the machine's shared one out of it.

use rmicro::broker::SubscribeOptions;
use rmicro_mqtt::MqttBroker;
use rmicro_mqtt::testing::MosquittoServer;
use std::time::Duration;

async fn restart_with_10_000_in_flight(subscription: SubscribeOptions, what: &str) {
    let mut server = match MosquittoServer::start().await.expect("mosquitto starts") {
        Some(server) => server,
        None if rmicro::testing::in_ci() => panic!("mosquitto is not installed and CI=true"),
        None => {
            eprintln!("SKIPPED: mosquitto is not installed");
            return;
        }
    };
    let mqtt = MqttBroker::new(&format!(
        "{}?client_id=restart-{}",
        server.address(),
        std::process::id()
    ))
    .expect("a valid address");
    let (confirmed, distinct, deliveries, failures) =
        rmicro::broker::testing::confirmed_messages_survive_a_restart(
            &mqtt,
            "orders",
            10_000,
            subscription,
            || async {
                server.stop();
                tokio::time::sleep(Duration::from_secs(1)).await;
                server.resume().await.expect("mosquitto restarts");
            },
        )
        .await;
    eprintln!(
        "MQTT restart with 10,000 in flight ({what}): {confirmed} confirmed, {distinct} distinct delivered, {deliveries} deliveries, {failures} publish attempts failed during the outage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_a_server_restart() {
    restart_with_10_000_in_flight(
        SubscribeOptions::default().durable().concurrency(8),
        "durable subscription",
    )
    .await;
}

/// The same through a queue group (a shared subscription). Mosquitto restores a
/// shared subscription from its database inactive — publishes match nothing
/// ("no matching subscribers") until a member subscribes again — so the member
/// re-subscribes on every reconnection and the publisher, for a few seconds after
/// its own reconnection, sends a publish that matched nothing again. Without those
/// two, 1-10 of 10,000 acknowledged messages were lost in 4 of 10 runs (2026-11-24).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_reaches_a_queue_group_across_a_restart() {
    restart_with_10_000_in_flight(
        SubscribeOptions::default().queue("restart").concurrency(8),
        "queue group",
    )
    .await;
}
