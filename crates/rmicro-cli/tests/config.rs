//! `rmicro config get|set|watch` against a real etcd and the Consul agent double,
//! and the precedence of every configuration layer.

use rmicro::config::Config;
use rmicro::config::source::{Env, File, Source, Values};
use rmicro::consul::ConsulSource;
use rmicro::consul::testing::ConsulDouble;
use rmicro::etcd::EtcdSource;
use rmicro::etcd::testing::EtcdServer;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn rmicro(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rmicro"))
        .args(args)
        .env_remove("MICRO_CONFIG_SOURCE")
        .env_remove("MICRO_CONFIG_FILE")
        .output()
        .expect("rmicro runs")
}

/// Runs `rmicro args`, asserts it succeeded, and returns its trimmed stdout.
fn ok(args: &[&str]) -> String {
    let out = rmicro(args);
    assert!(
        out.status.success(),
        "rmicro {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_layer_overrides_the_ones_below() {
    let Some(etcd) = EtcdServer::start_or_skip("config precedence").await else {
        return;
    };
    let consul = ConsulDouble::start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("rmicro-precedence-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("app.yaml");
    std::fs::write(
        &file,
        "l: {file: file, env: file, flags: file, etcd: file, consul: file}\n",
    )
    .unwrap();
    let etcd_source = EtcdSource::new(&etcd.address(), "/micro/config").unwrap();
    etcd_source
        .set("l", &json!({"etcd": "etcd", "consul": "etcd"}))
        .await
        .unwrap();
    let consul_source = ConsulSource::new(&consul.address(), "micro/config").unwrap();
    consul_source
        .set("l.consul", &json!("consul"))
        .await
        .unwrap();
    let config = Config::builder()
        .defaults(
            json!({"l": {"defaults": "defaults", "file": "defaults", "env": "defaults",
                               "flags": "defaults", "etcd": "defaults", "consul": "defaults"}}),
        )
        .source(File::new(&file).unwrap())
        .source(Env::from_vars(
            "MICRO_",
            ["ENV", "FLAGS", "ETCD", "CONSUL"]
                .map(|k| (format!("MICRO_L_{k}"), "env".to_owned()))
                .to_vec(),
        ))
        .source(Values::from_pairs(
            "flags",
            [
                ("l.flags", "flags"),
                ("l.etcd", "flags"),
                ("l.consul", "flags"),
            ],
        ))
        .source(etcd_source)
        .source(consul_source)
        .build()
        .await
        .expect("all layers load");
    for layer in ["defaults", "file", "env", "flags", "etcd", "consul"] {
        assert_eq!(
            config.get(&format!("l.{layer}")).string().unwrap(),
            layer,
            "{layer} wins its own key and loses the ones above it"
        );
    }
    assert!(
        config
            .get("l.etcd")
            .source()
            .unwrap()
            .starts_with("etcd://")
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_set_and_watch_from_the_command_line() {
    let Some(etcd) = EtcdServer::start_or_skip("rmicro config").await else {
        return;
    };
    let url = format!("etcd://{}/micro/config", etcd.address());
    ok(&[
        "config",
        "set",
        "mysql",
        r#"{"host":"db","port":3306}"#,
        "--config-source",
        &url,
    ]);
    let get = ok(&["config", "get", "mysql.port", "--config-source", &url]);
    assert_eq!(get, "3306");
    let get = rmicro(&["config", "get", "mysql", "--config-source", &url]);
    let value: serde_json::Value = serde_json::from_slice(&get.stdout).unwrap();
    assert_eq!(value, json!({"host": "db", "port": 3306}));

    let missing = rmicro(&["config", "get", "redis", "--config-source", &url]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("`redis` is not set"));
    let bad = rmicro(&["config", "set", "mysql.host", "db", "--config-source", &url]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not JSON"));
    let unknown = rmicro(&["config", "get", "x", "--config-source", "zk://h:1/x"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown config center `zk`"));

    // watch prints the value now and after each change, one JSON line each.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_rmicro"))
        .args(["config", "watch", "mysql.port", "--config-source", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("watch starts");
    let stdout = watch.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = |what: &str| {
        lines_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no line for {what}"))
    };
    assert_eq!(next("the current value"), "3306");
    let set = rmicro(&[
        "config",
        "set",
        "mysql.port",
        "3307",
        "--config-source",
        &url,
    ]);
    assert!(set.status.success());
    assert_eq!(next("the change"), "3307");
    let _ = watch.kill();
    let _ = watch.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn get_and_set_through_consul_kv() {
    let consul = ConsulDouble::start().await.unwrap();
    let url = format!("consul://{}/micro/config", consul.address());
    ok(&[
        "config",
        "set",
        "mysql.host",
        r#""db""#,
        "--config-source",
        &url,
    ]);
    let get = ok(&["config", "get", "mysql", "--config-source", &url]);
    assert_eq!(get, r#"{"host":"db"}"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn config_get_hides_secrets_unless_asked() {
    let consul = ConsulDouble::start().await.unwrap();
    let url = format!("consul://{}/micro/config", consul.address());
    ok(&[
        "config",
        "set",
        "mysql",
        r#"{"host":"db","user":"root","pwd":"Pw-7f3a9","dsn":"mysql://root:Pw-7f3a9@db/user"}"#,
        "--config-source",
        &url,
    ]);
    let shown = ok(&["config", "get", "mysql", "--config-source", &url]);
    assert!(!shown.contains("Pw-7f3a9"), "a secret is printed: {shown}");
    let value: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        value,
        json!({"host": "db", "user": "root", "pwd": "***", "dsn": "mysql://root:***@db/user"})
    );
    assert_eq!(
        ok(&["config", "get", "mysql.pwd", "--config-source", &url]),
        r#""***""#
    );
    let all = ok(&[
        "config",
        "get",
        "mysql",
        "--show-secrets",
        "--config-source",
        &url,
    ]);
    let value: serde_json::Value = serde_json::from_str(&all).unwrap();
    assert_eq!(value["pwd"], "Pw-7f3a9");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_reads_its_config_center_from_the_standard_flags() {
    let Some(etcd) = EtcdServer::start_or_skip("service config center").await else {
        return;
    };
    let url = format!("etcd://{}/micro/config", etcd.address());
    let source = EtcdSource::new(&etcd.address(), "/micro/config").unwrap();
    source
        .set("mysql", &json!({"host": "db", "port": 3306}))
        .await
        .unwrap();
    let service = rmicro::Service::builder("greeter")
        .address("127.0.0.1:0")
        .registry(std::sync::Arc::new(rmicro::registry::MemoryRegistry::new()))
        .config_defaults(json!({"mysql": {"host": "localhost", "pool": 4}}))
        .args(["greeter", "--log-level", "warn", "--config-source", &url])
        .handle(greeter::proto::GreeterServer::new(greeter::Greeter))
        .build()
        .unwrap();
    // start() waits for the config sources to load.
    let server = service.start().await.unwrap();
    let config = service.config();
    assert_eq!(config.get("mysql.host").string().unwrap(), "db");
    assert_eq!(config.get("mysql.pool").int().unwrap(), 4);
    let mut watch = config.watch::<u16>("mysql.port");
    let mut next = async || {
        let item = tokio::time::timeout(
            Duration::from_secs(2),
            futures_util::StreamExt::next(&mut watch),
        );
        item.await.expect("in time").expect("open").expect("a port")
    };
    assert_eq!(next().await, 3306);
    source.set("mysql.port", &json!(3307)).await.unwrap();
    assert_eq!(next().await, 3307);
    assert!(server.stop().await);
}
