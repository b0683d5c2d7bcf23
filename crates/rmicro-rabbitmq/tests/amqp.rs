//! The RabbitMQ broker against the machine's RabbitMQ (127.0.0.1:5672). Topics
//! carry the process id; the durable queues the tests create are deleted.

use rmicro::broker::testing;
use rmicro::broker::{Broker, Message};
use rmicro_rabbitmq::RabbitBroker;

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_broker_conforms() {
    let Some(rabbit) = rmicro_rabbitmq::testing::shared_or_skip("rabbitmq conformance").await
    else {
        return;
    };
    let prefix = format!("rmicro-test.{}.", std::process::id());
    let fanout = testing::fan_out_and_queue_group(&rabbit, &prefix).await;
    let orders = testing::redelivery_then_dead_letter(&rabbit, &prefix).await;
    let typed = testing::malformed_payload_is_dead_lettered(&rabbit, &prefix).await;
    rabbit.delete_queue(&typed[0], "typed").await.unwrap();
    rabbit.delete_queue(&fanout[0], "workers").await.unwrap();
    rabbit.delete_queue(&orders[0], "orders").await.unwrap();
}

#[tokio::test]
async fn bad_addresses_and_credentials_get_a_sentence() {
    let err = RabbitBroker::new("amqp://127.0.0.1:5672?speed=fast")
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("unknown option `speed=fast`"),
        "{err}"
    );
    let wrong = RabbitBroker::new("amqp://guest:wr0ngpass@127.0.0.1:5672/%2f").unwrap();
    assert_eq!(
        wrong.describe(),
        "amqp://guest:***@127.0.0.1:5672/%2f",
        "no credentials shown"
    );
    assert!(!format!("{wrong:?}").contains("wr0ngpass"));
    let err = wrong.publish("t", Message::new("x")).await.unwrap_err();
    assert!(err.to_string().contains("connect"), "{err}");
    assert!(!err.to_string().contains("wr0ngpass"), "{err}");
}

#[tokio::test]
async fn a_bare_host_port_address_connects() {
    // `--broker rabbitmq --broker-address 127.0.0.1:5672` (RabbitMQ's guest defaults).
    if rmicro_rabbitmq::testing::shared_or_skip("bare address")
        .await
        .is_none()
    {
        return;
    }
    let rabbit = RabbitBroker::new("127.0.0.1:5672").unwrap();
    assert_eq!(rabbit.describe(), "amqp://127.0.0.1:5672");
    rabbit.connect().await.unwrap();
    rabbit.disconnect().await.unwrap();
}
