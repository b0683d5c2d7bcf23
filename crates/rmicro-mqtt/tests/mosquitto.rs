//! The MQTT broker against the machine's Mosquitto (127.0.0.1:1883). Topics carry
//! the process id.

use rmicro::broker::testing;
use rmicro::broker::{Broker, Message};
use rmicro_mqtt::MqttBroker;

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_broker_conforms() {
    let Some(mqtt) = rmicro_mqtt::testing::shared_or_skip("mqtt conformance").await else {
        return;
    };
    let prefix = format!("rmicro-test/{}/", std::process::id());
    testing::fan_out_and_queue_group(&mqtt, &prefix).await;
    testing::redelivery_then_dead_letter(&mqtt, &prefix).await;
    testing::malformed_payload_is_dead_lettered(&mqtt, &prefix).await;
}

#[tokio::test]
async fn bad_addresses_and_topics_get_a_sentence() {
    let err = MqttBroker::new("mqtt://127.0.0.1:1883?speed=fast")
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("unknown option `speed=fast`"),
        "{err}"
    );
    assert!(MqttBroker::new("mqtt://127.0.0.1:port").is_err());
    let secret = MqttBroker::new("mqtt://app:s3cretpw@127.0.0.1:1?client_id=x").unwrap();
    assert_eq!(secret.describe(), "mqtt://app:***@127.0.0.1:1");
    assert!(!format!("{secret:?}").contains("s3cretpw"));
    let err = secret.publish("t", Message::new("x")).await.unwrap_err();
    assert!(!err.to_string().contains("s3cretpw"), "{err}");
    assert_eq!(
        MqttBroker::new("127.0.0.1:1883").unwrap().describe(),
        "mqtt://127.0.0.1:1883"
    );
    let down = MqttBroker::new("mqtt://127.0.0.1:1").unwrap();
    let err = down.publish("t", Message::new("x")).await.unwrap_err();
    assert!(err.to_string().contains("mqtt://127.0.0.1:1"), "{err}");
    if let Some(mqtt) = rmicro_mqtt::testing::shared_or_skip("mqtt bad topic").await {
        let handler = rmicro::broker::handler(|_d| async { Ok(()) });
        let err = mqtt
            .subscribe("a/#", handler, Default::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("wildcards"), "{err}");
    }
}
