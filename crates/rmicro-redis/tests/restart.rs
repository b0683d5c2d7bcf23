//! A Redis server (append-only, fsync always) killed and restarted while 10,000
//! messages are in flight: every confirmed `XADD` is delivered at least once, and
//! publisher and subscriber resume by themselves. A private redis-server keeps the
//! machine's shared one (which persists nothing) out of it.

use rmicro::broker::SubscribeOptions;
use rmicro_redis::RedisBroker;
use rmicro_redis::testing::RedisServer;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_confirmed_message_survives_a_server_restart() {
    let mut server = match RedisServer::start().await.expect("redis-server starts") {
        Some(server) => server,
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("redis-server is not installed and CI=true")
        }
        None => {
            eprintln!("SKIPPED: redis-server is not installed");
            return;
        }
    };
    let redis = RedisBroker::new(&format!("{}?ack_wait=2s", server.address())).unwrap();
    let (confirmed, distinct, deliveries, failures) =
        rmicro::broker::testing::confirmed_messages_survive_a_restart(
            &redis,
            "orders",
            10_000,
            SubscribeOptions::default().queue("restart").concurrency(8),
            || async {
                server.stop();
                tokio::time::sleep(Duration::from_secs(1)).await;
                server.resume().await.expect("redis-server restarts");
            },
        )
        .await;
    eprintln!(
        "Redis restart with 10,000 in flight: {confirmed} confirmed, {distinct} distinct delivered, {deliveries} deliveries, {failures} publish attempts failed during the outage"
    );
}
