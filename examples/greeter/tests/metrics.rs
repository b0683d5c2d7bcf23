//! `--metrics-address`: the greeter's calls, handled and made, counted with
//! go-micro's metric names and scraped over HTTP by Prometheus's own Python parser.

mod common;

use common::{python, repo_root, start_with};
use greeter::proto::{GreeterClient, HelloRequest};
use std::process::Command;
use std::time::Duration;

fn hello(name: &str) -> HelloRequest {
    HelloRequest {
        name: name.into(),
        count: 0,
    }
}

/// The greeter with `--metrics-address` on a free port, and `extra` flags.
async fn start_measured_with(extra: &[&str]) -> (rmicro::Service, rmicro::server::RunningServer) {
    let mut args = vec![
        "greeter",
        "--log-level",
        "warn",
        "--metrics-address",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    start_with(greeter::Greeter, |b| b.args(args)).await
}

/// The greeter with `--metrics-address` on a free port.
async fn start_measured() -> (rmicro::Service, rmicro::server::RunningServer) {
    start_measured_with(&[]).await
}

/// The endpoint's samples, parsed by `prometheus_client`.
async fn scrape(python: &std::path::Path, url: &str) -> serde_json::Value {
    scrape_as(python, url, false).await
}

/// The same, in OpenMetrics when `openmetrics` (asked for in `Accept`, parsed strictly).
async fn scrape_as(python: &std::path::Path, url: &str, openmetrics: bool) -> serde_json::Value {
    let (python, url) = (python.to_owned(), url.to_owned());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(repo_root().join("interop/scrape_metrics.py"))
            .arg(url)
            .args(openmetrics.then_some("--openmetrics"))
            .output()
            .expect("python runs")
    })
    .await
    .expect("scrape task");
    assert!(
        output.status.success(),
        "scrape failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the scraper prints JSON")
}

/// The value of the one sample named `name` whose labels include `labels`.
fn value(scraped: &serde_json::Value, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = scraped["samples"]
        .as_array()?
        .iter()
        .filter(|s| s["name"] == name)
        .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .filter_map(|s| s["value"].as_f64())
        .collect();
    match matching.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_handled_and_made_are_counted_with_go_micros_names() {
    let Some(python) = python() else { return };
    let (service, server) = start_measured().await;
    let metrics = service.metrics_addr().expect("--metrics-address serves");
    let address = server.local_addr().to_string();

    // 5 successes and 2 caller mistakes from a plain client, 3 calls the service
    // makes itself (counted on both sides).
    let outside = GreeterClient::new(
        "greeter",
        rmicro::Client::default().with_route("greeter", address.clone()),
    );
    for _ in 0..5 {
        outside.say_hello(hello("ann")).await.expect("answers");
    }
    for _ in 0..2 {
        let err = outside.say_hello(hello("")).await.unwrap_err();
        assert_eq!(err.code, 400);
    }
    let inside = GreeterClient::new("greeter", service.client().with_route("greeter", address));
    for _ in 0..3 {
        inside.say_hello(hello("bob")).await.expect("answers");
    }

    let url = format!("http://{metrics}/metrics");
    let node = service.node_id().to_owned();
    let me = [
        ("micro_name", "greeter"),
        ("micro_version", "1.0.0"),
        ("micro_id", node.as_str()),
        ("micro_endpoint", "Greeter.SayHello"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut labels = me.to_vec();
        labels.extend_from_slice(extra);
        labels
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let scraped = loop {
        let scraped = scrape(&python, &url).await;
        let done = value(&scraped, "micro_request_duration_seconds_count", &me) == Some(10.0);
        if done {
            break scraped;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the 10 calls were never all counted: {scraped}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        scraped["content_type"], "text/plain; version=0.0.4; charset=utf-8",
        "Prometheus's text format"
    );
    let success = with(&[("micro_status", "success"), ("micro_code", "OK")]);
    assert_eq!(value(&scraped, "micro_request_total", &success), Some(8.0));
    let failure = with(&[
        ("micro_status", "failure"),
        ("micro_code", "INVALID_ARGUMENT"),
    ]);
    assert_eq!(value(&scraped, "micro_request_total", &failure), Some(2.0));
    assert_eq!(value(&scraped, "micro_requests_in_flight", &me), Some(0.0));
    // client_golang's default buckets, 5 ms to 10 s, and +Inf.
    let bounds: Vec<f64> = scraped["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter(|s| s["name"] == "micro_request_duration_seconds_bucket")
        .filter(|s| me.iter().all(|(k, v)| s["labels"][*k] == *v))
        .filter_map(|s| s["labels"]["le"].as_str()?.parse::<f64>().ok())
        .collect();
    let golang = [
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
        10.0,
        f64::INFINITY,
    ];
    assert_eq!(bounds, golang, "the buckets");

    // The calls the service made, with the callee as `micro_target`.
    let made = [
        ("micro_name", "greeter"),
        ("micro_id", node.as_str()),
        ("micro_target", "greeter"),
        ("micro_endpoint", "Greeter.SayHello"),
        ("micro_status", "success"),
    ];
    assert_eq!(
        value(&scraped, "micro_client_request_total", &made),
        Some(3.0)
    );
    assert_eq!(
        value(
            &scraped,
            "micro_client_request_duration_seconds_count",
            &made[..4]
        ),
        Some(3.0)
    );
    let info = [("micro_name", "greeter"), ("micro_id", node.as_str())];
    assert_eq!(value(&scraped, "micro_build_info", &info), Some(1.0));

    // Message sizes per call (payloads without framing): "ann"/"bob" requests are
    // 5 bytes, "Hello ann"/"Hello bob" replies 11, the 2 refused ones 0 and none.
    assert_eq!(
        value(&scraped, "micro_request_size_bytes_count", &me),
        Some(10.0)
    );
    assert_eq!(
        value(&scraped, "micro_request_size_bytes_sum", &me),
        Some(40.0)
    );
    assert_eq!(
        value(&scraped, "micro_response_size_bytes_sum", &me),
        Some(88.0)
    );
    assert_eq!(
        value(&scraped, "micro_client_request_size_bytes_sum", &made[..4]),
        Some(15.0)
    );
    assert_eq!(
        value(&scraped, "micro_client_response_size_bytes_sum", &made[..4]),
        Some(33.0)
    );

    // The same figures in OpenMetrics 1.0, through the client's strict parser.
    let open = scrape_as(&python, &url, true).await;
    assert_eq!(
        open["content_type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(value(&open, "micro_request_total", &success), Some(8.0));
    assert_eq!(value(&open, "micro_request_total", &failure), Some(2.0));
    assert_eq!(
        value(&open, "micro_request_duration_seconds_count", &me),
        Some(10.0)
    );
    assert_eq!(value(&open, "micro_client_request_total", &made), Some(3.0));
    assert!(
        value(&scraped, "process_start_time_seconds", &[]).is_some_and(|t| t > 1.6e9),
        "process metrics"
    );
}

#[tokio::test]
async fn the_metrics_endpoint_answers_only_get_metrics_and_a_taken_port_fails_the_build() {
    let (service, server) = start_measured().await;
    let address = service.metrics_addr().expect("served");
    // A family shows once it has a series: make one call.
    common::client_for(&server)
        .say_hello(hello("ann"))
        .await
        .expect("answers");
    let get = |path: &'static str| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut socket = tokio::net::TcpStream::connect(address)
            .await
            .expect("connects");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        socket.write_all(request.as_bytes()).await.expect("sends");
        let mut answer = String::new();
        socket.read_to_string(&mut answer).await.expect("reads");
        answer
    };
    let other = get("/nope").await;
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    assert!(other.contains("is at /metrics"), "{other}");
    let page = get("/metrics").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("# TYPE micro_request_total counter"),
        "{page}"
    );

    // The port is taken now: a second service cannot serve there, and says so.
    let taken = address.to_string();
    let err = rmicro::Service::builder("greeter")
        .args(["greeter", "--metrics-address", taken.as_str()])
        .registry(std::sync::Arc::new(rmicro::registry::MemoryRegistry::new()))
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("cannot serve the metrics on `{taken}`:")),
        "{err}"
    );
}

/// The value of the sample `name` with (at least) `labels` on a text-format page.
fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .find_map(|line| line.rsplit_once(' ')?.1.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_and_rate_limit_figures_are_on_the_page() {
    let (service, server) = start_measured_with(&[
        "--breaker",
        "--ratelimit-server",
        "1",
        "--server-max-concurrent",
        "8",
    ])
    .await;
    // The service calls itself through its breaker; its rate limit lets 1 a second in.
    let inside = GreeterClient::new(
        "greeter",
        service
            .client()
            .with_route("greeter", server.local_addr().to_string()),
    );
    let (mut answered, mut refused) = (0.0, 0.0);
    for _ in 0..6 {
        match inside.say_hello(hello("ann")).await {
            Ok(_) => answered += 1.0,
            Err(err) => {
                assert_eq!(err.code, 429, "{err}");
                refused += 1.0;
            }
        }
    }
    assert!(refused >= 4.0, "{refused} of 6 refused at 1/s");
    let page = service.metrics().expect("--metrics-address").encode();
    let limit = [("limit", "1/s"), ("scope", "global")];
    assert_eq!(
        sample(&page, "micro_ratelimit_rejected_total", &limit),
        Some(refused),
        "{page}"
    );
    let command = ("command", "greeter.Greeter.SayHello");
    let event = |e| [command, ("event", e)];
    assert_eq!(
        sample(&page, "micro_breaker_calls_total", &event("success")),
        Some(answered)
    );
    // RESOURCE_EXHAUSTED is a server-side fault: the breaker counts the refusals.
    assert_eq!(
        sample(&page, "micro_breaker_calls_total", &event("failure")),
        Some(refused)
    );
    assert_eq!(sample(&page, "micro_breaker_open", &[command]), Some(0.0));
    assert_eq!(
        sample(&page, "micro_breaker_in_flight", &[command]),
        Some(0.0)
    );
    assert!(
        page.contains("# TYPE micro_breaker_calls_total counter"),
        "{page}"
    );
}

/// Publishes and deliveries are counted per topic: successes, failures,
/// redeliveries and the dead letter of a message whose every delivery failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_publishes_deliveries_redeliveries_and_dead_letters_are_counted_per_topic() {
    use rmicro::broker::SubscribeOptions;
    use rmicro::broker::typed::Event;
    let Some(python) = python() else { return };
    let broker: rmicro::broker::SharedBroker =
        std::sync::Arc::new(rmicro::broker::MemoryBroker::new());
    let (service, server) = start_with(greeter::Greeter, |b| {
        b.args([
            "greeter",
            "--log-level",
            "error",
            "--metrics-address",
            "127.0.0.1:0",
        ])
        .broker(broker.clone())
    })
    .await;
    let handled = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = handled.clone();
    service
        .subscribe_json(
            "orders",
            SubscribeOptions::default().max_deliveries(2),
            move |event: Event<serde_json::Value>| {
                let seen = seen.clone();
                async move {
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if event.message()["bad"] == true {
                        return Err(rmicro::Error::bad_request("orders", "refused"));
                    }
                    Ok(())
                }
            },
        )
        .await
        .unwrap();
    let client = service.client();
    for order in [
        serde_json::json!({"id": 1}),
        serde_json::json!({"id": 2, "bad": true}),
        serde_json::json!({"id": 3}),
    ] {
        client.publish_json("orders", &order).await.unwrap();
    }
    // Two good deliveries, and the bad one twice (its second is the last).
    common::wait_until("four deliveries", Duration::from_secs(20), || {
        handled.load(std::sync::atomic::Ordering::SeqCst) >= 4
    })
    .await;
    let url = format!("http://{}/metrics", service.metrics_addr().unwrap());
    let topic = ("micro_topic", "orders");
    let expected = [
        (
            "micro_broker_published_total",
            vec![topic, ("micro_status", "success")],
            3.0,
        ),
        (
            "micro_broker_consumed_total",
            vec![topic, ("micro_status", "success")],
            2.0,
        ),
        (
            "micro_broker_consumed_total",
            vec![topic, ("micro_status", "failure")],
            2.0,
        ),
        ("micro_broker_redelivered_total", vec![topic], 1.0),
        ("micro_broker_dead_lettered_total", vec![topic], 1.0),
    ];
    // The last count lands just after the handler returns: wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let scraped = scrape(&python, &url).await;
        let got: Vec<Option<f64>> = expected
            .iter()
            .map(|(name, labels, _)| value(&scraped, name, labels))
            .collect();
        let want: Vec<Option<f64>> = expected.iter().map(|(_, _, v)| Some(*v)).collect();
        if got == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "got {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    service.unsubscribe_all().await;
    drop(server);
}
