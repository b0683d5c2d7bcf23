//! etcd as a config center, against a real etcd started on free loopback ports.

use futures_util::StreamExt;
use rmicro::config::Config;
use rmicro::config::source::Source;
use rmicro_etcd::testing::EtcdServer;
use rmicro_etcd::{EtcdClient, EtcdSource};
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

#[tokio::test]
async fn keys_under_the_prefix_are_paths_and_changes_arrive_within_a_second() {
    let Some(etcd) = EtcdServer::start_or_skip("etcd config watch").await else {
        return;
    };
    let raw = EtcdClient::new(&etcd.address()).unwrap();
    raw.put(
        "/micro/config/mysql",
        br#"{"host": "db", "port": 3306}"#.to_vec(),
        0,
    )
    .await
    .unwrap();
    raw.put("/micro/config/mysql/port", b"3307".to_vec(), 0)
        .await
        .unwrap();
    raw.put(
        "/micro/config/cache",
        b"redis:\n  addr: 127.0.0.1:6379\n".to_vec(),
        0,
    )
    .await
    .unwrap();
    raw.put("/micro/configuration/other", b"1".to_vec(), 0)
        .await
        .unwrap();
    let config = Config::builder()
        .source(EtcdSource::new(&etcd.address(), "/micro/config").unwrap())
        .build()
        .await
        .expect("loads from etcd");
    assert_eq!(
        config.get("mysql").scan::<Mysql>().unwrap(),
        Mysql {
            host: "db".into(),
            port: 3307
        }
    );
    assert_eq!(
        config.get("cache.redis.addr").string().unwrap(),
        "127.0.0.1:6379",
        "YAML values"
    );
    assert!(
        !config.get("ration").exists(),
        "a sibling prefix is not ours"
    );
    let source = format!("etcd://{}/micro/config", etcd.address());
    assert_eq!(config.get("mysql.port").source(), Some(source));

    let mut watch = config.watch::<Mysql>("mysql");
    assert_eq!(
        next_within(&mut watch, Duration::from_secs(2))
            .await
            .unwrap()
            .port,
        3307
    );
    let written = Instant::now();
    raw.put("/micro/config/mysql/port", b"3308".to_vec(), 0)
        .await
        .unwrap();
    let changed = next_within(&mut watch, Duration::from_secs(1))
        .await
        .unwrap();
    eprintln!(
        "etcd change seen by the watch after {:?}",
        written.elapsed()
    );
    assert_eq!(changed.port, 3308);

    // Bad JSON (and not YAML either): reported on the watch, last good value kept.
    raw.put("/micro/config/mysql/port", br#"{"port": "#.to_vec(), 0)
        .await
        .unwrap();
    let err = next_within(&mut watch, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("/micro/config/mysql/port"),
        "{err}"
    );
    assert_eq!(config.get("mysql.port").int().unwrap(), 3308);

    // Deleting a key removes its value.
    raw.delete("/micro/config/mysql/port").await.unwrap();
    let after = next_within(&mut watch, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(after.port, 3306);
}

#[tokio::test]
async fn the_watch_resumes_after_etcd_restarts() {
    let Some(mut etcd) = EtcdServer::start_or_skip("etcd config restart").await else {
        return;
    };
    let source = EtcdSource::new(&etcd.address(), "/app").unwrap();
    source
        .set("mysql", &json!({"host": "a", "port": 1}))
        .await
        .unwrap();
    let config = Config::builder().source(source).build().await.unwrap();
    let mut watch = config.watch::<Mysql>("mysql");
    assert_eq!(
        next_within(&mut watch, Duration::from_secs(2))
            .await
            .unwrap()
            .host,
        "a"
    );

    etcd.stop();
    // The lost connection is reported; the values stay.
    let err = next_within(&mut watch, Duration::from_secs(15))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("etcd://"), "{err}");
    assert_eq!(config.get("mysql.host").string().unwrap(), "a");

    etcd.resume().await.expect("etcd restarts");
    let raw = EtcdClient::new(&etcd.address()).unwrap();
    raw.put("/app/mysql", br#"{"host": "b", "port": 2}"#.to_vec(), 0)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match next_within(&mut watch, Duration::from_secs(20)).await {
            Ok(mysql) if mysql.host == "b" => break,
            Ok(_) | Err(_) => assert!(Instant::now() < deadline, "the watch never resumed"),
        }
    }
}

#[tokio::test]
async fn an_unreachable_center_fails_loading_with_a_sentence() {
    let source = EtcdSource::new("127.0.0.1:1", "/micro/config").unwrap();
    let err = Config::builder()
        .source(source)
        .ready_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("etcd://127.0.0.1:1/micro/config"), "{text}");
    assert!(text.contains("not loaded within 2s"), "{text}");
    assert!(
        text.contains("Connection refused") || text.contains("connect"),
        "{text}"
    );
}
