//! The greeter over real HTTP/2 with the typed client: all four kinds of call, errors,
//! metadata, deadlines, limits, wrappers, retries and shutdown.

mod common;

use common::{client_for, start_greeter, start_with, wait_until};
use futures_util::StreamExt;
use greeter::proto::{self, HelloReply, HelloRequest};
use rmicro::{Error, Request, RequestStream, ResponseSender};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn req(name: &str, count: i32) -> HelloRequest {
    HelloRequest {
        name: name.into(),
        count,
    }
}

#[tokio::test]
async fn all_four_kinds_of_call() {
    let (_service, server) = start_greeter().await;
    let client = client_for(&server);

    let reply = client.say_hello(req("ann", 0)).await.unwrap();
    assert_eq!(reply.message, "Hello ann");

    let mut stream = client.say_hello_stream(req("bo", 4)).await.unwrap();
    let mut got = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        got.push(r.message);
    }
    assert_eq!(
        got,
        ["Hello bo #1", "Hello bo #2", "Hello bo #3", "Hello bo #4"]
    );

    let names = ["a", "b", "c"].map(|n| req(n, 0));
    let reply = client
        .collect(futures_util::stream::iter(names.clone()))
        .await
        .unwrap();
    assert_eq!(reply.message, "Hello a, b, c");

    // Chat answers each message as it arrives: send one, read one.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut chat = client
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap();
    for name in ["x", "y"] {
        tx.send(req(name, 0)).await.unwrap();
        let reply = chat.message().await.unwrap().unwrap();
        assert_eq!(reply.message, format!("Hello {name}"));
    }
    drop(tx);
    assert!(chat.message().await.unwrap().is_none());
    assert!(server.stop().await);
}

#[tokio::test]
async fn errors_keep_id_code_and_detail_across_services() {
    let (_service, server) = start_greeter().await;
    let err = client_for(&server).say_hello(req("", 0)).await.unwrap_err();
    assert_eq!(err, Error::bad_request("greeter", "name must not be empty"));
    // A stream that fails part-way delivers what came before, then the error.
    let mut chat = client_for(&server)
        .chat(futures_util::stream::iter([req("ok", 0), req(" ", 0)]))
        .await
        .unwrap();
    assert_eq!(chat.message().await.unwrap().unwrap().message, "Hello ok");
    assert_eq!(chat.message().await.unwrap_err().code, 400);
}

/// A greeter whose replies report what the handler saw.
struct Inspector {
    cancelled: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    backend: Option<proto::GreeterClient>,
}

impl Inspector {
    fn new() -> Self {
        Inspector {
            cancelled: Arc::new(AtomicBool::new(false)),
            calls: Arc::new(AtomicUsize::new(0)),
            backend: None,
        }
    }
}

/// Sets a flag when dropped before being disarmed: proves a handler was cancelled.
struct CancelFlag(Arc<AtomicBool>, bool);
impl Drop for CancelFlag {
    fn drop(&mut self) {
        if !self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

impl proto::Greeter for Inspector {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<HelloReply, Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match request.message().name.as_str() {
            "metadata" => Ok(HelloReply {
                message: format!(
                    "user={} trace={}",
                    request.metadata().get("x-user").unwrap_or("-"),
                    request.metadata().get("x-trace").unwrap_or("-")
                ),
            }),
            "deadline" => Ok(HelloReply {
                message: request
                    .context()
                    .remaining()
                    .map_or("none".into(), |d| d.as_millis().to_string()),
            }),
            "forward" => {
                let backend = self.backend.as_ref().expect("backend configured");
                backend.say_hello(req("deadline", 0)).await
            }
            "sleep" => {
                let mut flag = CancelFlag(self.cancelled.clone(), false);
                tokio::time::sleep(Duration::from_secs(30)).await;
                flag.1 = true;
                Ok(HelloReply::default())
            }
            "unavailable" => Err(Error::unavailable("inspector", "try later")),
            other => Ok(HelloReply {
                message: format!("{} bytes", other.len()),
            }),
        }
    }

    async fn say_hello_stream(
        &self,
        _: Request<HelloRequest>,
        replies: ResponseSender<HelloReply>,
    ) -> Result<(), Error> {
        let _flag = CancelFlag(self.cancelled.clone(), false);
        loop {
            replies.send(HelloReply::default()).await?;
        }
    }

    async fn collect(&self, _: Request<RequestStream<HelloRequest>>) -> Result<HelloReply, Error> {
        Err(Error::not_implemented("inspector", "collect"))
    }

    async fn chat(
        &self,
        request: Request<RequestStream<HelloRequest>>,
        replies: ResponseSender<HelloReply>,
    ) -> Result<(), Error> {
        let _flag = CancelFlag(self.cancelled.clone(), false);
        let mut stream = request.into_message();
        while let Some(m) = stream.next().await {
            replies.send(HelloReply { message: m?.name }).await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn handlers_read_the_callers_metadata() {
    let (_service, server) = start_with(Inspector::new(), |b| b).await;
    let reply = client_for(&server)
        .say_hello(req("metadata", 0))
        .metadata("x-user", "ann")
        .metadata("X-Trace", "t-1")
        .await
        .unwrap();
    assert_eq!(reply.message, "user=ann trace=t-1");
    let err = client_for(&server)
        .say_hello(req("metadata", 0))
        .metadata("grpc-status", "0")
        .await
        .unwrap_err();
    assert_eq!(err.code, 400, "{err}");
}

#[tokio::test]
async fn the_handler_sees_the_deadline_and_is_cancelled_past_it() {
    let inspector = Inspector::new();
    let cancelled = inspector.cancelled.clone();
    let (_service, server) = start_with(inspector, |b| b).await;
    let client = client_for(&server);

    let reply = client
        .say_hello(req("deadline", 0))
        .timeout(Duration::from_millis(1500))
        .await
        .unwrap();
    let remaining: u64 = reply.message.parse().unwrap();
    assert!(
        remaining > 0 && remaining <= 1500,
        "remaining {remaining} ms"
    );

    let err = client
        .say_hello(req("sleep", 0))
        .timeout(Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(err.code, 408, "{err}");
    wait_until(
        "the sleeping handler is cancelled",
        Duration::from_secs(5),
        || cancelled.load(Ordering::SeqCst),
    )
    .await;
    wait_until("no call is in flight", Duration::from_secs(5), || {
        server.in_flight() == 0
    })
    .await;
}

#[tokio::test]
async fn a_deadline_propagates_to_calls_the_handler_makes() {
    let (_backend_service, backend) = start_with(Inspector::new(), |b| b).await;
    let mut front = Inspector::new();
    front.backend = Some(client_for(&backend));
    let (_front_service, front) = start_with(front, |b| b).await;
    let reply = client_for(&front)
        .say_hello(req("forward", 0))
        .timeout(Duration::from_millis(800))
        .await
        .unwrap();
    let remaining: u64 = reply.message.parse().unwrap();
    // The backend's client default is 5 s; it must have inherited the caller's 800 ms.
    assert!(
        remaining > 0 && remaining <= 800,
        "backend saw {remaining} ms"
    );
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_leaks_no_task() {
    let inspector = Inspector::new();
    let cancelled = inspector.cancelled.clone();
    let (_service, server) = start_with(inspector, |b| b).await;
    let client = client_for(&server);

    let mut stream = client
        .say_hello_stream(req("endless", 0))
        .timeout(Duration::from_secs(60))
        .await
        .unwrap();
    for _ in 0..3 {
        stream.message().await.unwrap().unwrap();
    }
    assert_eq!(server.in_flight(), 1);
    drop(stream);
    wait_until(
        "the server-streaming handler is dropped",
        Duration::from_secs(5),
        || cancelled.load(Ordering::SeqCst) && server.in_flight() == 0,
    )
    .await;

    cancelled.store(false, Ordering::SeqCst);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut chat = client
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .timeout(Duration::from_secs(60))
        .await
        .unwrap();
    tx.send(req("one", 0)).await.unwrap();
    assert_eq!(chat.message().await.unwrap().unwrap().message, "one");
    drop(chat);
    drop(tx);
    wait_until(
        "the bidi handler is dropped",
        Duration::from_secs(5),
        || cancelled.load(Ordering::SeqCst) && server.in_flight() == 0,
    )
    .await;
}

#[tokio::test]
async fn oversized_messages_are_resource_exhausted() {
    let (_service, server) = start_with(Inspector::new(), |b| b.max_message_size(64 * 1024)).await;
    let big = "x".repeat(100 * 1024);
    let err = client_for(&server)
        .say_hello(req(&big, 0))
        .await
        .unwrap_err();
    assert_eq!(err.code, 429, "{err}");
    assert_eq!(err.grpc_code(), rmicro::Code::ResourceExhausted);
    // Still serving, and a message under the limit passes.
    let ok = client_for(&server)
        .say_hello(req(&"y".repeat(1000), 0))
        .await
        .unwrap();
    assert_eq!(ok.message, "1000 bytes");
}

#[tokio::test]
async fn replies_far_bigger_than_the_first_reply_buffer_arrive_whole() {
    // The client's reply buffer starts small (512 bytes) and grows as a reply
    // arrives: a reply of 1.5 MiB, in many DATA frames, comes back byte for byte,
    // and so does a small one after it on the same connection.
    let (_service, server) = start_greeter().await;
    let client = client_for(&server);
    let name: String = (0..1_500_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let reply = client.say_hello(req(&name, 0)).await.unwrap();
    assert_eq!(reply.message.len(), "Hello ".len() + name.len());
    assert_eq!(reply.message, format!("Hello {name}"));
    let reply = client.say_hello(req("small", 0)).await.unwrap();
    assert_eq!(reply.message, "Hello small");
}

#[tokio::test]
async fn unknown_services_and_methods_are_unimplemented() {
    let (service, server) = start_greeter().await;
    let address = server.local_addr().to_string();
    let options = || rmicro::CallOptions::new().address(address.clone());
    let client = service.client();
    let err = client
        .call_json("greeter", "Greeter.Nope", "{}", options())
        .await
        .unwrap_err();
    assert_eq!(err.grpc_code(), rmicro::Code::Unimplemented);
    assert!(err.detail.contains("unknown method `Nope`"), "{err}");
    let err = client
        .call_json("greeter", "nope.v1.Nope.Call", "{}", options())
        .await
        .unwrap_err();
    assert_eq!(err.grpc_code(), rmicro::Code::Unimplemented);
    assert!(
        err.detail.contains("unknown service `nope.v1.Nope`"),
        "{err}"
    );
}

#[tokio::test]
async fn reflection_can_be_turned_off() {
    let reflect = "grpc.reflection.v1.ServerReflection.ServerReflectionInfo";
    for (args, served) in [
        (vec!["greeter", "--log-level", "warn"], true),
        (
            vec![
                "greeter",
                "--log-level",
                "warn",
                "--server-reflection=false",
            ],
            false,
        ),
    ] {
        let (service, server) = start_with(greeter::Greeter, |b| b.args(args)).await;
        let options = rmicro::CallOptions::new().address(server.local_addr().to_string());
        let err = service
            .client()
            .call_json("greeter", reflect, "{}", options)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            !err.contains("unknown service `grpc.reflection.v1.ServerReflection`"),
            served,
            "reflection served: {served}; {err}"
        );
    }
}

#[tokio::test]
async fn dynamic_json_calls_need_no_generated_types() {
    let (service, server) = start_greeter().await;
    let options = rmicro::CallOptions::new().address(server.local_addr().to_string());
    let reply = service
        .client()
        .call_json(
            "greeter",
            "Greeter.SayHello",
            r#"{"name": "json"}"#,
            options.clone(),
        )
        .await
        .unwrap();
    assert_eq!(reply, serde_json::json!({"message": "Hello json"}));
    let reply = service
        .client()
        .call_json(
            "greeter",
            "greeter.v1.Greeter.SayHello",
            r#"{"name": "full"}"#,
            options.clone(),
        )
        .await
        .unwrap();
    assert_eq!(reply["message"], "Hello full");
    // Wrong JSON for the message: INVALID_ARGUMENT naming the message type.
    let err = service
        .client()
        .call_json(
            "greeter",
            "Greeter.SayHello",
            r#"{"name": 5}"#,
            options.clone(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, 400, "{err}");
    assert!(err.detail.contains("greeter.v1.HelloRequest"), "{err}");
    let err = service
        .client()
        .call_json("greeter", "Greeter.SayHello", "{not json", options)
        .await
        .unwrap_err();
    assert_eq!(err.code, 400, "{err}");
}

/// A wrapper that records what it sees.
#[derive(Clone)]
struct Recorder {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}

impl<S> tower::Layer<S> for Recorder {
    type Service = RecorderService<S>;
    fn layer(&self, inner: S) -> RecorderService<S> {
        RecorderService {
            inner,
            me: self.clone(),
        }
    }
}

#[derive(Clone)]
struct RecorderService<S> {
    inner: S,
    me: Recorder,
}

impl<S> tower::Service<http::Request<rmicro::transport::Body>> for RecorderService<S>
where
    S: tower::Service<
            http::Request<rmicro::transport::Body>,
            Response = http::Response<rmicro::transport::Body>,
        > + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures_util::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<rmicro::transport::Body>) -> Self::Future {
        use rmicro::wrapper::DescribeCall;
        let (service, endpoint) = request.describe().expect("call info present");
        let user = request
            .headers()
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let me = self.me.clone();
        me.log.lock().unwrap().push(format!(
            "{} before {service} {endpoint} user={user}",
            me.name
        ));
        let fut = self.inner.call(request);
        Box::pin(async move {
            let response = fut.await?;
            let log = me.log.clone();
            let name = me.name;
            Ok(rmicro::wrapper::on_status(response, move |outcome| {
                log.lock()
                    .unwrap()
                    .push(format!("{name} status {}", outcome.code()));
            }))
        })
    }
}

#[tokio::test]
async fn wrappers_run_in_registration_order_and_see_the_call() {
    let log = Arc::new(Mutex::new(Vec::new()));
    // First registered is outermost.
    let (service, server) = start_with(greeter::Greeter, |b| {
        b.wrap_handler(Recorder {
            name: "outer",
            log: log.clone(),
        })
        .wrap_handler(Recorder {
            name: "inner",
            log: log.clone(),
        })
        .wrap_client(Recorder {
            name: "client",
            log: log.clone(),
        })
    })
    .await;
    let client = proto::GreeterClient::new(
        "greeter",
        service
            .client()
            .with_route("greeter", server.local_addr().to_string()),
    );
    let err = client
        .say_hello(req("", 0))
        .metadata("x-user", "ann")
        .await
        .unwrap_err();
    assert_eq!(err.code, 400);
    wait_until(
        "all wrappers saw the status",
        Duration::from_secs(5),
        || log.lock().unwrap().len() == 6,
    )
    .await;
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            "client before greeter Greeter.SayHello user=ann",
            "outer before greeter Greeter.SayHello user=ann",
            "inner before greeter Greeter.SayHello user=ann",
            "inner status INVALID_ARGUMENT",
            "outer status INVALID_ARGUMENT",
            "client status INVALID_ARGUMENT",
        ]
    );
}

#[tokio::test]
async fn retries_only_where_the_handler_cannot_run_twice() {
    let inspector = Inspector::new();
    let calls = inspector.calls.clone();
    let (_service, server) = start_with(inspector, |b| b).await;
    let client = client_for(&server);
    let err = client
        .say_hello(req("unavailable", 0))
        .retries(3)
        .await
        .unwrap_err();
    assert_eq!(err.code, 503);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a non-idempotent call ran twice"
    );
    calls.store(0, Ordering::SeqCst);
    let err = client
        .say_hello(req("unavailable", 0))
        .retries(2)
        .idempotent()
        .await
        .unwrap_err();
    assert_eq!(err.code, 503);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_fails_everything_gets_no_retry_storm() {
    // Every call fails with UNAVAILABLE and may be retried three times: without a
    // budget the backend would see 4x the calls; the default budget (20 % of the
    // calls, at least 10 a second) keeps it within 1.2x.
    let inspector = Inspector::new();
    let handled = inspector.calls.clone();
    let (_service, server) = start_with(inspector, |b| b).await;
    let client = client_for(&server);
    let (tasks, per_task) = (50, 20);
    let made = Arc::new(AtomicUsize::new(0));
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (client, made) = (client.clone(), made.clone());
        running.spawn(async move {
            for _ in 0..per_task {
                made.fetch_add(1, Ordering::SeqCst);
                let err = client
                    .say_hello(req("unavailable", 0))
                    .retries(3)
                    .idempotent()
                    .await
                    .unwrap_err();
                assert_eq!(err.code, 503, "{err}");
            }
        });
    }
    while let Some(done) = running.join_next().await {
        done.expect("caller task");
    }
    let (made, handled) = (made.load(Ordering::SeqCst), handled.load(Ordering::SeqCst));
    eprintln!(
        "{made} calls reached the backend {handled} times ({:.3}x)",
        handled as f64 / made as f64
    );
    assert_eq!(made, tasks * per_task);
    assert!(
        handled as f64 <= made as f64 * 1.2,
        "{made} calls reached the backend {handled} times"
    );
    // The budget let retries through (it is not simply "no retries").
    assert!(
        handled > made + 100,
        "{made} calls, {handled} handled: no retries?"
    );
}

/// A server that answers every failure with `grpc-retry-pushback-ms: value`.
async fn pushing_back(value: &'static str) -> (Arc<AtomicUsize>, rmicro::server::RunningServer) {
    let inspector = Inspector::new();
    let handled = inspector.calls.clone();
    let (_service, server) = start_with(inspector, |b| {
        b.wrap_handler(rmicro::wrapper::from_fn(move |call, next| async move {
            let mut response = next.run(call).await?;
            response.headers_mut().insert(
                "grpc-retry-pushback-ms",
                http::HeaderValue::from_static(value),
            );
            Ok(response)
        }))
    })
    .await;
    (handled, server)
}

#[tokio::test]
async fn the_client_waits_as_long_as_the_server_pushes_back() {
    let (handled, server) = pushing_back("300").await;
    let started = std::time::Instant::now();
    let err = client_for(&server)
        .say_hello(req("unavailable", 0))
        .retries(1)
        .idempotent()
        .await
        .unwrap_err();
    assert_eq!(err.code, 503);
    assert_eq!(handled.load(Ordering::SeqCst), 2, "retried once");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "retried after {:?}, before the 300 ms pushback",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_negative_pushback_stops_the_retries() {
    let (handled, server) = pushing_back("-1").await;
    let err = client_for(&server)
        .say_hello(req("unavailable", 0))
        .retries(3)
        .idempotent()
        .await
        .unwrap_err();
    assert_eq!(err.code, 503);
    assert_eq!(
        handled.load(Ordering::SeqCst),
        1,
        "the server said not to retry"
    );
}

#[tokio::test]
async fn the_breakers_timeout_rides_on_the_clients_timer_and_counts() {
    // The breaker's 200 ms is shorter than the call's 5 s: the client's one timer
    // ends the call at 200 ms, with the breaker's detail, and the circuit counts a
    // timeout. (Where the client's timer cannot carry it — a plain tonic channel, a
    // breaker with a fallback — the breaker keeps a timer of its own.)
    use rmicro::wrapper::breaker::{BreakerLayer, Settings};
    let inspector = Inspector::new();
    let cancelled = inspector.cancelled.clone();
    let (_service, server) = start_with(inspector, |b| b).await;
    let breaker = BreakerLayer::new(Settings {
        timeout: Duration::from_millis(200),
        ..Settings::default()
    });
    let options = rmicro::client::ClientOptions {
        from_service: Some("base".into()),
        ..Default::default()
    }
    .wrap_client(breaker.clone());
    let client = proto::GreeterClient::new(
        "greeter",
        rmicro::Client::new(options).with_route("greeter", server.local_addr().to_string()),
    );
    let started = std::time::Instant::now();
    let err = client
        .say_hello(req("sleep", 0))
        .timeout(Duration::from_secs(5))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.grpc_code(), rmicro::Code::DeadlineExceeded, "{err:?}");
    assert_eq!(err.id, "base");
    assert_eq!(
        err.detail,
        "greeter.Greeter.SayHello did not answer within the breaker's timeout of 200ms"
    );
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(5),
        "ended after {waited:?}"
    );
    let circuits = breaker.circuits();
    assert_eq!(circuits.len(), 1, "{circuits:?}");
    assert_eq!(circuits[0].timeouts, 1, "{circuits:?}");
    assert_eq!(circuits[0].in_flight, 0, "{circuits:?}");
    wait_until("the handler was cancelled", Duration::from_secs(5), || {
        cancelled.load(Ordering::SeqCst)
    })
    .await;
    // A quick call still succeeds and counts as one.
    client.say_hello(req("ok", 0)).await.expect("answers");
    assert_eq!(breaker.circuits()[0].successes, 1);
}

#[tokio::test]
async fn the_client_reconnects_after_the_server_restarts() {
    let (_service, server) = start_greeter().await;
    let address = server.local_addr().to_string();
    let client = rmicro::Client::default().with_route("greeter", address.clone());
    let greeter = proto::GreeterClient::new("greeter", client.clone());
    assert_eq!(
        greeter.say_hello(req("one", 0)).await.unwrap().message,
        "Hello one"
    );
    assert!(server.stop().await);

    // While it is down: a clear UNAVAILABLE naming the address, quickly.
    let err = greeter.say_hello(req("down", 0)).await.unwrap_err();
    assert_eq!(err.code, 503, "{err}");

    let (_service, _server) = start_with(greeter::Greeter, |b| b.address(address.clone())).await;
    // Same client, same cached channel: the first call after the restart succeeds.
    assert_eq!(
        greeter.say_hello(req("two", 0)).await.unwrap().message,
        "Hello two"
    );
}

#[tokio::test]
async fn calls_to_an_unknown_name_fail_with_a_clear_error() {
    let client = proto::GreeterClient::new("nobody", rmicro::Client::default());
    let err = client.say_hello(req("x", 0)).await.unwrap_err();
    assert_eq!(err.code, 503);
    assert!(
        err.detail.contains("service `nobody` has no known address"),
        "{err}"
    );
}

#[tokio::test]
async fn tls_on_server_and_client() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_pem = cert.cert.pem();
    let key_pem = cert.signing_key.serialize_pem();
    let (_service, server) = start_with(greeter::Greeter, |b| {
        b.tls(rmicro::transport::ServerTls::from_pem(
            cert_pem.clone(),
            key_pem,
        ))
    })
    .await;
    let tls = rmicro::transport::ClientTls::default()
        .with_ca_pem(cert_pem)
        .with_domain("localhost");
    let client = rmicro::Client::default()
        .with_tls(tls)
        .with_route("greeter", server.local_addr().to_string());
    let reply = proto::GreeterClient::new("greeter", client)
        .say_hello(req("tls", 0))
        .await
        .unwrap();
    assert_eq!(reply.message, "Hello tls");
    // A plain-text client cannot talk to the TLS server.
    let err = client_for(&server)
        .say_hello(req("plain", 0))
        .await
        .unwrap_err();
    assert!(matches!(err.code, 503 | 500), "{err}");
}

#[tokio::test]
async fn shutdown_drains_in_flight_calls_and_reports_not_serving() {
    let (_service, server) = start_greeter().await;
    let client = client_for(&server);
    let address = server.local_addr();
    // A stream that is mid-way when shutdown starts still completes.
    let mut stream = client.say_hello_stream(req("drain", 50)).await.unwrap();
    assert_eq!(
        stream.message().await.unwrap().unwrap().message,
        "Hello drain #1"
    );
    let stopping = tokio::spawn(server.stop());
    let mut n = 1;
    while let Some(r) = stream.message().await.unwrap() {
        n += 1;
        assert_eq!(r.message, format!("Hello drain #{n}"));
    }
    assert_eq!(n, 50);
    assert!(stopping.await.unwrap(), "drained within the grace period");
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn health_follows_the_service_and_turns_not_serving_when_shutdown_starts() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let (_service, server) = start_greeter().await;
    let channel = common::tonic_channel(&server).await;
    let mut health = HealthClient::new(channel);
    for service in ["", "greeter.v1.Greeter"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "greeter.v1.Greeter".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    // The service's own say: a dependency down, then back.
    let own = _service.health();
    for (serving, expected) in [
        (false, ServingStatus::NotServing),
        (true, ServingStatus::Serving),
    ] {
        own.set_serving(serving);
        let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("a status change within 5 s")
            .unwrap()
            .unwrap();
        assert_eq!(next.status, expected as i32);
        let whole = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(whole, expected as i32, "the whole server follows too");
        let alive = health
            .check(HealthCheckRequest {
                service: rmicro::server::LIVENESS.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            alive,
            ServingStatus::Serving as i32,
            "liveness is not steered"
        );
    }
    let stopping = tokio::spawn(server.stop());
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("a status change within 5 s")
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(watch);
    assert!(stopping.await.unwrap(), "drained once the watch closed");
}

#[tokio::test]
async fn the_greeter_stream_stops_promptly_when_the_caller_cancels() {
    let (_service, server) = start_greeter().await;
    let mut stream = client_for(&server)
        .say_hello_stream(req("cancel", i32::MAX))
        .timeout(Duration::from_secs(60))
        .await
        .unwrap();
    for i in 1..=3 {
        assert_eq!(
            stream.message().await.unwrap().unwrap().message,
            format!("Hello cancel #{i}")
        );
    }
    drop(stream);
    wait_until(
        "the greeter's stream handler is gone",
        Duration::from_secs(5),
        || server.in_flight() == 0,
    )
    .await;
}

#[tokio::test]
async fn shutdown_deregisters_before_the_listener_closes() {
    use rmicro::registry::Registry;
    let registry = Arc::new(rmicro::registry::MemoryRegistry::new());
    let shared: Arc<dyn Registry> = registry.clone();
    let (_service, server) = start_with(greeter::Greeter, |b| b.registry(shared)).await;
    let address = server.local_addr();
    let found = registry.get_service("greeter").await.unwrap();
    assert_eq!(
        found[0].nodes[0].address,
        address.to_string(),
        "advertises the bound port"
    );
    assert!(found[0].nodes[0].id.starts_with("greeter-"));
    let stopping = tokio::spawn(server.stop());
    // Poll until the listener refuses; by then the record must already be gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if tokio::net::TcpStream::connect(address).await.is_err() {
            let registered = !registry.get_service("greeter").await.unwrap().is_empty();
            assert!(
                !registered,
                "listener closed while the node was still registered"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "listener never closed"
        );
        tokio::task::yield_now().await;
    }
    assert!(stopping.await.unwrap());
    assert!(registry.get_service("greeter").await.unwrap().is_empty());
}
