//! The metrics as a real Prometheus sees them: Debian's `prometheus` scrapes two
//! greeter processes started with `--metrics-address`; after a counted number of
//! calls, its HTTP API answers `sum(micro_request_total{micro_status="success"})` and
//! a `histogram_quantile` over `micro_request_duration_seconds` with what was made.

mod common;

use common::{ChildGuard, local_cluster, read_until, require, wait_for_nodes};
use greeter::proto::{GreeterClient, HelloRequest};
use rmicro::selector::{Selector, Strategy};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

fn prometheus() -> Option<PathBuf> {
    let found = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    require(
        found,
        "prometheus",
        "apt-get install -y prometheus (scripts/test does)",
    )
}

/// A greeter process serving metrics; its `/metrics` address, from its log.
fn greeter_with_metrics(flags: &[std::ffi::OsString]) -> (ChildGuard, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_greeter"))
        .args(["--server-address", "127.0.0.1:0", "--log-level", "info"])
        .args(["--metrics-address", "127.0.0.1:0"])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("greeter starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let address = read_until(stderr, Duration::from_secs(30), |line| {
        let rest = line.split_once("Prometheus metrics at http://")?.1;
        Some(rest.split_once("/metrics")?.0.to_owned())
    });
    (ChildGuard(child), address)
}

/// A port nobody listens on now (Prometheus cannot report the one it picked).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `GET path` over HTTP/1.0 (no chunking): the body.
async fn get(address: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
    socket.write_all(request.as_bytes()).await.ok()?;
    let mut answer = String::new();
    socket.read_to_string(&mut answer).await.ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_owned())
}

fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The single value an instant query returns, once it returns one.
async fn query(prometheus: &str, promql: &str) -> Option<f64> {
    let body = get(
        prometheus,
        &format!("/api/v1/query?query={}", encode(promql)),
    )
    .await?;
    let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = answer["data"]["result"].as_array()?;
    match result.as_slice() {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

/// Waits up to 60 s for `promql` to answer a value `accept` takes.
async fn wait_for(prometheus: &str, promql: &str, accept: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    loop {
        last = query(prometheus, promql).await.or(last);
        if let Some(value) = last
            && accept(value)
        {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never answered `{promql}` as expected; last: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_two_greeters_and_counts_what_was_called() {
    let Some(prometheus) = prometheus() else {
        return;
    };
    let (dir, registry, flags) = local_cluster("prometheus");
    let (_a, metrics_a) = greeter_with_metrics(&flags);
    let (_b, metrics_b) = greeter_with_metrics(&flags);
    wait_for_nodes(registry.as_ref(), 2).await;

    let port = free_port();
    let web = format!("127.0.0.1:{port}");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: greeter\n    static_configs:\n      \
             - targets: ['{metrics_a}', '{metrics_b}']\n"
        ),
    )
    .expect("write the scrape config");
    let _prometheus = ChildGuard(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts"),
    );

    // 40 successes and 6 caller mistakes, spread over both nodes by the selector.
    let selector = Arc::new(Selector::new(registry.clone(), Strategy::RoundRobin));
    let greeter = GreeterClient::new(
        "greeter",
        rmicro::Client::with_selector(Default::default(), selector),
    );
    let hello = |name: &str| HelloRequest {
        name: name.into(),
        count: 0,
    };
    for _ in 0..40 {
        greeter.say_hello(hello("ann")).await.expect("answers");
    }
    for _ in 0..6 {
        assert_eq!(greeter.say_hello(hello("")).await.unwrap_err().code, 400);
    }

    let success = r#"sum(micro_request_total{micro_status="success"})"#;
    assert_eq!(wait_for(&web, success, |v| v >= 40.0).await, 40.0);
    let failure =
        r#"sum(micro_request_total{micro_status="failure",micro_code="INVALID_ARGUMENT"})"#;
    assert_eq!(wait_for(&web, failure, |v| v >= 6.0).await, 6.0);
    let per_node = r#"count(micro_request_total{micro_status="success"} > 0)"#;
    assert_eq!(
        wait_for(&web, per_node, |v| v >= 2.0).await,
        2.0,
        "both nodes served and were scraped"
    );
    let all = "sum(micro_request_duration_seconds_count)";
    assert_eq!(wait_for(&web, all, |v| v >= 46.0).await, 46.0);
    // The greeter answers in well under 5 ms, the first bucket: the median lies in it.
    // (Over the buckets' totals: every call came before the first scrape, so their
    // increase over a window is zero.)
    let median = "histogram_quantile(0.5, sum by (le) (micro_request_duration_seconds_bucket))";
    let p50 = wait_for(&web, median, f64::is_finite).await;
    assert!(p50 > 0.0 && p50 <= 0.005, "p50 {p50} s");
    println!(
        "Prometheus: 40 successes, 6 failures, p50 {:.2} ms",
        p50 * 1000.0
    );
    let _ = std::fs::remove_dir_all(dir);
}
