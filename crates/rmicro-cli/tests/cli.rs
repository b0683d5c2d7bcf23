//! The `rmicro` binary against a real greeter.

use greeter::proto::GreeterServer;
use std::process::Command;

async fn greeter() -> (rmicro::Service, rmicro::server::RunningServer) {
    let service = rmicro::Service::builder("greeter")
        .address("127.0.0.1:0")
        .args(["greeter", "--log-level", "warn", "--registry", "memory"])
        .handle(GreeterServer::new(greeter::Greeter))
        .build()
        .unwrap();
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

#[tokio::test(flavor = "multi_thread")]
async fn services_describe_and_call_by_name_through_the_local_registry() {
    let dir = std::env::temp_dir().join(format!("rmicro-cli-{}", std::process::id()));
    let registry = std::sync::Arc::new(rmicro::registry::LocalRegistry::new(&dir));
    let d = dir.display().to_string();
    services_describe_and_call(registry, &["--registry", "local", "--registry-address", &d]).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn services_describe_and_call_by_name_through_etcd() {
    let Some(etcd) = rmicro::etcd::testing::EtcdServer::start_or_skip("cli through etcd").await
    else {
        return;
    };
    let address = etcd.address();
    let registry = std::sync::Arc::new(rmicro::etcd::EtcdRegistry::new(&address).unwrap());
    services_describe_and_call(
        registry,
        &["--registry", "etcd", "--registry-address", &address],
    )
    .await;
    // MICRO_REGISTRY / MICRO_REGISTRY_ADDRESS work as well as the flags.
    let out = Command::new(env!("CARGO_BIN_EXE_rmicro"))
        .arg("services")
        .env("MICRO_REGISTRY", "etcd")
        .env("MICRO_REGISTRY_ADDRESS", "127.0.0.1:1")
        .output()
        .expect("rmicro runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("etcd://127.0.0.1:1"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn services_describe_and_call_by_name_through_consul() {
    let consul = rmicro::consul::testing::ConsulDouble::start()
        .await
        .unwrap();
    let address = consul.address();
    let registry = std::sync::Arc::new(rmicro::consul::ConsulRegistry::new(&address).unwrap());
    services_describe_and_call(
        registry,
        &["--registry", "consul", "--registry-address", &address],
    )
    .await;
}

/// Runs `services`, `describe` and `call` with `flags` against a greeter registered
/// in `registry`.
async fn services_describe_and_call(registry: rmicro::registry::SharedRegistry, flags: &[&str]) {
    let service = rmicro::Service::builder("greeter")
        .version("1.2.3")
        .address("127.0.0.1:0")
        .registry(registry)
        .args(["greeter", "--log-level", "warn"])
        .handle(GreeterServer::new(greeter::Greeter))
        .build()
        .unwrap();
    let server = service.start().await.unwrap();
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_rmicro"))
            .args(args)
            .args(flags)
            .output()
            .expect("rmicro runs")
    };
    let services = cli(&["services"]);
    assert!(services.status.success());
    assert_eq!(String::from_utf8_lossy(&services.stdout).trim(), "greeter");

    let text = cli(&["describe", "greeter"]);
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(text.contains("version  1.2.3"), "{text}");
    assert!(text.contains(&server.local_addr().to_string()), "{text}");
    assert!(text.contains("endpoint Greeter.SayHello(HelloRequest{name string, count int32}) -> HelloReply{message string}"), "{text}");
    assert!(
        text.contains("Greeter.Chat") && text.contains("[stream]"),
        "{text}"
    );

    let json = cli(&["describe", "greeter", "--output", "json"]);
    let records: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(records[0]["name"], "greeter");
    assert_eq!(
        records[0]["nodes"][0]["address"],
        server.local_addr().to_string()
    );
    assert!(
        records[0]["nodes"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("greeter-")
    );

    let call = cli(&[
        "call",
        "greeter",
        "Greeter.SayHello",
        r#"{"name":"by name"}"#,
    ]);
    assert!(
        call.status.success(),
        "{}",
        String::from_utf8_lossy(&call.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&call.stdout).unwrap();
    assert_eq!(reply["message"], "Hello by name");

    let missing = cli(&["describe", "nobody"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("service `nobody` is not in registry")
    );
    assert!(server.stop().await);
    let gone = cli(&["services"]);
    assert_eq!(
        String::from_utf8_lossy(&gone.stdout).trim(),
        "",
        "deregistered on stop"
    );
}
