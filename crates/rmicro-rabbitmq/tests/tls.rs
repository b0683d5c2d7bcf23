//! The RabbitMQ broker over `amqps://` against a private RabbitMQ node started by
//! the test with only a TLS listener that requires client certificates from a test
//! CA (`verify_peer`, `fail_if_no_peer_cert`) and its own user: a message goes
//! through; a wrong password, a wrong CA, a missing client certificate and an
//! expired server certificate are each refused with a sentence that names the cause
//! and never shows the password.

use rmicro::broker::testing::{mutual_tls_link, refusal};
use rmicro::testing::{TestCa, TestCert, link_options};
use rmicro_rabbitmq::RabbitBroker;
use rmicro_rabbitmq::testing::RabbitServer;

async fn start(ca: &TestCa, cert: &TestCert) -> Option<RabbitServer> {
    let (ca_file, cert_file, key_file) = (
        ca.cert_file(),
        cert.cert_file.clone(),
        cert.key_file.clone(),
    );
    let server = RabbitServer::with_config(|port| {
        format!(
            "listeners.tcp = none\nlisteners.ssl.default = 127.0.0.1:{port}\n\
             ssl_options.cacertfile = {}\nssl_options.certfile = {}\nssl_options.keyfile = {}\n\
             ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n\
             default_user = app\ndefault_pass = pw-rb-19\n",
            ca_file.display(),
            cert_file.display(),
            key_file.display()
        )
    })
    .await
    .unwrap();
    rmicro::testing::require(server, "rabbitmq-server", "apt-get install rabbitmq-server")
}

fn broker(
    userinfo: &str,
    port: u16,
    ca: &std::path::Path,
    client: Option<&TestCert>,
) -> RabbitBroker {
    let address = format!(
        "amqps://{userinfo}127.0.0.1:{port}/%2f?{}",
        link_options(ca, client)
    );
    RabbitBroker::new(&address).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_and_a_password() {
    let ca = TestCa::new("rabbit-ca");
    let Some(server) = start(&ca, &ca.server()).await else {
        return;
    };
    let port = server.port();
    let make = |userinfo: &str, ca: &std::path::Path, client: Option<&TestCert>| {
        broker(userinfo, port, ca, client)
    };
    mutual_tls_link(
        &ca,
        make,
        "app:pw-rb-19@",
        "ACCESS_REFUSED",
        "rmicro-tls.rabbit",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_server_certificate_is_named() {
    let ca = TestCa::new("rabbit-ca");
    let client = ca.client("app", &[]);
    let Some(server) = start(&ca, &ca.expired_server()).await else {
        return;
    };
    let err = refusal(&broker(
        "app:pw-rb-19@",
        server.port(),
        &ca.cert_file(),
        Some(&client),
    ))
    .await;
    assert!(err.contains("server's certificate has expired"), "{err}");
}
