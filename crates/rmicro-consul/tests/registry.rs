//! The Consul registry against the Consul agent double (no Consul server can run on
//! this machine; see `rmicro_consul::testing`).

use futures_util::StreamExt;
use rmicro::registry::{Registry, compact, testing};
use rmicro_consul::ConsulRegistry;
use rmicro_consul::testing::ConsulDouble;
use std::time::Duration;

async fn wait_for(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn consul_registry_conforms() {
    let consul = ConsulDouble::start().await.expect("double starts");
    let registry = ConsulRegistry::new(&consul.address()).expect("address");
    testing::conformance(&registry, "consul-", Duration::from_secs(1)).await;
}

#[tokio::test]
async fn registers_like_go_micro_with_a_ttl_check_and_heartbeats() {
    let consul = ConsulDouble::start().await.expect("double starts");
    let registry = ConsulRegistry::new(&consul.address()).expect("address");
    let mut record = testing::record("greeter", "1.0.0", "greeter-1", "127.0.0.1:9000");
    record.nodes[0]
        .metadata
        .insert("not.a.meta.key".into(), "kept in tags".into());
    registry
        .register(&record, Duration::from_secs(30))
        .await
        .expect("register");

    let body = consul.registration("greeter-1").expect("registered");
    assert_eq!(body["ID"], "greeter-1");
    assert_eq!(body["Name"], "greeter");
    assert_eq!(body["Address"], "127.0.0.1");
    assert_eq!(body["Port"], 9000);
    assert_eq!(body["Meta"]["transport"], "grpc");
    assert!(body["Meta"].get("not.a.meta.key").is_none());
    assert_eq!(body["Check"]["CheckID"], "service:greeter-1");
    assert_eq!(body["Check"]["TTL"], "30s");
    assert_eq!(body["Check"]["DeregisterCriticalServiceAfter"], "65s");
    let tags: Vec<String> = body["Tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    let version = tags
        .iter()
        .find_map(|t| t.strip_prefix("v-"))
        .expect("a v- tag");
    assert_eq!(compact::decode(version).as_deref(), Some(&b"1.0.0"[..]));
    let endpoint = tags
        .iter()
        .find_map(|t| t.strip_prefix("e-"))
        .and_then(compact::decode)
        .expect("an e- tag");
    let endpoint: serde_json::Value = serde_json::from_slice(&endpoint).expect("JSON");
    assert_eq!(endpoint["name"], "Greeter.SayHello");
    assert_eq!(endpoint["request"]["values"][0]["name"], "name");
    assert_eq!(tags.iter().filter(|t| t.starts_with("t-")).count(), 2);

    // Registered passing: visible at once to health queries for passing nodes.
    assert_eq!(
        consul.check_status("service:greeter-1").as_deref(),
        Some("passing")
    );
    let found = registry.get_service("greeter").await.expect("get");
    assert_eq!(found, vec![record.clone()]);

    // A refresh with the same record only passes the check.
    let registrations = consul.count("PUT /v1/agent/service/register");
    let passes = consul.count("PUT /v1/agent/check/pass/service:greeter-1");
    registry
        .register(&record, Duration::from_secs(30))
        .await
        .expect("refresh");
    assert_eq!(
        consul.count("PUT /v1/agent/service/register"),
        registrations
    );
    assert_eq!(
        consul.count("PUT /v1/agent/check/pass/service:greeter-1"),
        passes + 1
    );

    // The agent restarts without its registrations: the next refresh registers again.
    consul.forget_all();
    assert!(
        registry
            .get_service("greeter")
            .await
            .expect("get")
            .is_empty()
    );
    registry
        .register(&record, Duration::from_secs(30))
        .await
        .expect("refresh after agent restart");
    assert_eq!(registry.get_service("greeter").await.expect("get").len(), 1);

    registry.deregister(&record).await.expect("deregister");
    assert!(consul.registration("greeter-1").is_none());
    registry
        .deregister(&record)
        .await
        .expect("deregistering twice is fine");
}

#[tokio::test]
async fn a_node_that_stops_passing_is_hidden_then_deregistered() {
    let consul = ConsulDouble::start().await.expect("double starts");
    let registry = ConsulRegistry::new(&consul.address())
        .expect("address")
        .deregister_critical_after(Duration::from_secs(1));
    let record = testing::record("ttl", "1.0.0", "ttl-1", "127.0.0.1:9000");
    registry
        .register(&record, Duration::from_secs(1))
        .await
        .expect("register");
    assert_eq!(
        consul.registration("ttl-1").expect("registered")["Check"]["DeregisterCriticalServiceAfter"],
        "1s"
    );
    let listed = registry.list_services().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].version.as_str()),
        ("ttl", "1.0.0")
    );

    // No heartbeat: critical after the TTL, so no longer returned…
    wait_for("the node is hidden", Duration::from_secs(5), async || {
        registry
            .get_service("ttl")
            .await
            .is_ok_and(|s| s.is_empty())
    })
    .await;
    assert_eq!(
        consul.check_status("service:ttl-1").as_deref(),
        Some("critical")
    );
    // …and removed from the catalog after DeregisterCriticalServiceAfter.
    wait_for(
        "the node is deregistered",
        Duration::from_secs(5),
        async || registry.list_services().await.is_ok_and(|s| s.is_empty()),
    )
    .await;
    assert!(consul.registration("ttl-1").is_none());
}

#[tokio::test]
async fn agent_outage_fails_calls_with_a_sentence_and_ends_watches() {
    let mut consul = ConsulDouble::start().await.expect("double starts");
    let registry = ConsulRegistry::new(&consul.address()).expect("address");
    let mut watcher = registry.watch(Some("outage")).await.expect("watch");
    consul.stop();
    let ended = tokio::time::timeout(Duration::from_secs(10), watcher.next())
        .await
        .expect("the watch reports the outage within 10 s");
    assert!(matches!(ended, Some(Err(_))), "{ended:?}");
    let err = registry
        .get_service("outage")
        .await
        .expect_err("agent down");
    assert!(err.to_string().contains("consul://"), "{err}");

    consul.resume().await.expect("agent back");
    let mut watcher = registry.watch(Some("outage")).await.expect("watch again");
    let record = testing::record("outage", "1.0.0", "outage-1", "127.0.0.1:9000");
    registry
        .register(&record, Duration::from_secs(30))
        .await
        .expect("register");
    let event = tokio::time::timeout(Duration::from_secs(5), watcher.next())
        .await
        .expect("event within 5 s")
        .expect("open")
        .expect("event");
    assert_eq!(event.service, record);
}

#[tokio::test]
async fn the_double_rejects_what_consul_rejects() {
    let consul = ConsulDouble::start().await.expect("double starts");
    let client = rmicro_consul::ConsulClient::new(&consul.address()).expect("address");
    for (body, expect) in [
        (r#"{"Name":""}"#, "Missing service name"),
        (r#"{"Name":"a","Meta":{"a.b":"c"}}"#, "Invalid Service Meta"),
        (r#"{"Name":"a","Check":{"TTL":"soon"}}"#, "invalid duration"),
        (r#"{"Name":"a","Bogus":1}"#, "unknown field"),
        ("{not json", "Request decode failed"),
    ] {
        let err = client
            .put("/v1/agent/service/register", Some(body.as_bytes().to_vec()))
            .await
            .expect_err(body);
        assert_eq!(err.status(), Some(400), "{err}");
        assert!(err.to_string().contains(expect), "{body}: {err}");
    }
    let err = client
        .put("/v1/agent/check/pass/service:nobody", None)
        .await
        .expect_err("unknown check");
    assert_eq!(err.status(), Some(404));
}

#[tokio::test]
async fn registry_flag_selects_consul_once_installed() {
    let registry = rmicro::registry::from_flags("consul", Some("127.0.0.1:8501")).expect("consul");
    assert_eq!(registry.describe(), "consul://127.0.0.1:8501");
    let err = rmicro::registry::from_flags("consul", Some("c:1?bogus=1")).expect_err("an option");
    assert!(err.to_string().contains("unknown option `bogus`"), "{err}");
    let tls = rmicro::registry::from_flags("consul", Some("https://c:1")).expect("HTTPS");
    assert_eq!(tls.describe(), "consul://c:1");
}
