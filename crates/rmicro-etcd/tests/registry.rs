//! The etcd registry against a real etcd (Debian's `etcd-server`) started on free
//! loopback ports for each test.

use futures_util::StreamExt;
use rmicro::registry::{Action, Registry, testing};
use rmicro_etcd::testing::EtcdServer;
use rmicro_etcd::{EtcdClient, EtcdRegistry};
use std::time::Duration;

#[tokio::test]
async fn etcd_registry_conforms() {
    let Some(etcd) = EtcdServer::start_or_skip("etcd_registry_conforms").await else {
        return;
    };
    let registry = EtcdRegistry::new(&etcd.address()).expect("address");
    // etcd's minimum lease is 2 s with its default election timeout, and it checks
    // expiry about every 500 ms.
    testing::conformance(&registry, "etcd-", Duration::from_secs(3)).await;
}

#[tokio::test]
async fn records_use_go_micro_keys_and_json_on_a_lease() {
    let Some(etcd) = EtcdServer::start_or_skip("records_use_go_micro_keys").await else {
        return;
    };
    let registry = EtcdRegistry::new(&etcd.address()).expect("address");
    let record = testing::record("greeter", "1.0.0", "greeter-1", "127.0.0.1:9000");
    registry
        .register(&record, Duration::from_secs(30))
        .await
        .expect("register");

    let raw = EtcdClient::new(&etcd.address()).expect("address");
    let kv = raw
        .get("/micro/registry/greeter/greeter-1")
        .await
        .expect("get")
        .expect("the node's key exists");
    assert_ne!(kv.lease, 0, "the record is attached to a lease");
    let json: serde_json::Value = serde_json::from_slice(&kv.value).expect("JSON value");
    assert_eq!(json["name"], "greeter");
    assert_eq!(json["version"], "1.0.0");
    assert_eq!(json["nodes"][0]["id"], "greeter-1");
    assert_eq!(json["nodes"][0]["address"], "127.0.0.1:9000");
    assert_eq!(json["endpoints"][0]["name"], "Greeter.SayHello");

    // Refreshing an unchanged record keeps the lease and writes nothing.
    registry
        .register(&record, Duration::from_secs(30))
        .await
        .expect("refresh");
    let again = raw
        .get("/micro/registry/greeter/greeter-1")
        .await
        .expect("get")
        .expect("still there");
    assert_eq!(again.mod_revision, kv.mod_revision, "no write on refresh");
    assert_eq!(again.lease, kv.lease);

    // A go-micro process's record (written by someone else) is read like ours.
    let foreign = r#"{"name":"legacy","version":"latest","metadata":null,"endpoints":null,
        "nodes":[{"id":"legacy-1","address":"10.0.0.9:8080","metadata":{"protocol":"grpc"}}]}"#;
    raw.put(
        "/micro/registry/legacy/legacy-1",
        foreign.as_bytes().to_vec(),
        0,
    )
    .await
    .expect("put");
    let legacy = registry.get_service("legacy").await.expect("get legacy");
    assert_eq!(legacy.len(), 1);
    assert_eq!(legacy[0].nodes[0].address, "10.0.0.9:8080");

    // A corrupt record is skipped, not fatal.
    raw.put("/micro/registry/legacy/broken", b"{not json".to_vec(), 0)
        .await
        .expect("put");
    let legacy = registry.get_service("legacy").await.expect("get legacy");
    assert_eq!(legacy[0].nodes.len(), 1);
}

#[tokio::test]
async fn lease_lost_while_etcd_was_down_is_granted_again() {
    let Some(mut etcd) = EtcdServer::start_or_skip("lease_lost_while_etcd_was_down").await else {
        return;
    };
    let registry = EtcdRegistry::new(&etcd.address()).expect("address");
    let record = testing::record("lease", "1.0.0", "lease-1", "127.0.0.1:9000");
    registry
        .register(&record, Duration::from_secs(2))
        .await
        .expect("register");
    // Someone revokes the lease (as an expiry would): the next refresh registers anew.
    let raw = EtcdClient::new(&etcd.address()).expect("address");
    let lease = raw
        .get("/micro/registry/lease/lease-1")
        .await
        .expect("get")
        .expect("exists")
        .lease;
    raw.revoke(lease).await.expect("revoke");
    assert!(registry.get_service("lease").await.expect("get").is_empty());
    registry
        .register(&record, Duration::from_secs(2))
        .await
        .expect("refresh");
    assert_eq!(registry.get_service("lease").await.expect("get").len(), 1);

    // With etcd away, registry calls fail with a sentence rather than hang.
    etcd.stop();
    let err = registry
        .get_service("lease")
        .await
        .expect_err("etcd is down");
    assert!(err.to_string().contains("etcd://"), "{err}");
    let err = registry.watch(None).await.err().expect("etcd is down");
    assert!(err.to_string().contains("watch"), "{err}");
}

#[tokio::test]
async fn watch_breaks_when_etcd_dies_and_works_after_it_returns() {
    let Some(mut etcd) = EtcdServer::start_or_skip("watch_breaks_when_etcd_dies").await else {
        return;
    };
    let registry = EtcdRegistry::new(&etcd.address()).expect("address");
    let mut watcher = registry.watch(None).await.expect("watch");
    etcd.stop();
    let ended = tokio::time::timeout(Duration::from_secs(15), watcher.next())
        .await
        .expect("the watch reports the lost connection within 15 s");
    assert!(matches!(ended, Some(Err(_)) | None), "{ended:?}");

    etcd.resume().await.expect("etcd restarts");
    let mut watcher = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match registry.watch(None).await {
                Ok(w) => return w,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("watch works again within 10 s of etcd's return");
    let record = testing::record("back", "1.0.0", "back-1", "127.0.0.1:9000");
    registry
        .register(&record, Duration::from_secs(30))
        .await
        .expect("register");
    let event = tokio::time::timeout(Duration::from_secs(5), watcher.next())
        .await
        .expect("event within 5 s")
        .expect("stream open")
        .expect("event");
    assert_eq!(event.action, Action::Create);
    assert_eq!(event.service.name, "back");
}

#[tokio::test]
async fn registry_flag_selects_etcd_once_installed() {
    let before = rmicro::registry::from_flags("etcd", Some("127.0.0.1:1"));
    if !rmicro::registry::names().contains(&"etcd".to_string()) {
        let err = before.expect_err("etcd unknown before install");
        assert!(err.to_string().contains("unknown registry `etcd`"), "{err}");
    }
    let registry = rmicro::registry::from_flags("etcd", Some("127.0.0.1:1")).expect("etcd");
    assert_eq!(registry.describe(), "etcd://127.0.0.1:1");
    let err = rmicro::registry::from_flags("etcd", Some("x:1?bogus=1"))
        .expect_err("an unknown option is refused");
    assert!(err.to_string().contains("unknown option `bogus`"), "{err}");
    let tls = rmicro::registry::from_flags("etcd", Some("https://x:1")).expect("TLS");
    assert_eq!(tls.describe(), "etcd://https://x:1");
}
