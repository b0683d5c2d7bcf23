//! A conformance suite every [`Registry`] implementation runs in its tests, so the
//! built-in registries and the adapter crates behave alike.

// A conformance suite asserts: a failed expectation is a failed test, reported by
// the panic with what was expected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::{Action, Endpoint, Node, Registry, Service, Value};
use futures_util::StreamExt;
use std::time::Duration;

/// A record of `name`/`version` with one node at `address`.
pub fn record(name: &str, version: &str, id: &str, address: &str) -> Service {
    Service {
        name: name.into(),
        version: version.into(),
        metadata: [("team".to_owned(), "core".to_owned())].into(),
        endpoints: vec![Endpoint {
            name: "Greeter.SayHello".into(),
            request: Some(Value::new(
                "HelloRequest",
                "HelloRequest",
                vec![Value::new("name", "string", vec![])],
            )),
            response: Some(Value::new("HelloReply", "HelloReply", vec![])),
            metadata: [("stream".to_owned(), "false".to_owned())].into(),
        }],
        nodes: vec![Node {
            id: id.into(),
            address: address.into(),
            metadata: [("transport".to_owned(), "grpc".to_owned())].into(),
        }],
    }
}

/// Waits for the next event of `watcher` for at most `limit`.
async fn next_event(watcher: &mut super::Watcher, limit: Duration) -> super::Event {
    match tokio::time::timeout(limit, watcher.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(err))) => panic!("watch failed: {err}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {limit:?}"),
    }
}

/// Checks register, get, list, watch (create, update, delete), deregister and TTL
/// expiry. `prefix` keeps service names apart when registries are shared; `slack`
/// is how late the registry may notice an expiry.
pub async fn conformance(registry: &dyn Registry, prefix: &str, slack: Duration) {
    let name = format!("{prefix}conformance");
    let other = format!("{prefix}other");
    let limit = Duration::from_secs(5) + slack;
    assert!(registry.get_service(&name).await.expect("get").is_empty());

    let mut watcher = registry.watch(Some(&name)).await.expect("watch");
    let a = record(&name, "1.0.0", &format!("{name}-a"), "127.0.0.1:1001");
    let b = record(&name, "1.0.0", &format!("{name}-b"), "127.0.0.1:1002");
    let v2 = record(&name, "2.0.0", &format!("{name}-c"), "127.0.0.1:1003");
    registry
        .register(&a, Duration::from_secs(30))
        .await
        .expect("register a");
    let event = next_event(&mut watcher, limit).await;
    assert_eq!(event.action, Action::Create);
    assert_eq!(event.service, a);

    registry
        .register(&b, Duration::from_secs(30))
        .await
        .expect("register b");
    registry
        .register(&v2, Duration::from_secs(30))
        .await
        .expect("register v2");
    registry
        .register(
            &record(&other, "1.0.0", &format!("{other}-x"), "127.0.0.1:1004"),
            Duration::from_secs(30),
        )
        .await
        .expect("register other");
    for _ in 0..2 {
        let event = next_event(&mut watcher, limit).await;
        assert_eq!(event.action, Action::Create);
        assert_eq!(
            event.service.name, name,
            "the watch is limited to its service"
        );
    }

    let got = registry.get_service(&name).await.expect("get");
    assert_eq!(got.len(), 2, "one entry per version: {got:?}");
    assert_eq!(got[0].version, "1.0.0");
    let ids: Vec<&str> = got[0].nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, [a.nodes[0].id.as_str(), b.nodes[0].id.as_str()]);
    assert_eq!(got[0].endpoints, a.endpoints, "endpoints survive");
    assert_eq!(got[1].nodes, v2.nodes);

    let listed = registry.list_services().await.expect("list");
    assert!(listed.iter().any(|s| s.name == name));
    assert!(listed.iter().any(|s| s.name == other));

    let mut moved = b.clone();
    moved.nodes[0].address = "127.0.0.1:2002".into();
    registry
        .register(&moved, Duration::from_secs(30))
        .await
        .expect("update b");
    let event = next_event(&mut watcher, limit).await;
    assert_eq!(event.action, Action::Update);
    assert_eq!(event.service.nodes[0].address, "127.0.0.1:2002");

    registry.deregister(&a).await.expect("deregister");
    let event = next_event(&mut watcher, limit).await;
    assert_eq!(event.action, Action::Delete);
    assert_eq!(event.service.nodes[0].id, a.nodes[0].id);
    let got = registry.get_service(&name).await.expect("get");
    assert!(
        got.iter()
            .all(|s| s.nodes.iter().all(|n| n.id != a.nodes[0].id))
    );

    // A node that stops refreshing disappears within its TTL.
    registry
        .register(&v2, Duration::from_secs(1))
        .await
        .expect("short ttl");
    let started = tokio::time::Instant::now();
    loop {
        let event = next_event(&mut watcher, limit).await;
        if event.action == Action::Delete && event.service.nodes[0].id == v2.nodes[0].id {
            break;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(1) + slack + Duration::from_secs(2));
    let got = registry.get_service(&name).await.expect("get");
    assert!(
        got.iter().all(|s| s.version != "2.0.0"),
        "expired node still listed: {got:?}"
    );

    registry.deregister(&moved).await.expect("cleanup");
    registry
        .deregister(&record(
            &other,
            "1.0.0",
            &format!("{other}-x"),
            "127.0.0.1:1004",
        ))
        .await
        .expect("cleanup");
    assert!(registry.get_service(&name).await.expect("get").is_empty());
}
