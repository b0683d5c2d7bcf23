//! Consul KV as a config center, against the agent double (no Consul can run here).

use futures_util::StreamExt;
use rmicro::config::Config;
use rmicro::config::source::Source;
use rmicro_consul::testing::ConsulDouble;
use rmicro_consul::{ConsulClient, ConsulSource};
use serde::Deserialize;
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(Debug, Deserialize, PartialEq)]
struct Mysql {
    host: String,
    port: u16,
}

async fn next_within<T>(
    stream: &mut (impl futures_util::Stream<Item = T> + Unpin),
    limit: Duration,
) -> T {
    tokio::time::timeout(limit, stream.next())
        .await
        .expect("a watch item in time")
        .expect("the watch goes on")
}

async fn put(client: &ConsulClient, key: &str, value: &str) {
    client
        .put(&format!("/v1/kv/{key}"), Some(value.as_bytes().to_vec()))
        .await
        .expect("KV put");
}

#[tokio::test]
async fn kv_keys_are_paths_watched_with_blocking_queries() {
    let consul = ConsulDouble::start().await.unwrap();
    let client = ConsulClient::new(&consul.address()).unwrap();
    put(
        &client,
        "micro/config/mysql",
        r#"{"host": "db", "port": 3306}"#,
    )
    .await;
    put(&client, "micro/config/mysql/port", "3307").await;
    put(&client, "micro/configuration/x", "1").await;
    let config = Config::builder()
        .source(ConsulSource::new(&consul.address(), "/micro/config").unwrap())
        .build()
        .await
        .expect("loads");
    assert_eq!(
        config.get("mysql").scan::<Mysql>().unwrap(),
        Mysql {
            host: "db".into(),
            port: 3307
        }
    );
    assert!(!config.get("ration").exists());
    assert_eq!(
        config.get("mysql.host").source(),
        Some(format!("consul://{}/micro/config", consul.address()))
    );

    let mut watch = config.watch::<Mysql>("mysql");
    assert_eq!(
        next_within(&mut watch, Duration::from_secs(2))
            .await
            .unwrap()
            .port,
        3307
    );
    let written = Instant::now();
    put(&client, "micro/config/mysql/port", "3308").await;
    let changed = next_within(&mut watch, Duration::from_secs(1))
        .await
        .unwrap();
    eprintln!("Consul KV change seen after {:?}", written.elapsed());
    assert_eq!(changed.port, 3308);

    put(&client, "micro/config/mysql/port", "{\"port\": ").await;
    let err = next_within(&mut watch, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("micro/config/mysql/port"), "{err}");
    assert_eq!(
        config.get("mysql.port").int().unwrap(),
        3308,
        "last good kept"
    );
    // An unrelated key changing does not repeat the old error.
    put(&client, "micro/config/other", "1").await;
    put(&client, "micro/config/mysql/port", "3309").await;
    let next = next_within(&mut watch, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(next.port, 3309);
}

#[tokio::test]
async fn an_empty_prefix_loads_and_set_writes_through_the_source() {
    let mut consul = ConsulDouble::start().await.unwrap();
    let source = ConsulSource::new(&consul.address(), "app/config").unwrap();
    let config = Config::builder()
        .source(source)
        .build()
        .await
        .expect("404 is empty");
    assert!(!config.get("mysql").exists());
    let mut watch = config.watch::<Mysql>("mysql");
    assert!(
        next_within(&mut watch, Duration::from_secs(2))
            .await
            .is_err(),
        "not set yet"
    );

    let writer = ConsulSource::new(&consul.address(), "app/config").unwrap();
    writer
        .set("mysql", &json!({"host": "a", "port": 1}))
        .await
        .unwrap();
    assert_eq!(
        next_within(&mut watch, Duration::from_secs(2))
            .await
            .unwrap()
            .host,
        "a"
    );

    // The agent goes away and comes back: reported, values kept, watch resumes.
    consul.stop();
    let err = next_within(&mut watch, Duration::from_secs(40))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("consul://"), "{err}");
    assert_eq!(config.get("mysql.host").string().unwrap(), "a");
    consul.resume().await.unwrap();
    writer.set("mysql.host", &json!("b")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match next_within(&mut watch, Duration::from_secs(20)).await {
            Ok(mysql) if mysql.host == "b" => break,
            _ => assert!(Instant::now() < deadline, "the watch never resumed"),
        }
    }
}
