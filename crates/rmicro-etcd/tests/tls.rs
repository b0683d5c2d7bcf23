//! The etcd registry and client against a private etcd started by the test that
//! serves clients over TLS only and requires client certificates from a test CA
//! (`--client-cert-auth`): a service registers and is found; a wrong CA, a missing
//! client certificate and an expired server certificate each fail with a sentence
//! naming the cause; with two endpoints, one of them dead, calls still succeed.

use rmicro::registry::{Registry, testing};
use rmicro::testing::{TestCa, TestCert, in_ci, link_options};

fn options(ca: &std::path::Path, client: Option<&TestCert>) -> String {
    format!("?{}", link_options(ca, client))
}
use rmicro_etcd::testing::{EtcdServer, EtcdTls};
use rmicro_etcd::{EtcdClient, EtcdRegistry};
use std::time::Duration;

async fn start(ca: &TestCa, cert: &TestCert, client: &TestCert) -> Option<EtcdServer> {
    let tls = EtcdTls {
        cert: cert.cert_file.clone(),
        key: cert.key_file.clone(),
        client_ca: Some(ca.cert_file()),
    };
    match EtcdServer::start_tls(tls, &options(&ca.cert_file(), Some(client))).await {
        Ok(Some(server)) => Some(server),
        Ok(None) => {
            assert!(!in_ci(), "etcd is not installed and CI=true");
            eprintln!("SKIPPED etcd tls: etcd is not installed");
            None
        }
        Err(err) => panic!("etcd did not start: {err}"),
    }
}

async fn refusal(address: &str) -> String {
    let client = EtcdClient::new(address)
        .unwrap()
        .with_timeout(Duration::from_secs(3));
    match client.get("/rmicro-tls").await {
        Ok(_) => panic!("{address} should have been refused"),
        Err(err) => err.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_over_mutual_tls() {
    let ca = TestCa::new("etcd-ca");
    let client = ca.client("app", &[]);
    let Some(server) = start(&ca, &ca.server(), &client).await else {
        return;
    };
    let good = format!(
        "https://{}{}",
        server.address(),
        options(&ca.cert_file(), Some(&client))
    );
    let registry = EtcdRegistry::new(&good).unwrap();
    let service = testing::record("tls-greeter", "1.0.0", "tls-1", "127.0.0.1:9");
    registry
        .register(&service, Duration::from_secs(30))
        .await
        .unwrap();
    let found = registry.get_service("tls-greeter").await.unwrap();
    assert_eq!(found[0].nodes[0].id, "tls-1");

    // Two endpoints, the first dead: the connection fails over to the second.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let both = format!(
        "https://{dead},https://{}{}",
        server.address(),
        options(&ca.cert_file(), Some(&client))
    );
    let failover = EtcdClient::new(&both).unwrap();
    for _ in 0..3 {
        let (kvs, _) = failover
            .get_prefix("/micro/registry/tls-greeter")
            .await
            .unwrap();
        assert_eq!(kvs.len(), 1);
    }

    let other = TestCa::new("other-ca");
    let err = refusal(&format!(
        "https://{}{}",
        server.address(),
        options(&other.cert_file(), Some(&client))
    ))
    .await;
    assert!(
        err.contains("not signed by a CA this client trusts"),
        "{err}"
    );

    let err = refusal(&format!(
        "https://{}{}",
        server.address(),
        options(&ca.cert_file(), None)
    ))
    .await;
    assert!(
        err.contains("the server requires a client certificate"),
        "{err}"
    );

    // Plain HTTP/2 to a TLS-only etcd fails (and says where).
    let err = refusal(&server.address()).await;
    assert!(
        err.contains(&format!(
            "etcd {}: get /rmicro-tls failed",
            server.address()
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_server_certificate_is_named() {
    let ca = TestCa::new("etcd-ca");
    let client = ca.client("app", &[]);
    let expired = ca.expired_server();
    // No TLS client accepts this server: wait on its port only.
    let tls = EtcdTls {
        cert: expired.cert_file.clone(),
        key: expired.key_file.clone(),
        client_ca: None,
    };
    let Some(server) = EtcdServer::start_tls(tls, "").await.unwrap() else {
        assert!(!in_ci(), "etcd is not installed and CI=true");
        return;
    };
    let err = refusal(&format!(
        "https://{}{}",
        server.address(),
        options(&ca.cert_file(), Some(&client))
    ))
    .await;
    assert!(err.contains("server's certificate has expired"), "{err}");
}
