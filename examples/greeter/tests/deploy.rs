//! The files in `deploy/observability` as the tools read them (no Docker engine runs
//! here): the YAML parses and says what the stack needs, Prometheus's own `promtool`
//! accepts the scrape config, and the Grafana dashboard's queries are PromQL (each is
//! run against a real Prometheus in `tests/prometheus.rs`).

mod common;

use common::{dashboard_queries, repo_root, require};
use std::process::Command;

fn yaml(path: &str) -> serde_json::Value {
    let full = repo_root().join("deploy/observability").join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

#[test]
fn the_compose_file_runs_the_seeds_stack_with_otlp_and_the_configs() {
    let compose = yaml("compose.yaml");
    let services = compose["services"].as_object().expect("services");
    for name in [
        "jaeger",
        "prometheus",
        "grafana",
        "elasticsearch",
        "kibana",
        "filebeat",
    ] {
        let image = services[name]["image"].as_str().unwrap_or_default();
        assert!(
            image.contains(':'),
            "{name} pins an image version: {image:?}"
        );
    }
    let jaeger = &services["jaeger"];
    assert_eq!(jaeger["environment"]["COLLECTOR_OTLP_ENABLED"], "true");
    let ports: Vec<&str> = jaeger["ports"]
        .as_array()
        .expect("jaeger ports")
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    for port in ["16686:16686", "4317:4317", "4318:4318"] {
        assert!(ports.contains(&port), "jaeger publishes {port}: {ports:?}");
    }
    // Every file a service mounts from here exists.
    for (name, service) in services {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume
                .as_str()
                .unwrap_or_default()
                .split(':')
                .next()
                .unwrap_or_default();
            if let Some(local) = source.strip_prefix("./") {
                let path = repo_root().join("deploy/observability").join(local);
                assert!(path.exists(), "{name} mounts {source}, which is missing");
            }
        }
    }
}

#[test]
fn prometheus_grafana_and_filebeat_configs_parse_and_point_at_each_other() {
    let prometheus = yaml("prometheus.yml");
    let jobs = prometheus["scrape_configs"]
        .as_array()
        .expect("scrape configs");
    assert!(jobs.iter().any(|job| job["metrics_path"] == "/metrics"));
    let datasource = yaml("grafana/provisioning/datasources/prometheus.yaml");
    assert_eq!(
        datasource["datasources"][0]["url"],
        "http://prometheus:9090"
    );
    let provider = yaml("grafana/provisioning/dashboards/rmicro.yaml");
    assert_eq!(
        provider["providers"][0]["options"]["path"],
        "/var/lib/grafana/dashboards"
    );
    let filebeat = yaml("filebeat.yml");
    assert!(
        filebeat["filebeat.inputs"][0]["parsers"][0]["ndjson"].is_object(),
        "Filebeat reads one JSON object per line"
    );
    assert_eq!(
        filebeat["output.elasticsearch"]["hosts"][0],
        "http://elasticsearch:9200"
    );
    let queries = dashboard_queries();
    assert!(queries.len() >= 8, "{queries:?}");
    assert!(queries.iter().any(|q| q.contains("micro_request_total")));
    assert!(
        queries
            .iter()
            .any(|q| q.contains("micro_request_duration_seconds_bucket"))
    );
}

#[test]
fn promtool_accepts_the_scrape_config() {
    let found = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file());
    let Some(promtool) = require(found, "promtool", "apt-get install -y prometheus") else {
        return;
    };
    let output = Command::new(promtool)
        .args(["check", "config"])
        .arg(repo_root().join("deploy/observability/prometheus.yml"))
        .output()
        .expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool refused the config:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
