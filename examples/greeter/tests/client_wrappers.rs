//! Client wrappers at go-micro's two levels: `wrap_client` once per logical call
//! (above selection and retries), `wrap_call` once per attempt (after the node is
//! picked); "not sent" refusals move the call to another node; wrapper state lives
//! as long as the client; streams are covered until their last message on both
//! sides, with message counts.

mod common;

use common::{start_with, wait_until};
use greeter::proto::{self, HelloRequest};
use rmicro::registry::{MemoryRegistry, Registry};
use rmicro::selector::{Selector, Strategy};
use rmicro::wrapper::{AttemptInfo, ClientCallInfo, NotSent, from_fn, on_status};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn hello(name: &str, count: i32) -> HelloRequest {
    HelloRequest {
        name: name.into(),
        count,
    }
}

/// Two greeters registered as `greeter` in one registry; returns the registry and
/// how many calls each handled.
async fn two_greeters() -> (
    Arc<dyn Registry>,
    Vec<(rmicro::Service, rmicro::server::RunningServer)>,
) {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let registry = registry.clone();
        nodes.push(start_with(greeter::Greeter, move |b| b.registry(registry)).await);
    }
    (registry, nodes)
}

type Log = Arc<Mutex<Vec<String>>>;

#[tokio::test]
async fn wrap_client_sees_one_call_and_wrap_call_each_attempt_on_another_node() {
    let (registry, _nodes) = two_greeters().await;
    let calls: Log = Arc::default();
    let attempts: Log = Arc::default();
    let (calls_log, attempts_log) = (calls.clone(), attempts.clone());
    let options = rmicro::client::ClientOptions::default()
        .wrap_client(from_fn(move |call, next| {
            let log = calls_log.clone();
            async move {
                let info = call.client_info().cloned().expect("call info");
                let user = call.metadata().get("x-user").unwrap_or("-").to_owned();
                let left = info.deadline() - tokio::time::Instant::now();
                assert!(left <= Duration::from_secs(2), "{left:?}");
                let response = next.run(call).await?;
                Ok(on_status(response, move |outcome| {
                    log.lock().unwrap().push(format!(
                        "{} {} user={user} {} attempts={}",
                        info.service(),
                        info.endpoint(),
                        outcome.code(),
                        info.attempts()
                    ));
                }))
            }
        }))
        .wrap_call(from_fn(move |call, next| {
            let log = attempts_log.clone();
            async move {
                let attempt = call.attempt().cloned().expect("attempt info");
                log.lock().unwrap().push(format!(
                    "{} {}",
                    attempt.attempt(),
                    attempt.node().expect("picked by the selector")
                ));
                // Refuse every first attempt: the client must go to another node.
                if attempt.attempt() == 1 {
                    return Err(NotSent::new("first attempts are refused").into());
                }
                next.run(call).await
            }
        }));
    let selector = Arc::new(Selector::new(registry, Strategy::Random));
    let client =
        proto::GreeterClient::new("greeter", rmicro::Client::with_selector(options, selector));
    for i in 0..10 {
        let reply = client
            .say_hello(hello(&format!("n{i}"), 0))
            .timeout(Duration::from_secs(2))
            .metadata("x-user", "ann")
            .await
            .unwrap();
        assert_eq!(reply.message, format!("Hello n{i}"));
    }
    wait_until("every call was reported", Duration::from_secs(5), || {
        calls.lock().unwrap().len() == 10
    })
    .await;
    for line in calls.lock().unwrap().iter() {
        assert_eq!(line, "greeter Greeter.SayHello user=ann OK attempts=2");
    }
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 20, "{attempts:?}");
    for pair in attempts.chunks(2) {
        let first = pair[0].strip_prefix("1 ").expect("first attempt");
        let second = pair[1].strip_prefix("2 ").expect("second attempt");
        assert_ne!(first, second, "the retry went to the refused node");
    }
}

#[tokio::test]
async fn a_refused_attempt_never_reaches_the_server() {
    let (_service, server) = start_with(greeter::Greeter, |b| b).await;
    let served = Arc::new(AtomicUsize::new(0));
    let seen = served.clone();
    let (_counted, counter) = start_with(greeter::Greeter, move |b| {
        b.wrap_handler(from_fn(move |call, next| {
            seen.fetch_add(1, Ordering::SeqCst);
            next.run(call)
        }))
    })
    .await;
    let options =
        rmicro::client::ClientOptions::default().wrap_call(from_fn(|_call, _next| async {
            Err(NotSent::new("this node is draining").into())
        }));
    let client =
        rmicro::Client::new(options).with_route("greeter", counter.local_addr().to_string());
    let err = proto::GreeterClient::new("greeter", client)
        .say_hello(hello("x", 0))
        .await
        .unwrap_err();
    assert_eq!(err.code, 503, "{err}");
    assert!(err.detail.contains("this node is draining"), "{err}");
    assert!(
        err.detail.contains("no node of `greeter` took the call"),
        "{err}"
    );
    assert_eq!(
        served.load(Ordering::SeqCst),
        0,
        "a refused attempt was sent"
    );
    drop(server);
}

#[tokio::test]
async fn wrapper_state_lives_as_long_as_the_client_not_a_channel() {
    let (_a, first) = start_with(greeter::Greeter, |b| b).await;
    let (_b, second) = start_with(greeter::Greeter, |b| b).await;
    let counting = common::Tap::default();
    let client =
        rmicro::Client::new(rmicro::client::ClientOptions::default().wrap_call(counting.clone()));
    let greeter = proto::GreeterClient::new("greeter", client.clone());
    for server in [&first, &second, &first] {
        greeter
            .say_hello(hello("x", 0))
            .address(server.local_addr().to_string())
            .await
            .unwrap();
    }
    assert_eq!(client.cached_channels(), 2);
    assert_eq!(
        counting.applied.load(Ordering::SeqCst),
        1,
        "one stack per client"
    );
    assert_eq!(counting.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn with_route_keeps_discovery_and_addresses_start_no_watch() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let reg = registry.clone();
    let (_service, server) = start_with(greeter::Greeter, move |b| b.registry(reg)).await;
    let selector = Arc::new(Selector::new(registry, Strategy::Random));
    let client = rmicro::Client::with_selector(Default::default(), selector.clone());
    // A route for another name keeps finding `greeter` through the registry.
    let routed = client.with_route("billing", "127.0.0.1:1");
    let reply = proto::GreeterClient::new("greeter", routed)
        .say_hello(hello("by name", 0))
        .await
        .unwrap();
    assert_eq!(reply.message, "Hello by name");
    assert_eq!(selector.cached_services(), 1);
    // A `host:port` target is dialled directly: no cache, no registry watch.
    proto::GreeterClient::new(server.local_addr().to_string(), client.clone())
        .say_hello(hello("by address", 0))
        .await
        .unwrap();
    assert_eq!(selector.cached_services(), 1, "an address started a watch");
}

/// Records, when a call's outcome is known, what the call info counted by then.
fn counting_outcomes(log: Log) -> impl rmicro::client::ClientLayer {
    from_fn(move |call, next| {
        let log = log.clone();
        async move {
            let info: ClientCallInfo = call.client_info().cloned().expect("call info");
            let response = next.run(call).await?;
            Ok(on_status(response, move |outcome| {
                let m = info.messages();
                log.lock().unwrap().push(format!(
                    "{} {} sent={} received={}",
                    info.endpoint(),
                    outcome.code(),
                    m.sent(),
                    m.received()
                ));
            }))
        }
    })
}

#[tokio::test]
async fn streams_are_covered_until_their_last_message_on_both_sides() {
    let server_log: Log = Arc::default();
    let log = server_log.clone();
    let permits = Arc::new(tokio::sync::Semaphore::new(1));
    let held = permits.clone();
    let (_service, server) = start_with(greeter::Greeter, move |b| {
        b.wrap_handler(from_fn(move |call, next| {
            let (log, held) = (log.clone(), held.clone());
            async move {
                let info = call.info().cloned().expect("server call info");
                // A permit held by the wrapper for the whole call, streams included.
                let permit = held.try_acquire_owned().map_err(|e| e.to_string())?;
                let response = next.run(call).await?;
                Ok(on_status(response, move |outcome| {
                    drop(permit);
                    let m = info.messages();
                    log.lock().unwrap().push(format!(
                        "{} {} received={} sent={}",
                        info.endpoint(),
                        outcome.code(),
                        m.received(),
                        m.sent()
                    ));
                }))
            }
        }))
    })
    .await;
    let client_log: Log = Arc::default();
    let client = rmicro::Client::new(
        rmicro::client::ClientOptions::default().wrap_client(counting_outcomes(client_log.clone())),
    )
    .with_route("greeter", server.local_addr().to_string());
    let greeter = proto::GreeterClient::new("greeter", client);

    // Server streaming: counted to the last reply.
    let mut replies = greeter.say_hello_stream(hello("s", 4)).await.unwrap();
    while replies.message().await.unwrap().is_some() {}
    wait_until(
        "the stream's permit is released",
        Duration::from_secs(5),
        || permits.available_permits() == 1,
    )
    .await;

    // Client streaming.
    let names = ["a", "b", "c"].map(|n| hello(n, 0));
    greeter
        .collect(futures_util::stream::iter(names))
        .await
        .unwrap();
    wait_until("the permit is released", Duration::from_secs(5), || {
        permits.available_permits() == 1
    })
    .await;

    // Bidi streaming: the wrapper's permit is held while the stream is open.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut chat = greeter
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap();
    for name in ["x", "y"] {
        tx.send(hello(name, 0)).await.unwrap();
        assert!(chat.message().await.unwrap().is_some());
        assert_eq!(
            permits.available_permits(),
            0,
            "released before the stream ended"
        );
    }
    drop(tx);
    assert!(chat.message().await.unwrap().is_none());
    wait_until(
        "the chat's permit is released",
        Duration::from_secs(5),
        || permits.available_permits() == 1,
    )
    .await;
    greeter.say_hello(hello("u", 0)).await.unwrap();

    wait_until("every outcome was seen", Duration::from_secs(5), || {
        server_log.lock().unwrap().len() == 4 && client_log.lock().unwrap().len() == 4
    })
    .await;
    assert_eq!(
        *server_log.lock().unwrap(),
        [
            "Greeter.SayHelloStream OK received=1 sent=4",
            "Greeter.Collect OK received=3 sent=1",
            "Greeter.Chat OK received=2 sent=2",
            "Greeter.SayHello OK received=1 sent=1",
        ]
    );
    assert_eq!(
        *client_log.lock().unwrap(),
        [
            "Greeter.SayHelloStream OK sent=1 received=4",
            "Greeter.Collect OK sent=3 received=1",
            "Greeter.Chat OK sent=2 received=2",
            "Greeter.SayHello OK sent=1 received=1",
        ]
    );
}

#[tokio::test]
async fn attempt_info_can_be_built_for_a_wrappers_own_tests() {
    let info = AttemptInfo::new(Some(Arc::from("greeter-1")), "127.0.0.1:9", 2);
    assert_eq!(
        (info.node(), info.address(), info.attempt()),
        (Some("greeter-1"), "127.0.0.1:9", 2)
    );
    let call = ClientCallInfo::new(
        "greeter",
        "Greeter.SayHello",
        "/greeter.v1.Greeter/SayHello",
        tokio::time::Instant::now(),
    );
    assert_eq!(call.attempts(), 0);
    assert_eq!(call.messages().sent(), 0);
}
