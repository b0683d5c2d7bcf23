//! The `rmicro` binary against a real greeter.

use greeter::proto::GreeterServer;
use std::process::Command;

async fn greeter() -> (rmicro::Service, rmicro::server::RunningServer) {
    let service = rmicro::Service::builder("greeter")
        .address("127.0.0.1:0")
        .args(["greeter", "--log-level", "warn"])
        .build()
        .unwrap();
    service.handle(GreeterServer::new(greeter::Greeter));
    let server = service.start().await.unwrap();
    (service, server)
}

fn rmicro(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rmicro"))
        .args(args)
        .output()
        .expect("rmicro runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn call_prints_the_json_reply_and_fails_with_the_detail() {
    let (_service, server) = greeter().await;
    let address = server.local_addr().to_string();
    let a = address.clone();
    let ok = tokio::task::spawn_blocking(move || {
        rmicro(&[
            "call",
            "greeter",
            "Greeter.SayHello",
            r#"{"name":"cli"}"#,
            "--address",
            &a,
        ])
    })
    .await
    .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(reply["message"], "Hello cli");

    let a = address.clone();
    let bad = tokio::task::spawn_blocking(move || {
        rmicro(&[
            "call",
            "greeter",
            "Greeter.SayHello",
            r#"{"name":""}"#,
            "--address",
            &a,
        ])
    })
    .await
    .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("name must not be empty"));

    let a = address.clone();
    let health = tokio::task::spawn_blocking(move || {
        rmicro(&["health", "greeter.v1.Greeter", "--address", &a])
    })
    .await
    .unwrap();
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&health.stdout).trim(), "SERVING");
    let unknown = tokio::task::spawn_blocking(move || {
        rmicro(&["health", "nope.Nope", "--address", &address])
    })
    .await
    .unwrap();
    assert_eq!(unknown.status.code(), Some(1));
}

#[test]
fn bad_usage_exits_2() {
    let out = rmicro(&["call"]);
    assert_eq!(out.status.code(), Some(2));
}
