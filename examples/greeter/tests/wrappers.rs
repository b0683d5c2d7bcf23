//! Handler wrappers are driven as tower requires: tower's own concurrency limit,
//! load shedding, timeout and rate limit (behind a buffer) do what their docs say
//! under concurrent load, and their errors reach the caller as precise statuses on
//! a connection that keeps working. Function wrappers see the peer and hand values
//! to the handler.

mod common;

use common::{start_with, wait_until};
use greeter::proto::{self, HelloReply, HelloRequest};
use rmicro::{Error, Request, RequestStream, ResponseSender};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A greeter whose `say_hello` waits until the gate opens, counting how many
/// handlers run at once.
#[derive(Clone)]
struct Gate {
    open: watch::Receiver<bool>,
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    handled: Arc<AtomicUsize>,
}

struct Opener(watch::Sender<bool>);

impl Opener {
    fn open(&self) {
        let _ = self.0.send(true);
    }
}

fn gate(open: bool) -> (Gate, Opener) {
    let (tx, rx) = watch::channel(open);
    let gate = Gate {
        open: rx,
        running: Arc::new(AtomicUsize::new(0)),
        most: Arc::new(AtomicUsize::new(0)),
        handled: Arc::new(AtomicUsize::new(0)),
    };
    (gate, Opener(tx))
}

struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A value a wrapper hands to the handler.
#[derive(Clone, Debug)]
struct Principal(String);

impl proto::Greeter for Gate {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<HelloReply, Error> {
        if request.message().name == "whoami" {
            let ctx = request.context();
            return Ok(HelloReply {
                message: format!(
                    "{} from {}",
                    ctx.get::<Principal>().map_or("nobody", |p| p.0.as_str()),
                    ctx.peer().map_or("?".into(), |p| p.address().to_string())
                ),
            });
        }
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        // Counts the handler out even when it is cancelled (dropped).
        let _running = Running(self.running.clone());
        self.most.fetch_max(now, Ordering::SeqCst);
        let mut open = self.open.clone();
        let _ = open.wait_for(|o| *o).await;
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(HelloReply {
            message: format!("Hello {}", request.message().name),
        })
    }

    async fn say_hello_stream(
        &self,
        _: Request<HelloRequest>,
        _: ResponseSender<HelloReply>,
    ) -> Result<(), Error> {
        Err(Error::not_implemented("gate", "say_hello_stream"))
    }

    async fn collect(&self, _: Request<RequestStream<HelloRequest>>) -> Result<HelloReply, Error> {
        Err(Error::not_implemented("gate", "collect"))
    }

    async fn chat(
        &self,
        _: Request<RequestStream<HelloRequest>>,
        _: ResponseSender<HelloReply>,
    ) -> Result<(), Error> {
        Err(Error::not_implemented("gate", "chat"))
    }
}

fn hello(name: &str) -> HelloRequest {
    HelloRequest {
        name: name.into(),
        count: 0,
    }
}

/// Starts `n` concurrent calls on one client (one connection).
fn spawn_calls(
    client: &proto::GreeterClient,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<HelloReply, Error>>> {
    (0..n)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .say_hello(hello(&format!("c{i}")))
                    .timeout(Duration::from_secs(20))
                    .await
            })
        })
        .collect()
}

fn client_of(server: &rmicro::server::RunningServer) -> proto::GreeterClient {
    common::client_for(server)
}

#[tokio::test]
async fn without_a_limit_every_call_runs_at_once() {
    // The control for the limit below: the same load reaches 6 handlers at once.
    let (gate, opener) = gate(false);
    let (running, most) = (gate.running.clone(), gate.most.clone());
    let (_service, server) = start_with(gate, |b| b).await;
    let calls = spawn_calls(&client_of(&server), 6);
    wait_until("6 handlers run", Duration::from_secs(10), || {
        running.load(Ordering::SeqCst) == 6
    })
    .await;
    opener.open();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(most.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn tower_concurrency_limit_queues_calls_beyond_the_limit() {
    let (gate, opener) = gate(false);
    let (running, most, handled) = (
        gate.running.clone(),
        gate.most.clone(),
        gate.handled.clone(),
    );
    let (_service, server) = start_with(gate, |b| {
        b.wrap_handler(tower::limit::ConcurrencyLimitLayer::new(2))
    })
    .await;
    let calls = spawn_calls(&client_of(&server), 6);
    wait_until("2 handlers run", Duration::from_secs(10), || {
        running.load(Ordering::SeqCst) == 2
    })
    .await;
    assert_eq!(handled.load(Ordering::SeqCst), 0);
    opener.open();
    for call in calls {
        let reply = call.await.unwrap().unwrap();
        assert!(reply.message.starts_with("Hello c"), "{reply:?}");
    }
    assert_eq!(handled.load(Ordering::SeqCst), 6, "every queued call ran");
    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "never more than the limit at once"
    );
}

#[tokio::test]
async fn a_call_queued_behind_a_full_limit_ends_at_its_deadline() {
    let (gate, opener) = gate(false);
    let running = gate.running.clone();
    let (_service, server) = start_with(gate, |b| {
        b.wrap_handler(tower::limit::ConcurrencyLimitLayer::new(1))
    })
    .await;
    let client = client_of(&server);
    let first = spawn_calls(&client, 1);
    wait_until("the permit is taken", Duration::from_secs(10), || {
        running.load(Ordering::SeqCst) == 1
    })
    .await;
    let err = client
        .say_hello(hello("late"))
        .timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(err.code, 408, "{err}");
    opener.open();
    for call in first {
        call.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn tower_load_shed_refuses_with_resource_exhausted_and_the_connection_lives() {
    let (gate, opener) = gate(false);
    let (running, handled) = (gate.running.clone(), gate.handled.clone());
    let (_service, server) = start_with(gate, |b| {
        b.wrap_handler(tower::load_shed::LoadShedLayer::new())
            .wrap_handler(tower::limit::ConcurrencyLimitLayer::new(1))
    })
    .await;
    let client = client_of(&server);
    let first = spawn_calls(&client, 1);
    wait_until("the only permit is taken", Duration::from_secs(10), || {
        running.load(Ordering::SeqCst) == 1
    })
    .await;
    let shed = spawn_calls(&client, 5);
    for call in shed {
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(err.code, 429, "{err}");
        assert_eq!(err.grpc_code(), rmicro::Code::ResourceExhausted);
        assert!(err.detail.contains("overloaded"), "{err}");
        assert_eq!(err.id, "greeter");
    }
    assert_eq!(handled.load(Ordering::SeqCst), 0, "shed calls never ran");
    opener.open();
    for call in first {
        call.await.unwrap().unwrap();
    }
    // The same connection serves the next call.
    client.say_hello(hello("again")).await.unwrap();
    assert_eq!(handled.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn tower_timeout_answers_deadline_exceeded_and_cancels_the_handler() {
    let (gate, opener) = gate(false);
    let (running, handled) = (gate.running.clone(), gate.handled.clone());
    let (_service, server) = start_with(gate, |b| {
        b.wrap_handler(tower::timeout::TimeoutLayer::new(Duration::from_millis(
            200,
        )))
    })
    .await;
    let client = client_of(&server);
    let err = client
        .say_hello(hello("slow"))
        .timeout(Duration::from_secs(20))
        .await
        .unwrap_err();
    assert_eq!(err.grpc_code(), rmicro::Code::DeadlineExceeded, "{err}");
    assert!(err.detail.contains("time limit"), "{err}");
    wait_until("the handler was dropped", Duration::from_secs(5), || {
        running.load(Ordering::SeqCst) == 0
    })
    .await;
    opener.open();
    client.say_hello(hello("fast")).await.unwrap();
    assert_eq!(
        handled.load(Ordering::SeqCst),
        1,
        "only the second call finished"
    );
}

#[tokio::test]
async fn tower_rate_limit_behind_a_buffer_spaces_calls_out() {
    let (gate, _opener) = gate(true);
    let handled = gate.handled.clone();
    let per = Duration::from_millis(500);
    let (_service, server) = start_with(gate, |b| {
        b.wrap_handler(
            tower::ServiceBuilder::new()
                .buffer(64)
                .rate_limit(3, per)
                .into_inner(),
        )
    })
    .await;
    let started = Instant::now();
    let calls = spawn_calls(&client_of(&server), 9);
    let mut finished = Vec::new();
    for call in calls {
        call.await.unwrap().unwrap();
        finished.push(started.elapsed());
    }
    finished.sort();
    assert_eq!(handled.load(Ordering::SeqCst), 9);
    // 3 per window: the 4th call waits for the second window, the 7th for the third.
    assert!(
        finished[3] >= per - Duration::from_millis(50),
        "{finished:?}"
    );
    assert!(
        finished[6] >= 2 * per - Duration::from_millis(50),
        "{finished:?}"
    );
}

#[tokio::test]
async fn function_wrappers_see_the_peer_and_hand_values_to_the_handler() {
    let (gate, _opener) = gate(true);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let (_service, server) = start_with(gate, move |b| {
        b.wrap_handler(rmicro::wrapper::from_fn(move |mut call, next| {
            let log = log.clone();
            async move {
                let user = call.metadata().get("x-user").map(str::to_owned);
                let Some(user) = user else {
                    return Err(Error::unauthorized("auth", "who are you? send x-user").into());
                };
                log.lock().unwrap().push(format!(
                    "{} {} {}",
                    call.service(),
                    call.endpoint(),
                    call.peer()
                        .map(|p| p.address().ip().to_string())
                        .unwrap_or_default()
                ));
                call.insert(Principal(user));
                next.run(call).await
            }
        }))
    })
    .await;
    let client = client_of(&server);
    let reply = client
        .say_hello(hello("whoami"))
        .metadata("x-user", "ann")
        .await
        .unwrap();
    assert!(
        reply.message.starts_with("ann from 127.0.0.1:"),
        "{reply:?}"
    );
    let err = client.say_hello(hello("whoami")).await.unwrap_err();
    assert_eq!(err, Error::unauthorized("auth", "who are you? send x-user"));
    assert_eq!(
        *seen.lock().unwrap(),
        ["greeter Greeter.SayHello 127.0.0.1"]
    );
}

#[tokio::test]
async fn handlers_added_after_start_are_refused_not_ignored() {
    let (gate, _opener) = gate(true);
    let (service, server) = start_with(gate.clone(), |b| b).await;
    let err = service.handle(proto::GreeterServer::new(gate)).unwrap_err();
    assert!(err.to_string().contains("already serving"), "{err}");
    assert!(server.stop().await);
}

/// tonic's own health service, reporting the server as serving.
async fn serving_health()
-> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    health_service
}

#[tokio::test]
async fn the_same_wrappers_work_on_a_plain_tonic_server() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let auth = rmicro::wrapper::from_fn(move |call, next| {
        let log = log.clone();
        async move {
            let path = call.path().to_owned();
            if call.metadata().get("x-api-key") != Some("k1") {
                return Err(Error::unauthorized("auth", "send x-api-key").into());
            }
            let response = next.run(call).await?;
            Ok(rmicro::wrapper::on_status(response, move |outcome| {
                log.lock()
                    .unwrap()
                    .push(format!("{path} {}", outcome.code()));
            }))
        }
    });
    let health_service = serving_health().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(auth)
            .layer(rmicro::wrapper::logging::LoggingLayer::new())
            .add_service(health_service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let channel = common::tonic_channel_at(address).await;
    let mut client = HealthClient::new(channel);
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request
        .metadata_mut()
        .insert("x-api-key", "k1".parse().unwrap());
    client.check(request).await.unwrap();
    let refused = client
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert!(refused.message().contains("send x-api-key"), "{refused:?}");
    assert_eq!(*seen.lock().unwrap(), ["/grpc.health.v1.Health/Check OK"]);
    server.abort();
}

#[tokio::test]
async fn server_max_concurrent_refuses_calls_beyond_the_limit_at_once_but_never_health() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let (gate, opener) = gate(false);
    let (running, handled) = (gate.running.clone(), gate.handled.clone());
    let (_service, server) = start_with(gate, |b| {
        b.args([
            "greeter",
            "--log-level",
            "warn",
            "--server-max-concurrent",
            "3",
        ])
    })
    .await;
    let client = client_of(&server);
    let held = spawn_calls(&client, 3);
    wait_until("3 handlers run", Duration::from_secs(10), || {
        running.load(Ordering::SeqCst) == 3
    })
    .await;
    // Full: five more calls are refused at once (the gate is still closed), with
    // the limit named, and never reach a handler.
    for refused in spawn_calls(&client, 5) {
        let err = refused.await.unwrap().expect_err("over the limit");
        assert_eq!(err.grpc_code(), rmicro::Code::ResourceExhausted, "{err:?}");
        assert_eq!(err.code, 429);
        assert_eq!(err.id, "greeter");
        assert!(
            err.detail.starts_with(
                "`greeter` is at its limit of 3 calls in flight (--server-max-concurrent)"
            ),
            "{err:?}"
        );
    }
    assert_eq!(
        running.load(Ordering::SeqCst),
        3,
        "a refused call reached a handler"
    );
    // Health is not shed while the limit is full.
    let channel = common::tonic_channel(&server).await;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers while the server is full")
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    opener.open();
    for call in held {
        call.await
            .unwrap()
            .expect("the calls under the limit finish");
    }
    assert_eq!(handled.load(Ordering::SeqCst), 3);
    // The places are given back: a new call runs.
    client.say_hello(hello("after")).await.expect("room again");
}

#[tokio::test]
async fn resilience_layers_work_on_a_plain_tonic_server_and_channel() {
    use rmicro::wrapper::breaker::Breaker;
    use rmicro::wrapper::ratelimit::RateLimit;
    use rmicro::wrapper::shed::LoadShedLayer;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let health_service = serving_health().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(LoadShedLayer::max_concurrent(8))
            .layer(RateLimit::per_second(1).burst(1))
            .add_service(health_service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let channel = common::tonic_channel_at(address).await;
    let breaker = Breaker::hystrix();
    let mut client = HealthClient::new(
        tower::ServiceBuilder::new()
            .layer(breaker.clone())
            .service(channel),
    );
    client
        .check(HealthCheckRequest::default())
        .await
        .expect("the first token");
    // The refusal reaches a stock client as its status, not a reset stream.
    let refused = client
        .check(HealthCheckRequest::default())
        .await
        .expect_err("the bucket holds one");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert_eq!(
        refused.message(),
        "too many requests: limit 1/s for grpc.health.v1.Health.Check"
    );
    // The breaker on the channel counted both calls under the command's name.
    let circuits = breaker.circuits();
    assert_eq!(circuits.len(), 1, "{circuits:?}");
    assert_eq!(circuits[0].name, "grpc.health.v1.Health.Check");
    assert_eq!((circuits[0].successes, circuits[0].failures), (1, 1));
    server.abort();
}

#[tokio::test]
async fn a_server_endpoint_timeout_cuts_the_handler_with_deadline_exceeded() {
    let (gate, _opener) = gate(false);
    let (running, handled) = (gate.running.clone(), gate.handled.clone());
    let (_service, server) = start_with(gate, |b| {
        b.args([
            "greeter",
            "--log-level",
            "warn",
            "--server-endpoint-timeout",
            "Greeter.SayHello=200ms",
        ])
    })
    .await;
    let err = client_of(&server)
        .say_hello(hello("slow"))
        .timeout(Duration::from_secs(10))
        .await
        .expect_err("the gate never opens");
    assert_eq!(err.grpc_code(), rmicro::Code::DeadlineExceeded, "{err:?}");
    assert_eq!(err.id, "greeter");
    assert_eq!(
        err.detail,
        "`greeter` cut Greeter.SayHello after its server timeout of 200ms"
    );
    // The handler was cut, not left running.
    wait_until("the handler is dropped", Duration::from_secs(5), || {
        running.load(Ordering::SeqCst) == 0
    })
    .await;
    assert_eq!(handled.load(Ordering::SeqCst), 0);
    // Another endpoint has no limit: `whoami` answers at once either way.
    let reply = client_of(&server).say_hello(hello("whoami")).await;
    assert!(reply.is_ok(), "{reply:?}");
}

/// A unary call's status is known with its response: a wrapper waiting for it
/// is told OK as the response comes back, without watching the body; a reply
/// over the server's size limit is refused as RESOURCE_EXHAUSTED naming the
/// limit, before any of it is sent.
#[tokio::test]
async fn a_unary_status_is_known_with_the_response_unless_its_reply_cannot_be_sent() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let (_service, server) = start_with(greeter::Greeter, move |b| {
        b.max_message_size(64 * 1024)
            .wrap_handler(rmicro::wrapper::from_fn(move |call, next| {
                let log = log.clone();
                async move {
                    let response = next.run(call).await?;
                    let told = Arc::new(std::sync::Mutex::new(None));
                    let kept = told.clone();
                    let response = rmicro::wrapper::on_status(response, move |outcome| {
                        *kept.lock().unwrap() = Some(outcome.code());
                    });
                    let at_once = told.lock().unwrap().is_some();
                    log.lock().unwrap().push((at_once, told));
                    Ok(response)
                }
            }))
    })
    .await;
    let client = client_of(&server);
    let reply = client.say_hello(hello("ann")).await.unwrap();
    assert_eq!(reply.message, "Hello ann");
    // "Hello " + 65,530 bytes is over 64 KiB once encoded; the request is not.
    let err = client
        .say_hello(hello(&"x".repeat(65_530)))
        .await
        .unwrap_err();
    assert_eq!(err.grpc_code(), rmicro::Code::ResourceExhausted, "{err}");
    assert!(
        err.detail
            .contains("is 65540 bytes, over the server's limit of 65536"),
        "{err}"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].0, "the OK was known with the response");
    assert_eq!(*seen[0].1.lock().unwrap(), Some(rmicro::Code::Ok));
    assert!(seen[1].0, "the refusal was known with the response");
    assert_eq!(
        *seen[1].1.lock().unwrap(),
        Some(rmicro::Code::ResourceExhausted)
    );
}
