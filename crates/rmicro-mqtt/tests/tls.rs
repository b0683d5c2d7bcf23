//! The MQTT broker against a private Mosquitto started by the test with a TLS
//! listener that requires client certificates from a test CA and a password file:
//! a message goes through, and a wrong password, a wrong CA, a missing or expired
//! client certificate and an expired server certificate are each refused with a
//! sentence that names the cause and never shows the password.

use rmicro::broker::testing::{mutual_tls_link, refusal};
use rmicro::testing::{TestCa, TestCert, link_options};
use rmicro_mqtt::MqttBroker;
use rmicro_mqtt::testing::MosquittoServer;

async fn start(ca: &TestCa, cert: &TestCert) -> Option<MosquittoServer> {
    let passwd = rmicro::testing::find_binary("mosquitto_passwd", "RMICRO_MOSQUITTO_PASSWD");
    let passwd = rmicro::testing::require(passwd, "mosquitto_passwd", "apt-get install mosquitto")?;
    let (ca_file, cert_file, key_file) = (
        ca.cert_file(),
        cert.cert_file.clone(),
        cert.key_file.clone(),
    );
    let server = MosquittoServer::with_config(|dir, _| {
        let passwords = dir.join("passwd");
        let made = std::process::Command::new(&passwd)
            .args(["-b", "-c"])
            .arg(&passwords)
            .args(["app", "pw-mq-41x"])
            .status()
            .unwrap();
        assert!(made.success(), "mosquitto_passwd failed");
        format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nallow_anonymous false\npassword_file {}\n",
            ca_file.display(),
            cert_file.display(),
            key_file.display(),
            passwords.display()
        )
    })
    .await
    .unwrap();
    rmicro::testing::require(server, "mosquitto", "apt-get install mosquitto")
}

fn broker(
    userinfo: &str,
    port: u16,
    ca: &std::path::Path,
    client: Option<&TestCert>,
) -> MqttBroker {
    let address = format!(
        "mqtts://{userinfo}127.0.0.1:{port}?{}",
        link_options(ca, client)
    );
    MqttBroker::new(&address).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_and_a_password() {
    let ca = TestCa::new("mqtt-ca");
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
        "app:pw-mq-41x@",
        "NotAuthorized",
        "rmicro-tls/mqtt",
    )
    .await;

    // An expired client certificate: Mosquitto (OpenSSL) says so.
    let expired = ca.expired_client("app");
    let err = refusal(&broker(
        "app:pw-mq-41x@",
        port,
        &ca.cert_file(),
        Some(&expired),
    ))
    .await;
    assert!(err.contains("our client certificate has expired"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_server_certificate_is_named() {
    let ca = TestCa::new("mqtt-ca");
    let client = ca.client("app", &[]);
    let Some(server) = start(&ca, &ca.expired_server()).await else {
        return;
    };
    let err = refusal(&broker(
        "app:pw-mq-41x@",
        server.port(),
        &ca.cert_file(),
        Some(&client),
    ))
    .await;
    assert!(err.contains("server's certificate has expired"), "{err}");
}
