//! The MQTT broker against a private Mosquitto started by the test with a TLS
//! listener that requires client certificates from a test CA and a password file:
//! a message goes through, and a wrong password, a wrong CA, a missing or expired
//! client certificate and an expired server certificate are each refused with a
//! sentence that names the cause and never shows the password.

use rmicro::broker::Broker;
use rmicro::broker::testing::round_trip;
use rmicro::testing::{TestCa, TestCert, in_ci, link_options};
use rmicro_mqtt::MqttBroker;
use rmicro_mqtt::testing::MosquittoServer;

async fn start(ca: &TestCa, cert: &TestCert) -> Option<MosquittoServer> {
    let passwd = rmicro::testing::find_binary("mosquitto_passwd", "RMICRO_MOSQUITTO_PASSWD");
    let Some(passwd) = passwd else {
        assert!(!in_ci(), "mosquitto_passwd is not installed and CI=true");
        eprintln!("SKIPPED mqtt tls: mosquitto_passwd is not installed");
        return None;
    };
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
    if server.is_none() {
        assert!(!in_ci(), "mosquitto is not installed and CI=true");
        eprintln!("SKIPPED mqtt tls: mosquitto is not installed");
    }
    server
}

fn address(userinfo: &str, port: u16, ca: &std::path::Path, client: Option<&TestCert>) -> String {
    format!(
        "mqtts://{userinfo}127.0.0.1:{port}?{}",
        link_options(ca, client)
    )
}

async fn refusal(address: &str) -> String {
    let broker = MqttBroker::new(address).unwrap();
    match broker
        .publish("rmicro-tls/refused", rmicro::broker::Message::new("x"))
        .await
    {
        Ok(()) => panic!("{address} should have been refused"),
        Err(err) => err.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_and_a_password() {
    let ca = TestCa::new("mqtt-ca");
    let client = ca.client("app", &[]);
    let Some(server) = start(&ca, &ca.server()).await else {
        return;
    };
    let port = server.port();
    let broker = MqttBroker::new(&address(
        "app:pw-mq-41x@",
        port,
        &ca.cert_file(),
        Some(&client),
    ))
    .unwrap();
    assert!(
        !broker.describe().contains("pw-mq-41x"),
        "{}",
        broker.describe()
    );
    round_trip(&broker, "rmicro-tls/mqtt").await.unwrap();

    let err = refusal(&address(
        "app:wrong-pw-3@",
        port,
        &ca.cert_file(),
        Some(&client),
    ))
    .await;
    assert!(
        err.contains("NotAuthorized") || err.contains("BadUserNamePassword"),
        "{err}"
    );
    assert!(!err.contains("wrong-pw-3"), "the password shown: {err}");

    let other = TestCa::new("other-ca");
    let err = refusal(&address(
        "app:pw-mq-41x@",
        port,
        &other.cert_file(),
        Some(&client),
    ))
    .await;
    assert!(
        err.contains("not signed by a CA this client trusts"),
        "{err}"
    );

    let err = refusal(&address("app:pw-mq-41x@", port, &ca.cert_file(), None)).await;
    assert!(
        err.contains("the server requires a client certificate"),
        "{err}"
    );

    let expired = ca.expired_client("app");
    let err = refusal(&address(
        "app:pw-mq-41x@",
        port,
        &ca.cert_file(),
        Some(&expired),
    ))
    .await;
    assert!(err.contains("our client certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_server_certificate_is_named() {
    let ca = TestCa::new("mqtt-ca");
    let client = ca.client("app", &[]);
    let Some(server) = start(&ca, &ca.expired_server()).await else {
        return;
    };
    let err = refusal(&address(
        "app:pw-mq-41x@",
        server.port(),
        &ca.cert_file(),
        Some(&client),
    ))
    .await;
    assert!(err.contains("server's certificate has expired"), "{err}");
}
