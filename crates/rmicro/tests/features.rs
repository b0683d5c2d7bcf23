//! The facade's features decide which adapters a binary has, with no call at start.

fn assert_selectable(names: &[String], expected: &[(bool, &str)]) {
    for (enabled, name) in expected {
        assert_eq!(
            names.iter().any(|n| n == name),
            *enabled,
            "`{name}` should be selectable exactly when its feature is on; known: {names:?}"
        );
    }
}

#[tokio::test]
async fn registries_and_config_centers_follow_the_features() {
    let names = rmicro::registry::names();
    assert_selectable(
        &names,
        &[
            (true, "local"),
            (true, "memory"),
            (cfg!(feature = "etcd"), "etcd"),
            (cfg!(feature = "consul"), "consul"),
            (cfg!(feature = "mdns"), "mdns"),
        ],
    );
    // The config-center side of etcd and Consul: a URL with their scheme builds a
    // source (nothing connects until it is read) exactly when the feature is on.
    for (enabled, url) in [
        (cfg!(feature = "etcd"), "etcd://127.0.0.1:1/micro/config"),
        (
            cfg!(feature = "consul"),
            "consul://127.0.0.1:1/micro/config",
        ),
    ] {
        let built = rmicro::config::source::from_url(url);
        assert_eq!(built.is_ok(), enabled, "{url}: {:?}", built.err());
    }
}

#[test]
fn brokers_follow_the_features() {
    let names = rmicro::broker::names();
    assert_selectable(
        &names,
        &[
            (true, "memory"),
            (cfg!(feature = "nats"), "nats"),
            (cfg!(feature = "nats"), "nats-core"),
            (cfg!(feature = "redis"), "redis"),
            (cfg!(feature = "rabbitmq"), "rabbitmq"),
            (cfg!(feature = "mqtt"), "mqtt"),
        ],
    );
}

#[test]
fn a_flag_selects_a_linked_adapter() {
    if !cfg!(feature = "nats") {
        eprintln!("SKIPPED a_flag_selects_a_linked_adapter: built without feature `nats`");
        return;
    }
    let service = rmicro::Service::builder("features")
        .args([
            "features",
            "--broker",
            "nats",
            "--broker-address",
            "127.0.0.1:1",
        ])
        .install_logging(false)
        .build()
        .expect("--broker nats builds with the feature on");
    assert!(
        service.broker().describe().starts_with("nats"),
        "{}",
        service.broker().describe()
    );
}
