//! The breaker in a fleet of processes: a caller built from `--breaker` calls three
//! greeter processes by name through the local registry. Two are killed with
//! `kill -9`: the calls fail over to the third and succeed (the circuit stays closed).
//! The third is killed: the circuit opens and calls fail fast (their latency
//! measured). One greeter is started again: after the sleep window a single trial
//! reaches it, closes the circuit, and calls succeed again.

mod common;

use common::{ChildGuard, local_cluster, wait_for_nodes};
use greeter::proto::{GreeterClient, HelloRequest};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

fn greeter_process(flags: &[std::ffi::OsString]) -> ChildGuard {
    ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_greeter"))
            .args(["--server-address", "127.0.0.1:0", "--log-level", "error"])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("greeter starts"),
    )
}

/// Kills a greeter as `kill -9` does and reaps it (a zombie would still look alive
/// to the local registry).
fn kill_9(mut greeter: ChildGuard) {
    greeter.0.kill().expect("SIGKILL");
    greeter.0.wait().expect("reaped");
}

fn hello() -> HelloRequest {
    HelloRequest {
        name: "fleet".into(),
        count: 0,
    }
}

fn is_open(err: &rmicro::Error) -> bool {
    err.detail
        .starts_with("circuit open for greeter.Greeter.SayHello")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_fails_over_opens_when_all_die_and_closes_on_one_trial() {
    let (dir, registry, flags) = local_cluster("breaker-fleet");
    let mut greeters: Vec<ChildGuard> = (0..3).map(|_| greeter_process(&flags)).collect();
    wait_for_nodes(registry.as_ref(), 3).await;

    let mut args: Vec<std::ffi::OsString> = ["base", "--log-level", "error", "--breaker"]
        .iter()
        .map(Into::into)
        .collect();
    args.extend(["--breaker-sleep-window", "1s", "--client-retries", "2"].map(Into::into));
    args.extend(flags.iter().cloned());
    let caller = rmicro::Service::builder("base")
        .args(args)
        .build()
        .expect("valid flags");
    let greeter = GreeterClient::new("greeter", caller.client().clone());
    let selector = caller.client().selector().expect("a registry").clone();

    // All three serve.
    for _ in 0..30 {
        let reply = greeter.say_hello(hello()).await.expect("three nodes serve");
        assert_eq!(reply.message, "Hello fleet");
    }

    // Two killed: every call still succeeds, on the survivor (within the volume
    // threshold the circuit never sees a failure worth opening for).
    kill_9(greeters.remove(0));
    kill_9(greeters.remove(0));
    let mut after_kill = 0;
    for _ in 0..60 {
        greeter
            .say_hello(hello())
            .await
            .expect("the survivor answers after two nodes were killed");
        after_kill += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(after_kill, 60);

    // All killed: calls fail until the window's failures reach the threshold, then
    // the circuit opens.
    kill_9(greeters.remove(0));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut failed_before_open = 0;
    loop {
        assert!(Instant::now() < deadline, "the circuit never opened");
        let err = greeter
            .say_hello(hello())
            .await
            .expect_err("no greeter is alive");
        assert_eq!(err.grpc_code(), rmicro::Code::Unavailable, "{err:?}");
        if is_open(&err) {
            break;
        }
        failed_before_open += 1;
    }
    assert!(
        failed_before_open >= 20,
        "opened after {failed_before_open} failures, under the volume threshold"
    );

    // Open: each call fails fast, naming the circuit, without any I/O.
    let mut latencies = Vec::new();
    for _ in 0..200 {
        let started = std::time::Instant::now();
        let err = greeter.say_hello(hello()).await.expect_err("open");
        latencies.push(started.elapsed());
        assert!(is_open(&err), "{err:?}");
        assert_eq!(err.id, "base");
    }
    latencies.sort();
    let (p50, p99, max) = (latencies[100], latencies[198], latencies[199]);
    println!(
        "{failed_before_open} failures opened the circuit; open calls: p50 {p50:?}, p99 {p99:?}, max {max:?}"
    );
    assert!(
        p50 < Duration::from_millis(1),
        "an open circuit took {p50:?} a call (p50), not under 1 ms"
    );

    // One greeter comes back. Once the caller's selector sees it, the first call
    // after the sleep window is the trial: it succeeds and closes the circuit.
    let restarted = greeter_process(&flags);
    wait_for_nodes(registry.as_ref(), 1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while selector.nodes("greeter").await.map_or(0, |n| n.len()) != 1 {
        assert!(
            Instant::now() < deadline,
            "the caller never saw the restarted node"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut refused_while_open = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        assert!(Instant::now() < deadline, "no trial closed the circuit");
        match greeter.say_hello(hello()).await {
            Ok(reply) => break reply,
            Err(err) => {
                assert!(is_open(&err), "the trial failed: {err:?}");
                refused_while_open += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert_eq!(reply.message, "Hello fleet");
    for _ in 0..20 {
        greeter
            .say_hello(hello())
            .await
            .expect("closed again: calls go through");
    }
    println!("{refused_while_open} calls failed fast before the trial closed the circuit");
    drop(restarted);
    let _ = std::fs::remove_dir_all(dir);
}
