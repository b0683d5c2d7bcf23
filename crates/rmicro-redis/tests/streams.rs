//! The Redis Streams broker against the machine's Redis (127.0.0.1:6379). Topics
//! carry the process id and are deleted at the end.

use rmicro::broker::testing;
use rmicro::broker::{Broker, Message};
use rmicro_redis::RedisBroker;

#[tokio::test(flavor = "multi_thread")]
async fn redis_broker_conforms() {
    let Some(redis) = rmicro_redis::testing::shared_or_skip("redis conformance", "1s").await else {
        return;
    };
    let prefix = format!("rmicro-test.{}.", std::process::id());
    let mut used = Vec::new();
    used.extend(testing::fan_out_and_queue_group(&redis, &prefix).await);
    used.extend(testing::redelivery_then_dead_letter(&redis, &prefix).await);
    used.extend(testing::malformed_payload_is_dead_lettered(&redis, &prefix).await);
    used.extend(testing::unacked_messages_go_to_another_member(&redis, &prefix).await);
    for topic in used {
        redis.delete_topic(&topic).await.unwrap();
    }
}

#[tokio::test]
async fn addresses_are_checked() {
    let err = RedisBroker::new("redis://127.0.0.1:6379?speed=fast")
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("unknown option `speed=fast`"),
        "{err}"
    );
    let err = RedisBroker::new("redis://127.0.0.1:6379?ack_wait=soon")
        .err()
        .unwrap();
    assert!(err.to_string().contains("soon"), "{err}");
    let down = RedisBroker::new("redis://127.0.0.1:1").unwrap();
    let err = down.publish("t", Message::new("x")).await.unwrap_err();
    assert!(err.to_string().contains("redis://127.0.0.1:1"), "{err}");
}

#[tokio::test]
async fn passwords_never_show_and_bare_addresses_work() {
    let Some(_shared) = rmicro_redis::testing::shared_or_skip("redis addresses", "1s").await else {
        return;
    };
    // The machine's Redis has no password: AUTH fails, and says so without it.
    let secret = RedisBroker::new("redis://:s3cretpw@127.0.0.1:6379/0").unwrap();
    assert_eq!(secret.describe(), "redis://:***@127.0.0.1:6379/0");
    assert!(!format!("{secret:?}").contains("s3cretpw"));
    let err = secret.publish("t", Message::new("x")).await.unwrap_err();
    assert!(!err.to_string().contains("s3cretpw"), "{err}");
    let bare = RedisBroker::new("127.0.0.1:6379").unwrap();
    bare.connect().await.unwrap();
}
