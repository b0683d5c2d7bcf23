//! The server's rate limit on the shipped binary: `greeter --ratelimit-server 200`
//! under about 1,000 calls a second for 5 s admits 200 a second (± 10 %), refuses
//! the rest with `RESOURCE_EXHAUSTED` and the limit named, and no call hangs.

mod common;

use common::{ChildGuard, local_cluster, wait_for_nodes};
use greeter::proto::{GreeterClient, HelloRequest};
use rmicro::selector::{Selector, Strategy};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeter_ratelimit_server_200_admits_200_a_second_under_1000() {
    let (dir, registry, flags) = local_cluster("ratelimit");
    let _greeter = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_greeter"))
            .args(["--server-address", "127.0.0.1:0", "--log-level", "error"])
            .args(["--ratelimit-server", "200"])
            .args(&flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("greeter starts"),
    );
    wait_for_nodes(registry.as_ref(), 1).await;
    let selector = Arc::new(Selector::new(registry.clone(), Strategy::Random));
    let options = rmicro::client::ClientOptions {
        request_timeout: Duration::from_secs(5),
        retries: 0,
        ..Default::default()
    };
    let greeter = GreeterClient::new("greeter", rmicro::Client::with_selector(options, selector));
    // Warm the connection (and spend the first token) before the clock starts.
    greeter
        .say_hello(HelloRequest {
            name: "warm".into(),
            count: 0,
        })
        .await
        .expect("the first call is admitted");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // One call started every millisecond for 5 s, each awaited on its own task.
    let seconds = 5;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = tokio::time::Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let greeter = greeter.clone();
        calls.spawn(async move {
            greeter
                .say_hello(HelloRequest {
                    name: "load".into(),
                    count: 0,
                })
                .await
        });
    }
    let sent = calls.len();
    let (mut admitted, mut refused, mut other) = (0usize, 0usize, Vec::new());
    let all_done = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(result) = calls.join_next().await {
            match result.expect("a caller task") {
                Ok(_) => admitted += 1,
                Err(e) if e.grpc_code() == rmicro::Code::ResourceExhausted => {
                    assert_eq!(e.code, 429, "{e:?}");
                    assert_eq!(
                        e.detail, "too many requests: limit 200/s for greeter.Greeter.SayHello",
                        "{e:?}"
                    );
                    refused += 1;
                }
                Err(e) => other.push(e),
            }
        }
    })
    .await;
    assert!(
        all_done.is_ok(),
        "calls hung: {} never returned",
        calls.len()
    );
    assert!(
        other.is_empty(),
        "unexpected errors: {:?}",
        &other[..other.len().min(5)]
    );
    let elapsed = started.elapsed().as_secs_f64();
    let rate = admitted as f64 / seconds as f64;
    println!("sent {sent} in {elapsed:.2} s; admitted {admitted} ({rate:.1}/s), refused {refused}");
    assert!(
        sent >= 4_000,
        "the load was too light to test the limit: {sent} calls"
    );
    assert!(
        (180.0..=220.0).contains(&rate),
        "admitted {rate:.1}/s, not 200/s ± 10 %"
    );
    let _ = std::fs::remove_dir_all(dir);
}
