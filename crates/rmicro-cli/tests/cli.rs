//! The `rmicro` binary against a real greeter.

use std::process::Command;

async fn greeter() -> (rmicro::Service, rmicro::server::RunningServer) {
    let service = greeter::on_loopback()
        .registry(std::sync::Arc::new(rmicro::registry::MemoryRegistry::new()))
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
    let service = greeter::on_loopback()
        .version("1.2.3")
        .registry(registry)
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
    // Each endpoint's field trees, fields indented under their message.
    assert!(
        text.contains("  request  HelloRequest\n    name  string\n    count  int32\n  response  HelloReply\n    message  string\n"),
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

/// Runs `rmicro ARGS` off the runtime's threads: exit code, stdout, stderr.
async fn run_cli(args: &[&str]) -> (Option<i32>, String, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = rmicro(&args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn health_checks_every_node_of_a_service() {
    let dir = std::env::temp_dir().join(format!("rmicro-cli-health-{}", std::process::id()));
    let registry: rmicro::registry::SharedRegistry =
        std::sync::Arc::new(rmicro::registry::LocalRegistry::new(&dir));
    let mut servers = Vec::new();
    for _ in 0..2 {
        let service = greeter::on_loopback()
            .version("1.0.0")
            .registry(registry.clone())
            .build()
            .unwrap();
        servers.push(service.start().await.unwrap());
    }
    let d = dir.display().to_string();
    let local = ["--registry", "local", "--registry-address", d.as_str()];
    let (code, out, err) = run_cli(&[&["health", "greeter"][..], &local].concat()).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out.lines().filter(|l| l.ends_with("SERVING")).count(),
        2,
        "{out}"
    );

    // `bench` by name: connections spread over both nodes.
    let args = [
        &[
            "bench",
            "greeter",
            "Greeter.SayHello",
            r#"{"name":"r"}"#,
            "-n",
            "60",
            "-c",
            "4",
        ][..],
        &["--connections", "2", "--output", "json"],
        &local,
    ]
    .concat();
    let (code, out, err) = run_cli(&args).await;
    assert_eq!(code, Some(0), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["statuses"]["OK"], 60, "{report}");

    // A node that is registered but gone: reported, and the exit code says so.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let ghost =
        rmicro::registry::testing::record("greeter", "1.0.0", "greeter-ghost", &dead.to_string());
    registry
        .register(&ghost, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let args = [
        &["health", "greeter", "--output", "json", "--timeout", "2s"][..],
        &local,
    ]
    .concat();
    let (code, out, err) = run_cli(&args).await;
    assert_eq!(code, Some(1), "{out}{err}");
    let nodes: serde_json::Value = serde_json::from_str(&out).unwrap();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{out}");
    let ghost = nodes.iter().find(|n| n["id"] == "greeter-ghost").unwrap();
    assert_eq!(ghost["status"], "UNREACHABLE", "{out}");
    assert!(!ghost["detail"].as_str().unwrap().is_empty());
    assert_eq!(nodes.iter().filter(|n| n["status"] == "SERVING").count(), 2);
    assert!(
        err.contains("1 of 3 nodes of `greeter` do not serve"),
        "{err}"
    );

    // No such service: a sentence, exit 1.
    let (code, _, err) = run_cli(&[&["health", "nobody"][..], &local].concat()).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("service `nobody` has no nodes"), "{err}");
    for server in servers {
        assert!(server.stop().await);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_prints_each_reply_as_a_json_line() {
    let (_service, server) = greeter().await;
    let address = server.local_addr().to_string();
    let (code, out, err) = run_cli(&[
        "stream",
        "greeter",
        "Greeter.SayHelloStream",
        r#"{"name":"s","count":3}"#,
        "--address",
        &address,
    ])
    .await;
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["Hello s #1", "Hello s #2", "Hello s #3"]);

    // `--output text`: each reply indented, a blank line between; `call --output
    // json`: the reply on one line.
    let (code, out, err) = run_cli(&[
        "stream",
        "greeter",
        "Greeter.SayHelloStream",
        r#"{"name":"s","count":2}"#,
        "--address",
        &address,
        "--output",
        "text",
    ])
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        "{\n  \"message\": \"Hello s #1\"\n}\n\n{\n  \"message\": \"Hello s #2\"\n}\n"
    );
    let (code, out, err) = run_cli(&[
        "call",
        "greeter",
        "Greeter.SayHello",
        r#"{"name":"j"}"#,
        "--address",
        &address,
        "--output",
        "json",
    ])
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "{\"message\":\"Hello j\"}\n");

    // The handler's error: its detail, exit 1, nothing on stdout.
    let (code, out, err) = run_cli(&[
        "stream",
        "greeter",
        "Greeter.SayHelloStream",
        r#"{"name":"","count":3}"#,
        "--address",
        &address,
    ])
    .await;
    assert_eq!(code, Some(1));
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("name must not be empty"), "{err}");

    // A request that is not JSON: a sentence before any call.
    let (code, _, err) = run_cli(&[
        "stream",
        "greeter",
        "Greeter.SayHelloStream",
        "{name:",
        "--address",
        &address,
    ])
    .await;
    assert_eq!(code, Some(1));
    assert!(err.contains("is not valid JSON"), "{err}");
}

#[test]
fn completions_for_each_shell() {
    let bash = rmicro(&["completions", "bash"]);
    assert!(bash.status.success());
    let script = String::from_utf8_lossy(&bash.stdout).into_owned();
    for word in ["call", "stream", "health", "describe", "--registry-address"] {
        assert!(script.contains(word), "bash completion lacks {word}");
    }
    // bash itself parses it.
    let dir = std::env::temp_dir().join(format!("rmicro-completions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rmicro.bash");
    std::fs::write(&file, &script).unwrap();
    let parsed = Command::new("bash").arg("-n").arg(&file).status().unwrap();
    assert!(parsed.success(), "bash -n refused the script");
    let _ = std::fs::remove_dir_all(&dir);

    let zsh = rmicro(&["completions", "zsh"]);
    assert!(String::from_utf8_lossy(&zsh.stdout).starts_with("#compdef rmicro"));
    let fish = rmicro(&["completions", "fish"]);
    assert!(String::from_utf8_lossy(&fish.stdout).contains("complete -c rmicro"));
    let bad = rmicro(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_reports_counts_percentiles_and_statuses() {
    let (_service, server) = greeter().await;
    let address = server.local_addr().to_string();
    let (code, out, err) = run_cli(&[
        "bench",
        "greeter",
        "Greeter.SayHello",
        r#"{"name":"b"}"#,
        "-n",
        "300",
        "-c",
        "8",
        "--connections",
        "2",
        "--address",
        &address,
        "--output",
        "json",
    ])
    .await;
    assert_eq!(code, Some(0), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["count"], 300);
    assert_eq!(report["statuses"]["OK"], 300);
    assert_eq!(report["connections"], 2);
    // The greeter answers reflection: the request goes as protobuf, as real clients send it.
    assert_eq!(report["encoding"], "protobuf");
    let latency = &report["latency_ms"];
    let at = |k: &str| latency[k].as_f64().unwrap();
    assert!(
        at("min") <= at("p50") && at("p50") <= at("p99") && at("p99") <= at("max"),
        "{latency}"
    );
    assert!(report["rps"].as_f64().unwrap() > 0.0);
    let counted: u64 = report["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 300, "every call in one bucket");

    // Calls the handler refuses are counted by their code, with the detail.
    let (code, out, err) = run_cli(&[
        "bench",
        "greeter",
        "Greeter.SayHello",
        r#"{"name":""}"#,
        "-n",
        "20",
        "-c",
        "2",
        "--address",
        &address,
        "--output",
        "json",
    ])
    .await;
    assert_eq!(code, Some(0), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["statuses"]["INVALID_ARGUMENT"], 20, "{report}");
    assert!(
        report["errors"]["INVALID_ARGUMENT"]
            .as_str()
            .unwrap()
            .contains("name must not be empty")
    );

    // Paced: 40 calls at 100 a second take about 0.4 s, not the moment they would.
    let (code, out, _) = run_cli(&[
        "bench",
        "greeter",
        "Greeter.SayHello",
        r#"{"name":"p"}"#,
        "-n",
        "40",
        "-c",
        "4",
        "--rps",
        "100",
        "--address",
        &address,
        "--output",
        "json",
    ])
    .await;
    assert_eq!(code, Some(0));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(report["total_ms"].as_f64().unwrap() >= 350.0, "{report}");

    // A duration instead of a count; text output.
    let (code, out, _) = run_cli(&[
        "bench",
        "greeter",
        "Greeter.SayHello",
        r#"{"name":"z"}"#,
        "-z",
        "300ms",
        "-c",
        "2",
        "--address",
        &address,
    ])
    .await;
    assert_eq!(code, Some(0));
    for part in ["Requests/sec:", "Latency distribution:", "p99.9 in", "[OK]"] {
        assert!(out.contains(part), "{part} missing:\n{out}");
    }

    // An endpoint that does not exist: one sentence, no benchmark.
    let (code, out, err) = run_cli(&[
        "bench",
        "greeter",
        "Greeter.Nope",
        "{}",
        "-n",
        "10",
        "--address",
        &address,
    ])
    .await;
    assert_eq!(code, Some(1));
    assert!(out.is_empty());
    assert!(
        err.contains("the first call failed, so no benchmark"),
        "{err}"
    );
}

#[test]
fn help_documents_the_exit_codes() {
    let help = rmicro(&["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("Exit codes: 0"), "{text}");
    for command in ["bench", "stream", "health", "completions"] {
        assert!(text.contains(command), "{command} missing from --help");
    }
}
