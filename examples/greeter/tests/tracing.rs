//! Tracing over OTLP, checked by a receiver built on OpenTelemetry's published
//! protocol types (Python's `opentelemetry-proto` with grpcio: `interop/otlp_receiver.py`),
//! not on rmicro's code: a chain caller → front → greeter plus a publish consumed by
//! a third service is one trace with the right parents and kinds; the shipped
//! greeter joins a Jaeger `uber-trace-id` trace, starts a fresh one for a garbage
//! `traceparent`, and flushes its queued spans when it stops.

mod common;

use common::{ChildGuard, python, repo_root};
use greeter::proto::{GreeterClient, GreeterServer, HelloReply, HelloRequest};
use rmicro::broker::SubscribeOptions;
use rmicro::broker::typed::Event;
use rmicro::testing::OtlpReceiver;
use rmicro::{Error, Request};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The OTLP receiver of `interop/otlp_receiver.py`, not rmicro's code.
fn receiver(python: &std::path::Path) -> OtlpReceiver {
    OtlpReceiver::start(python, &repo_root().join("interop/otlp_receiver.py"))
        .expect("the OTLP receiver prints its ports")
}

fn named<'a>(spans: &'a [Value], name: &str, kind: &str) -> &'a Value {
    let found: Vec<&Value> = spans
        .iter()
        .filter(|s| s["name"] == name && s["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} span {name} in {spans:#?}");
    found[0]
}

/// The front service: greets through the greeter behind it and announces it.
struct Front {
    client: rmicro::Client,
}

impl greeter::proto::Greeter for Front {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<HelloReply, Error> {
        // No tracing code here: the calls below join the handler's trace.
        let greeter = GreeterClient::new("greeter", self.client.clone());
        let reply = greeter.say_hello(request.into_message()).await?;
        self.client
            .publish_json("greeted", &serde_json::json!({ "message": reply.message }))
            .await?;
        Ok(reply)
    }

    async fn say_hello_stream(
        &self,
        _: Request<HelloRequest>,
        _: rmicro::ResponseSender<HelloReply>,
    ) -> Result<(), Error> {
        Err(Error::not_found("front", "not here"))
    }

    async fn collect(
        &self,
        _: Request<rmicro::RequestStream<HelloRequest>>,
    ) -> Result<HelloReply, Error> {
        Err(Error::not_found("front", "not here"))
    }

    async fn chat(
        &self,
        _: Request<rmicro::RequestStream<HelloRequest>>,
        _: rmicro::ResponseSender<HelloReply>,
    ) -> Result<(), Error> {
        Err(Error::not_found("front", "not here"))
    }
}

fn traced(
    name: &str,
    endpoint: &str,
    registry: &Arc<rmicro::registry::MemoryRegistry>,
) -> rmicro::ServiceBuilder {
    traced_with(name, endpoint, "grpc", registry)
}

fn traced_with(
    name: &str,
    endpoint: &str,
    protocol: &str,
    registry: &Arc<rmicro::registry::MemoryRegistry>,
) -> rmicro::ServiceBuilder {
    rmicro::Service::builder(name)
        .version("2.0.0")
        .address("127.0.0.1:0")
        .registry(registry.clone())
        .args([
            name,
            "--log-level",
            "warn",
            "--tracing-endpoint",
            endpoint,
            "--tracing-protocol",
            protocol,
        ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_calls_and_a_publish_is_one_trace() {
    let Some(python) = python() else { return };
    let receiver = receiver(&python);
    let endpoint = format!("http://127.0.0.1:{}", receiver.grpc);
    let registry = Arc::new(rmicro::registry::MemoryRegistry::new());

    let back = traced("greeter", &endpoint, &registry)
        .handle(GreeterServer::new(greeter::Greeter))
        .build()
        .unwrap();
    let back_server = back.start().await.unwrap();

    let audit = traced("audit", &endpoint, &registry)
        .handle(GreeterServer::new(greeter::Greeter))
        .build()
        .unwrap();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    audit
        .subscribe_json(
            "greeted",
            SubscribeOptions::default(),
            move |event: Event<Value>| {
                let seen = seen_tx.clone();
                async move {
                    let _ = seen.send(event.message()["message"].to_string());
                    Ok(())
                }
            },
        )
        .await
        .unwrap();
    let audit_server = audit.start().await.unwrap();

    let front = traced("front", &endpoint, &registry).build().unwrap();
    front
        .handle(GreeterServer::new(Front {
            client: front.client().clone(),
        }))
        .unwrap();
    let front_server = front.start().await.unwrap();

    // The caller: a client of its own, tracing too.
    let caller = traced("caller", &endpoint, &registry).build().unwrap();
    let reply = GreeterClient::new("front", caller.client().clone())
        .say_hello(HelloRequest {
            name: "trace".into(),
            count: 0,
        })
        .await
        .expect("the chain answers");
    assert_eq!(reply.message, "Hello trace");
    let delivered = tokio::time::timeout(Duration::from_secs(20), seen_rx.recv())
        .await
        .expect("the event is delivered");
    assert_eq!(delivered.as_deref(), Some("\"Hello trace\""));

    for service in [&caller, &front, &back, &audit] {
        assert!(
            service
                .tracing()
                .unwrap()
                .flush(Duration::from_secs(10))
                .await
        );
    }
    // caller CLIENT, front SERVER, front CLIENT, greeter SERVER, PRODUCER, CONSUMER.
    let spans = receiver.wait_for(6, Duration::from_secs(30)).await;
    let root = spans
        .iter()
        .find(|s| s["kind"] == "SPAN_KIND_CLIENT" && s["resource"]["service.name"] == "caller")
        .expect("the caller's CLIENT span");
    let front_span = spans
        .iter()
        .find(|s| s["kind"] == "SPAN_KIND_SERVER" && s["resource"]["service.name"] == "front")
        .expect("front's SERVER span");
    let inner_call = spans
        .iter()
        .find(|s| s["kind"] == "SPAN_KIND_CLIENT" && s["resource"]["service.name"] == "front")
        .expect("front's CLIENT span to the greeter");
    let back_span = spans
        .iter()
        .find(|s| s["kind"] == "SPAN_KIND_SERVER" && s["resource"]["service.name"] == "greeter")
        .expect("the greeter's SERVER span");
    let publish = named(&spans, "publish greeted", "SPAN_KIND_PRODUCER");
    let process = named(&spans, "process greeted", "SPAN_KIND_CONSUMER");

    // One trace; each span the child of the one that caused it.
    let trace = root["trace_id"].as_str().unwrap();
    for span in [front_span, inner_call, back_span, publish, process] {
        assert_eq!(span["trace_id"], trace, "{span:#}");
    }
    assert_eq!(root["parent_span_id"], "", "the caller's span is the root");
    assert_eq!(front_span["parent_span_id"], root["span_id"]);
    assert_eq!(inner_call["parent_span_id"], front_span["span_id"]);
    assert_eq!(back_span["parent_span_id"], inner_call["span_id"]);
    assert_eq!(publish["parent_span_id"], front_span["span_id"]);
    assert_eq!(process["parent_span_id"], publish["span_id"]);

    // The semantic conventions, and go-micro's names.
    let a = &back_span["attributes"];
    assert_eq!(a["rpc.system"], "grpc");
    assert_eq!(a["rpc.service"], "greeter.v1.Greeter");
    assert_eq!(a["rpc.method"], "SayHello");
    assert_eq!(a["rpc.grpc.status_code"], 0);
    assert_eq!(a["micro.service"], "greeter");
    assert_eq!(a["micro.endpoint"], "greeter.Greeter.SayHello");
    assert_eq!(a["client.address"], "127.0.0.1");
    let c = &inner_call["attributes"];
    assert_eq!(c["server.address"], "127.0.0.1");
    assert_eq!(c["server.port"], back_server.local_addr().port() as i64);
    assert_eq!(c["micro.endpoint"], "greeter.Greeter.SayHello");
    assert_eq!(inner_call["events"][0]["name"], "attempt");
    assert_eq!(inner_call["events"][0]["attributes"]["rpc.attempt"], 1);
    assert_eq!(
        publish["attributes"]["messaging.destination.name"],
        "greeted"
    );
    assert_eq!(publish["attributes"]["messaging.operation.type"], "publish");
    assert_eq!(process["attributes"]["messaging.operation.type"], "process");
    assert_eq!(process["attributes"]["micro.delivery.attempt"], 1);
    // The resource: who sent it.
    let r = &back_span["resource"];
    assert_eq!(r["service.version"], "2.0.0");
    assert_eq!(r["service.instance.id"], back.node_id());
    assert_eq!(back_span["protocol"], "grpc");

    drop((front_server, audit_server, back_server));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_follow_the_grpc_rules_for_client_and_server_spans() {
    let Some(python) = python() else { return };
    let receiver = receiver(&python);
    let endpoint = format!("http://127.0.0.1:{}", receiver.http);
    let registry = Arc::new(rmicro::registry::MemoryRegistry::new());
    let back = traced_with("greeter", &endpoint, "http/protobuf", &registry)
        .handle(GreeterServer::new(greeter::Greeter))
        .build()
        .unwrap();
    let server = back.start().await.unwrap();
    let caller = traced_with("caller", &endpoint, "http/protobuf", &registry)
        .build()
        .unwrap();
    let greeter = GreeterClient::new("greeter", caller.client().clone());
    // INVALID_ARGUMENT: the caller's failure, not the server's.
    let err = greeter
        .say_hello(HelloRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, 400);
    // A stream: its span lasts to the end and counts the messages.
    let mut stream = greeter
        .say_hello_stream(HelloRequest {
            name: "s".into(),
            count: 5,
        })
        .await
        .unwrap();
    let mut n = 0;
    while stream.message().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 5);
    for service in [&caller, &back] {
        assert!(
            service
                .tracing()
                .unwrap()
                .flush(Duration::from_secs(10))
                .await
        );
    }
    let spans = receiver.wait_for(4, Duration::from_secs(30)).await;
    let side = |kind: &str, method: &str| {
        spans
            .iter()
            .find(|s| s["kind"] == kind && s["attributes"]["rpc.method"] == method)
            .unwrap_or_else(|| panic!("{kind} {method} in {spans:#?}"))
            .clone()
    };
    let client = side("SPAN_KIND_CLIENT", "SayHello");
    let server_span = side("SPAN_KIND_SERVER", "SayHello");
    assert_eq!(client["status"]["code"], "STATUS_CODE_ERROR");
    assert_eq!(client["status"]["message"], "name must not be empty");
    assert_eq!(client["attributes"]["rpc.grpc.status_code"], 3);
    assert_eq!(client["attributes"]["error.type"], "INVALID_ARGUMENT");
    assert_eq!(
        server_span["status"]["code"], "STATUS_CODE_UNSET",
        "{server_span:#}"
    );
    assert_eq!(server_span["attributes"]["rpc.grpc.status_code"], 3);
    let streamed = side("SPAN_KIND_SERVER", "SayHelloStream");
    assert_eq!(streamed["attributes"]["micro.messages.sent"], 5);
    assert_eq!(streamed["attributes"]["micro.messages.received"], 1);
    let streamed_client = side("SPAN_KIND_CLIENT", "SayHelloStream");
    assert_eq!(streamed_client["attributes"]["micro.messages.received"], 5);
    assert_eq!(streamed["protocol"], "http", "exported over OTLP/HTTP");
    drop(server);
}

/// The shipped greeter, its log lines kept as it writes them.
struct Greeter;

type Logged = Arc<Mutex<Vec<String>>>;

impl Greeter {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> (ChildGuard, Logged) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_greeter"))
            .args(["--server-address", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("greeter starts");
        let stderr = child.stderr.take().expect("piped");
        let logged = Logged::default();
        let kept = logged.clone();
        std::thread::spawn(move || {
            for line in
                std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok)
            {
                kept.lock().unwrap().push(line);
            }
        });
        (ChildGuard(child), logged)
    }

    /// The word after `marker` in the first line that has it (an address).
    fn logged_after(logged: &Logged, marker: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let found = logged.lock().unwrap().iter().find_map(|line| {
                let rest = line.split(marker).nth(1)?;
                Some(rest.split(['"', ' ']).next()?.to_owned())
            });
            if let Some(found) = found {
                return found;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no `{marker}` in {:#?}",
                logged.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// An exporter stuck on a collector that never answers drops spans beyond its
/// queue, counts them on `/metrics`, and never holds a call up: every call is
/// answered.
#[test]
fn a_stuck_collector_drops_and_counts_spans_and_calls_go_on() {
    let Some(python) = python() else { return };
    // Accepts connections and never answers.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_url = format!("http://{}", hole.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in hole.incoming().map_while(Result::ok) {
            held.push(stream);
        }
    });
    let (_child, logged) = Greeter::spawn(
        &["--metrics-address", "127.0.0.1:0", "--log-level", "info"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", hole_url.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "2"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "600000"),
        ],
    );
    let address = Greeter::logged_after(&logged, "Listening on ");
    let metrics = Greeter::logged_after(&logged, "Prometheus metrics at ");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = GreeterClient::new(
            "greeter",
            rmicro::Client::default().with_route("greeter", address.clone()),
        );
        for i in 0..50 {
            let reply = client
                .say_hello(HelloRequest {
                    name: format!("n{i}"),
                    count: 0,
                })
                .await
                .expect("answered while the exporter is stuck");
            assert_eq!(reply.message, format!("Hello n{i}"));
        }
    });
    // Spans beyond the queue (and the batch being exported) dropped and counted.
    let output = Command::new(&python)
        .arg(repo_root().join("interop/scrape_metrics.py"))
        .arg(&metrics)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let scraped: Value = serde_json::from_slice(&output.stdout).unwrap();
    let dropped = scraped["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "micro_tracing_spans_dropped_total")
        .expect("the dropped-spans counter");
    assert_eq!(dropped["labels"]["micro_name"], "greeter");
    // Two queued, plus one in the stuck export if the exporter's tick came
    // while the calls were being made (it looks every 5 to 50 ms).
    let value = dropped["value"].as_f64().unwrap_or(-1.0);
    assert!((47.0..=48.0).contains(&value), "{dropped}");
}

/// The shipped greeter, configured by OpenTelemetry's environment alone.
#[test]
fn the_greeter_binary_joins_jaeger_traces_ignores_garbage_and_flushes_on_stop() {
    let Some(python) = python() else { return };
    let receiver = receiver(&python);
    let receiver_url = format!("http://127.0.0.1:{}", receiver.http);
    let (mut child, logged) = Greeter::spawn(
        &["--server-grace-period", "5s", "--log-format", "ecs"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver_url.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
            // An hour: only the flush at shutdown can send these spans.
            ("OTEL_BSP_SCHEDULE_DELAY", "3600000"),
        ],
    );
    let address = Greeter::logged_after(&logged, "Listening on ");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let jaeger_trace = "00000000000000000000000000abcdef";
    runtime.block_on(async {
        let client = rmicro::Client::default().with_route("greeter", address.clone());
        let call = |metadata: (&'static str, &'static str)| {
            let client = client.clone();
            async move {
                client
                    .call_json(
                        "greeter",
                        "Greeter.SayHello",
                        r#"{"name": "jaeger"}"#,
                        rmicro::CallOptions::new().metadata(metadata.0, metadata.1),
                    )
                    .await
            }
        };
        call(("uber-trace-id", "abcdef:1234:0:1"))
            .await
            .expect("a Jaeger caller is served");
        call(("traceparent", "00-garbage-garbage-01"))
            .await
            .expect("a garbage header is not an error");
        // A failure is logged, and its ECS line names the trace it belongs to.
        let failed = client
            .call_json(
                "greeter",
                "Greeter.SayHello",
                r#"{"name": ""}"#,
                rmicro::CallOptions::new().metadata("uber-trace-id", "abcdef:5678:0:1"),
            )
            .await
            .unwrap_err();
        assert_eq!(failed.code, 400);
    });
    assert!(receiver.spans().is_empty(), "nothing sent before the stop");
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(child.0.wait().unwrap().success(), "a clean exit");
    let spans = runtime.block_on(receiver.wait_for(3, Duration::from_secs(30)));
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let joined = spans
        .iter()
        .find(|s| s["trace_id"] == jaeger_trace && s["parent_span_id"] == "0000000000001234")
        .expect("the uber-trace-id caller's trace was joined");
    let failed = spans
        .iter()
        .find(|s| s["parent_span_id"] == "0000000000005678")
        .expect("the failed call's span");
    let request_log: Value = logged
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "call failed")
        .expect("the failure's request log");
    assert_eq!(request_log["trace.id"], jaeger_trace);
    assert_eq!(
        request_log["span.id"], failed["span_id"],
        "the handler's span"
    );
    assert_eq!(request_log["micro.endpoint"], "greeter.Greeter.SayHello");
    assert_eq!(joined["parent_span_id"], "0000000000001234");
    assert_eq!(joined["kind"], "SPAN_KIND_SERVER");
    let fresh = spans
        .iter()
        .find(|s| s["trace_id"] != jaeger_trace)
        .expect("the garbage caller's span");
    assert_eq!(fresh["parent_span_id"], "", "a new root trace");
    assert_eq!(fresh["trace_id"].as_str().unwrap().len(), 32);
    let r = &joined["resource"];
    assert_eq!(r["service.name"], "greeter");
    assert_eq!(r["service.version"], "1.0.0");
    assert!(
        r["service.instance.id"]
            .as_str()
            .unwrap()
            .starts_with("greeter-")
    );
    assert_eq!(r["deployment.environment"], "test");
    assert_eq!(joined["scope"], "rmicro");
}
