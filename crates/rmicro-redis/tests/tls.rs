//! The Redis broker against a private `redis-server` started by the test with only
//! a TLS port, client certificates required (`--tls-auth-clients yes`) and an ACL
//! user: a message goes through; a wrong password, a wrong CA, a missing client
//! certificate and an expired server certificate are each refused with a sentence
//! that names the cause and never shows the password.

use rmicro::broker::testing::{mutual_tls_link, refusal};
use rmicro::broker::{Broker, Message};
use rmicro::testing::{ServerProcess, TestCa, TestCert, in_ci, link_options};
use rmicro_redis::RedisBroker;
use std::time::Duration;

async fn start(ca: &TestCa, cert: &TestCert) -> Option<ServerProcess> {
    let Some(binary) = rmicro::testing::find_binary("redis-server", "RMICRO_REDIS_SERVER") else {
        assert!(!in_ci(), "redis-server is not installed and CI=true");
        eprintln!("SKIPPED redis tls: redis-server is not installed");
        return None;
    };
    // ACL users in a configuration file: on the command line redis splits them.
    let mut server = ServerProcess::with_config_file(
        "redis-tls",
        binary,
        1,
        "redis.conf",
        |dir, ports| {
            format!(
                "bind 127.0.0.1\nport 0\nsave \"\"\nappendonly no\ndir {}\n\
                 user default off\nuser app on >pw-r3d-88 ~* &* +@all\n\
                 tls-port {}\ntls-auth-clients yes\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n",
                dir.display(),
                ports[0],
                cert.cert_file.display(),
                cert.key_file.display(),
                ca.cert_file().display()
            )
        },
        |path| vec![path.into()],
    )
    .unwrap();
    server.start_listening().await.unwrap();
    Some(server)
}

fn broker(
    userinfo: &str,
    port: u16,
    ca: &std::path::Path,
    client: Option<&TestCert>,
) -> RedisBroker {
    let address = format!(
        "rediss://{userinfo}127.0.0.1:{port}?{}",
        link_options(ca, client)
    );
    RedisBroker::new(&address).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_and_an_acl_user() {
    let ca = TestCa::new("redis-ca");
    let Some(server) = start(&ca, &ca.server()).await else {
        return;
    };
    let port = server.ports()[0];
    let make = |userinfo: &str, ca: &std::path::Path, client: Option<&TestCert>| {
        broker(userinfo, port, ca, client)
    };
    let topic = format!("rmicro-tls.{}", std::process::id());
    mutual_tls_link(&ca, make, "app:pw-r3d-88@", "authentication failed", &topic).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_server_certificate_is_named() {
    let ca = TestCa::new("redis-ca");
    let client = ca.client("app", &[]);
    let Some(server) = start(&ca, &ca.expired_server()).await else {
        return;
    };
    let err = refusal(&broker(
        "app:pw-r3d-88@",
        server.ports()[0],
        &ca.cert_file(),
        Some(&client),
    ))
    .await;
    assert!(err.contains("server's certificate has expired"), "{err}");
}

#[test]
fn a_missing_tls_file_is_named_when_the_broker_is_made() {
    let err = RedisBroker::new("rediss://127.0.0.1:1?tls_ca=/nonexistent/ca.pem")
        .expect_err("a missing CA file is an error")
        .to_string();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_client_certificates_are_used_by_new_connections() {
    let ca = TestCa::new("redis-ca");
    let Some(server) = start(&ca, &ca.server()).await else {
        return;
    };
    let dir = server.dir().join("client");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("client.pem"), dir.join("client.key"));
    let install = |from: &TestCert| {
        std::fs::write(&cert, &from.cert_pem).unwrap();
        std::fs::write(&key, &from.key_pem).unwrap();
    };
    install(&ca.client("app", &[]));
    let address = format!(
        "rediss://app:pw-r3d-88@127.0.0.1:{}?tls_ca={}&tls_cert={}&tls_key={}",
        server.ports()[0],
        ca.cert_file().display(),
        cert.display(),
        key.display()
    );
    let broker = RedisBroker::new(&address).unwrap();
    let topic = format!("rmicro-tls-rotation.{}", std::process::id());
    let publish = || broker.publish(&topic, Message::new("x"));
    publish().await.unwrap();

    // An expired certificate in the files: new connections present it and are
    // refused, so publishing fails once the broker has reloaded.
    install(&ca.expired_client("app"));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut sent_before_reload = 0;
    let err = loop {
        match publish().await {
            Ok(()) => sent_before_reload += 1,
            Err(err) => break err.to_string(),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rotated files were never used"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(err.contains("client certificate"), "{err}");
    eprintln!("{sent_before_reload} publishes before the reload; then: {err}");

    // A valid certificate again: publishing recovers without a new broker.
    install(&ca.client("app-2", &[]));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while publish().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
