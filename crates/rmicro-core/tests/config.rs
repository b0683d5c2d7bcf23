//! Configuration layers, typed reads and file watching, through the public API.

extern crate rmicro_core as rmicro;

use futures_util::StreamExt;
use rmicro::config::source::{Env, File, Values};
use rmicro::config::{Config, ConfigError};
use serde::Deserialize;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Deserialize, PartialEq)]
struct Mysql {
    host: String,
    port: u16,
    user: String,
    password: String,
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("rmicro-config-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
async fn each_layer_overrides_the_one_below_and_reports_its_source() {
    let dir = TempDir::new("layers");
    let file = dir.0.join("app.yaml");
    std::fs::write(
        &file,
        "mysql:\n  host: file-host\n  port: 3307\n  user: file-user\n",
    )
    .unwrap();
    let config = Config::builder()
        .defaults(
            json!({"mysql": {"host": "localhost", "port": 3306, "user": "root", "password": ""}}),
        )
        .source(File::new(&file).unwrap())
        .source(Env::from_vars(
            "MICRO_",
            vec![
                ("MICRO_MYSQL_PORT".into(), "3308".into()),
                ("MICRO_MYSQL_USER".into(), "env-user".into()),
            ],
        ))
        .source(Values::from_pairs("flags", [("mysql.user", "flag-user")]))
        .build()
        .await
        .expect("loads");
    let mysql: Mysql = config.get("mysql").scan().expect("scans");
    assert_eq!(
        mysql,
        Mysql {
            host: "file-host".into(),
            port: 3308,
            user: "flag-user".into(),
            password: String::new(),
        }
    );
    assert_eq!(
        config.get("mysql.password").source().as_deref(),
        Some("defaults")
    );
    assert_eq!(
        config.get("mysql.host").source(),
        Some(format!("file:{}", file.display()))
    );
    assert_eq!(
        config.get("mysql.port").source().as_deref(),
        Some("env:MICRO_*")
    );
    assert_eq!(config.get("mysql.user").source().as_deref(), Some("flags"));
    assert_eq!(config.get("mysql.port").int_or(1), 3308);
    assert_eq!(config.get("mysql.pool.size").int_or(10), 10);
    assert_eq!(config.get("mysql.host").string_or("x"), "file-host");
    assert!(!config.get("mysql.pool").exists());
}

#[tokio::test]
async fn type_errors_name_the_path_the_source_and_the_expected_type() {
    let config = Config::builder()
        .defaults(json!({"mysql": {"host": "h", "port": 3306, "user": "u", "password": "p"}}))
        .source(Env::from_vars(
            "MICRO_",
            vec![("MICRO_MYSQL_PORT".into(), "many".into())],
        ))
        .build()
        .await
        .unwrap();
    let err = config.get("mysql").scan::<Mysql>().unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConfigError::Type { .. }), "{text}");
    assert!(text.contains("`mysql.port`"), "{text}");
    assert!(text.contains("env:MICRO_*"), "{text}");
    assert!(text.contains("u16"), "{text}");
    assert!(text.contains("\"many\""), "{text}");
    // A getter with a default falls back (and logs) instead of failing.
    assert_eq!(config.get("mysql.port").int_or(3306), 3306);
    let err = config.get("redis").scan::<Mysql>().unwrap_err();
    assert!(
        err.to_string()
            .contains("`redis` is not set in any source (defaults, env:MICRO_*)"),
        "{err}"
    );
    let err = config.get("mysql.host").duration().unwrap_err();
    assert!(err.to_string().contains("duration"), "{err}");
}

#[tokio::test]
async fn a_file_edit_is_seen_by_watch_and_a_broken_edit_keeps_the_last_good_value() {
    let dir = TempDir::new("watch");
    let file = dir.0.join("app.toml");
    std::fs::write(
        &file,
        "[mysql]\nhost = \"a\"\nport = 1\nuser = \"u\"\npassword = \"p\"\n",
    )
    .unwrap();
    let config = Config::builder()
        .source(
            File::new(&file)
                .unwrap()
                .poll_interval(Duration::from_millis(50)),
        )
        .build()
        .await
        .unwrap();
    let mut watch = config.watch::<Mysql>("mysql");
    let first = next_within(&mut watch, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(first.host, "a");

    std::fs::write(
        &file,
        "[mysql]\nhost = \"b\"\nport = 2\nuser = \"u\"\npassword = \"p\"\n",
    )
    .unwrap();
    let second = next_within(&mut watch, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((second.host.as_str(), second.port), ("b", 2));

    std::fs::write(&file, "[mysql\nhost = ").unwrap();
    let err = next_within(&mut watch, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("app.toml"), "{err}");
    assert_eq!(
        config.get("mysql.host").string().unwrap(),
        "b",
        "last good value kept"
    );

    // A value of the wrong type reaches the watch as an error too.
    std::fs::write(
        &file,
        "[mysql]\nhost = \"c\"\nport = \"x\"\nuser = \"u\"\npassword = \"p\"\n",
    )
    .unwrap();
    let err = next_within(&mut watch, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("mysql.port"), "{err}");

    std::fs::write(
        &file,
        "[mysql]\nhost = \"d\"\nport = 4\nuser = \"u\"\npassword = \"p\"\n",
    )
    .unwrap();
    let fourth = next_within(&mut watch, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(fourth.host, "d");
}

#[tokio::test]
async fn readers_never_see_half_an_update() {
    let dir = TempDir::new("atomic");
    let file = dir.0.join("app.json");
    std::fs::write(&file, r#"{"a": 0, "b": 0}"#).unwrap();
    let config = Config::builder()
        .source(
            File::new(&file)
                .unwrap()
                .poll_interval(Duration::from_millis(5)),
        )
        .build()
        .await
        .unwrap();
    let reader = {
        let config = config.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            while seen < 20 {
                let snapshot = config.snapshot();
                let tree = snapshot.tree();
                assert_eq!(tree["a"], tree["b"], "a torn read: {tree}");
                seen = tree["a"].as_i64().unwrap_or(0);
                tokio::task::yield_now().await;
            }
        })
    };
    for i in 1..=20 {
        let tmp = dir.0.join("app.json.tmp");
        std::fs::write(&tmp, format!(r#"{{"a": {i}, "b": {i}}}"#)).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while config.get("a").int().ok() != Some(i) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "update {i} not seen"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_service_loads_its_config_from_the_standard_flags() {
    let dir = TempDir::new("service");
    let file = dir.0.join("svc.json");
    std::fs::write(&file, r#"{"mysql": {"host": "file-host", "port": 1}}"#).unwrap();
    let prefix = format!("RMICRO_TEST_{}_", std::process::id());
    // SAFETY: set before any other thread of this test process reads the environment.
    unsafe { std::env::set_var(format!("{prefix}MYSQL_PORT"), "3310") };
    let service = rmicro::Service::builder("cfg")
        .config_defaults(json!({"mysql": {"host": "default", "port": 3306, "user": "root"}}))
        .args([
            "cfg".as_ref(),
            "--config-file".as_ref(),
            file.as_os_str(),
            "--config-env-prefix".as_ref(),
            prefix.as_ref(),
            "--config-set".as_ref(),
            "mysql.user=admin".as_ref(),
        ])
        .build()
        .expect("flags");
    let config = service.config();
    config.ready().await.expect("loaded");
    assert_eq!(config.get("mysql.host").string().unwrap(), "file-host");
    assert_eq!(config.get("mysql.port").int().unwrap(), 3310);
    assert_eq!(config.get("mysql.user").string().unwrap(), "admin");
    assert_eq!(config.sources().len(), 4, "{:?}", config.sources());

    let err = rmicro::Service::builder("cfg")
        .args(["cfg", "--config-set", "no-equals-sign"])
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("PATH=VALUE"), "{err}");
    let err = rmicro::Service::builder("cfg")
        .args(["cfg", "--config-file", "/etc/app.ini"])
        .build()
        .unwrap_err();
    assert!(err.to_string().contains(".yaml"), "{err}");
    let err = rmicro::Service::builder("cfg")
        .args(["cfg", "--config-source", "zk://h:1/x"])
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("unknown config center"), "{err}");
}

#[test]
fn a_config_built_outside_a_runtime_loads_on_ready() {
    let config = Config::builder()
        .defaults(json!({"a": 1}))
        .source(Values::from_pairs("flags", [("a", "2")]))
        .start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(config.ready())
        .expect("loads once a runtime runs it");
    assert_eq!(config.get("a").int().unwrap(), 2);
}
