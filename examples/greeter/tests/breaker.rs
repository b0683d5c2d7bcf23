//! The circuit breaker on a real client and real connections: `--breaker` on a
//! calling service; a node that accepts connections and answers none opens the
//! circuit, which then fails fast without dialling; after the sleep window one trial
//! reaches a healthy node and closes it.

mod common;

use common::start_with;
use greeter::proto::{self, HelloRequest};
use rmicro::registry::{MemoryRegistry, Node, Registry, Service};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A node that takes TCP connections and closes them at once, counting them.
async fn black_hole() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let address = listener.local_addr().expect("bound").to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (address, accepted)
}

fn record(id: &str, address: &str) -> Service {
    Service {
        name: "greeter".into(),
        version: "1.0.0".into(),
        nodes: vec![Node {
            id: id.into(),
            address: address.into(),
            metadata: Default::default(),
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn breaker_flag_opens_on_a_dead_node_fails_fast_and_a_trial_closes_it() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let (hole, accepted) = black_hole().await;
    let dead = record("greeter-dead", &hole);
    registry
        .register(&dead, Duration::from_secs(60))
        .await
        .expect("register the dead node");
    let caller = rmicro::Service::builder("base")
        .args([
            "base",
            "--log-level",
            "warn",
            "--breaker",
            "--breaker-volume",
            "4",
            "--breaker-sleep-window",
            "500ms",
            "--client-retries",
            "0",
        ])
        .registry(registry.clone())
        .build()
        .expect("valid flags");
    let greeter = proto::GreeterClient::new("greeter", caller.client().clone());
    let hello = || HelloRequest {
        name: "ann".into(),
        count: 0,
    };

    // Four calls reach the dead node and fail: the circuit opens.
    for _ in 0..4 {
        let err = greeter
            .say_hello(hello())
            .await
            .expect_err("the node is dead");
        assert_eq!(err.grpc_code(), rmicro::Code::Unavailable, "{err:?}");
        assert!(!err.detail.starts_with("circuit open"), "{err:?}");
    }
    let dialled = accepted.load(Ordering::SeqCst);
    assert!(dialled >= 1, "the calls reached the node");

    // Open: calls fail at once, with who refused and why, and dial nothing.
    for _ in 0..10 {
        let err = greeter.say_hello(hello()).await.expect_err("open");
        assert_eq!(err.grpc_code(), rmicro::Code::Unavailable);
        assert_eq!(err.id, "base");
        assert!(
            err.detail.starts_with(
                "circuit open for greeter.Greeter.SayHello: 4 of 4 calls failed in the last 10 s; next trial in"
            ),
            "{err:?}"
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        dialled,
        "an open circuit dialled"
    );

    // A healthy node replaces the dead one; after the sleep window one trial gets
    // through, succeeds and closes the circuit.
    let reg = registry.clone();
    let (_service, server) = start_with(greeter::Greeter, move |b| b.registry(reg)).await;
    registry
        .deregister(&dead)
        .await
        .expect("deregister the dead node");
    // (Until the caller's registry watch drops the dead node, a trial may still go
    // there, fail, and open the circuit for another window.)
    let mut replies = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while replies == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the circuit never closed"
        );
        match greeter.say_hello(hello()).await {
            Ok(reply) => {
                assert_eq!(reply.message, "Hello ann");
                replies += 1;
            }
            Err(err) => {
                assert_eq!(err.grpc_code(), rmicro::Code::Unavailable, "{err:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    for _ in 0..5 {
        greeter
            .say_hello(hello())
            .await
            .expect("closed: calls go through");
    }
    drop(server);
}

/// Reads Server-Sent Events as the SSE spec defines them (fields `data:`, lines
/// starting `:` are comments, a blank line ends an event) from a raw HTTP/1.1
/// connection, independent of the server's code.
struct EventReader {
    body: hyper::body::Incoming,
    buffer: String,
}

impl EventReader {
    async fn open(address: std::net::SocketAddr, path: &str) -> (http::StatusCode, Self) {
        let socket = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect to the stream");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(socket))
                .await
                .expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        let request = http::Request::get(path)
            .header(http::header::HOST, address.to_string())
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("a valid request");
        let response = sender.send_request(request).await.expect("a response");
        let status = response.status();
        (
            status,
            EventReader {
                body: response.into_body(),
                buffer: String::new(),
            },
        )
    }

    /// The next block (up to a blank line) as it arrived.
    async fn next_block(&mut self) -> String {
        use http_body_util::BodyExt;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                return self.buffer.drain(..end + 2).collect();
            }
            let frame = self
                .body
                .frame()
                .await
                .expect("the stream stays open")
                .expect("a frame");
            if let Ok(data) = frame.into_data() {
                self.buffer
                    .push_str(std::str::from_utf8(&data).expect("UTF-8 events"));
            }
        }
    }

    /// The next event's data, parsed as JSON; blocks without data (pings) are skipped.
    async fn next_event(&mut self) -> serde_json::Value {
        loop {
            let block = self.next_block().await;
            let data: Vec<&str> = block
                .lines()
                .filter_map(|line| {
                    line.strip_prefix("data:")
                        .map(|d| d.strip_prefix(' ').unwrap_or(d))
                })
                .collect();
            if !data.is_empty() {
                return serde_json::from_str(&data.join("\n")).expect("each event is JSON");
            }
        }
    }
}

#[tokio::test]
async fn the_hystrix_stream_shows_each_circuit_as_the_dashboard_reads_it() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let reg = registry.clone();
    let (_service, server) = start_with(greeter::Greeter, move |b| b.registry(reg)).await;
    let (hole, _) = black_hole().await;
    let caller = rmicro::Service::builder("base")
        .args([
            "base".to_owned(),
            "--log-level".into(),
            "warn".into(),
            "--breaker".into(),
            "--client-retries".into(),
            "0".into(),
            "--hystrix-stream-address".into(),
            "127.0.0.1:0".into(),
            "--client-route".into(),
            format!("dead={hole}"),
        ])
        .registry(registry.clone())
        .build()
        .expect("valid flags");
    let stream = caller.hystrix_stream_addr().expect("the stream is served");

    // Before any call: no circuit, a ping.
    let (status, mut idle) = EventReader::open(stream, "/hystrix.stream").await;
    assert_eq!(status, http::StatusCode::OK);
    let first = tokio::time::timeout(Duration::from_secs(5), idle.next_block())
        .await
        .expect("a block within a second");
    assert_eq!(first, "ping: \n\n");
    let (status, _) = EventReader::open(stream, "/metrics").await;
    assert_eq!(status, http::StatusCode::NOT_FOUND);

    let hello = |name: &str| HelloRequest {
        name: name.into(),
        count: 0,
    };
    let greeter = proto::GreeterClient::new("greeter", caller.client().clone());
    for _ in 0..3 {
        greeter
            .say_hello(hello("ann"))
            .await
            .expect("a healthy node");
    }
    // The caller's own mistake: answered, not a failure of the callee.
    greeter
        .say_hello(hello(""))
        .await
        .expect_err("an empty name is refused");
    let dead = proto::GreeterClient::new("dead", caller.client().clone());
    for _ in 0..2 {
        dead.say_hello(hello("ann")).await.expect_err("a dead node");
    }

    // Two listeners at once; each sees both circuits with their counts.
    let (_, mut first) = EventReader::open(stream, "/hystrix.stream").await;
    let (_, mut second) = EventReader::open(stream, "/hystrix.stream").await;
    for reader in [&mut first, &mut second] {
        let mut seen = std::collections::BTreeMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while seen.len() < 4 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "events seen: {seen:?}"
            );
            let event = tokio::time::timeout(Duration::from_secs(5), reader.next_event())
                .await
                .expect("an event each second");
            let key = format!("{} {}", event["type"], event["name"]);
            seen.insert(key, event);
        }
        let ok = &seen[r#""HystrixCommand" "greeter.Greeter.SayHello""#];
        assert_eq!(ok["group"], "greeter");
        assert_eq!(ok["requestCount"], 4);
        assert_eq!(ok["errorCount"], 0);
        assert_eq!(ok["rollingCountSuccess"], 4);
        assert_eq!(ok["isCircuitBreakerOpen"], false);
        assert_eq!(ok["propertyValue_circuitBreakerRequestVolumeThreshold"], 20);
        assert_eq!(
            ok["propertyValue_circuitBreakerSleepWindowInMilliseconds"],
            5000
        );
        assert_eq!(
            ok["propertyValue_executionIsolationThreadTimeoutInMilliseconds"],
            1000
        );
        assert_eq!(ok["reportingHosts"], 1);
        assert!(ok["latencyExecute"]["99.5"].is_u64(), "{ok}");
        assert!(
            ok["currentTime"]
                .as_u64()
                .is_some_and(|t| t > 1_700_000_000_000)
        );
        let failing = &seen[r#""HystrixCommand" "dead.Greeter.SayHello""#];
        assert_eq!(failing["rollingCountFailure"], 2);
        assert_eq!(failing["errorPercentage"], 100);
        assert_eq!(
            failing["isCircuitBreakerOpen"], false,
            "under the volume of 20"
        );
        let pool = &seen[r#""HystrixThreadPool" "dead.Greeter.SayHello""#];
        assert_eq!(pool["currentMaximumPoolSize"], 10);
        assert!(seen.contains_key(r#""HystrixThreadPool" "greeter.Greeter.SayHello""#));
    }
    // The first listener keeps getting events after the calls: it now sees data.
    let later = tokio::time::timeout(Duration::from_secs(5), idle.next_event())
        .await
        .expect("an event each second");
    assert!(later["type"].is_string(), "{later}");
    drop(server);
}
