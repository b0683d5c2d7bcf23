//! The deploy files as their tools would read them — no Docker engine or
//! Kubernetes cluster runs here, so each file is parsed and every binary, flag,
//! environment variable, port, mounted path and configuration value it names is
//! checked against the binaries as built (their `--help`) and the types that
//! read the configuration.

mod common;

use common::{binary, repo_root};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
        })
        .collect()
}

/// The `--help` of `image`'s binary (with the subcommand `args` start with).
fn help(image: &str, args: &[String]) -> String {
    let (bin, sub) = match image.split(':').next().unwrap_or_default() {
        "rmicro/user" => ("user", None),
        "rmicro/rmicro" => ("rmicro", args.first().cloned()),
        other => panic!("no binary of this repository is the image `{other}`"),
    };
    let out = Command::new(binary(bin))
        .args(sub.iter())
        .arg("--help")
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "{bin} --help: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every `--flag` of `args` is one `help` lists.
fn flags_exist(what: &str, args: &[String], help: &str) {
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        let name = flag.split('=').next().unwrap_or_default();
        assert!(
            help.contains(&format!("{name} "))
                || help.contains(&format!("{name}\n"))
                || help.contains(&format!("{name} <")),
            "{what}: `{name}` is not a flag of the binary"
        );
    }
}

/// `name` is an environment variable the binary reads: one its `--help` shows,
/// or a `MICRO_*` configuration path into a section the user service reads.
fn env_exists(what: &str, name: &str, help: &str) {
    if help.contains(&format!("[env: {name}=")) {
        return;
    }
    let path = name
        .strip_prefix("MICRO_")
        .unwrap_or_else(|| panic!("{what}: `{name}` is read by nothing"))
        .to_ascii_lowercase()
        .split("__")
        .map(|p| p.replace('_', "."))
        .collect::<Vec<_>>()
        .join("_");
    let (section, field) = path.split_once('.').unwrap_or((&path, ""));
    // The sections refuse unknown fields: a field is known when that is not
    // the complaint (the value's type may well be).
    let probe = serde_json::json!({ field: "1" });
    let known = |result: Result<(), serde_json::Error>| {
        result.map_or_else(|e| !e.to_string().contains("unknown field"), |()| true)
    };
    let known = match section {
        "mysql" => known(serde_json::from_value::<rmicro::db::DbSettings>(probe).map(drop)),
        "user" => known(serde_json::from_value::<user::domain::service::Settings>(probe).map(drop)),
        _ => false,
    };
    assert!(
        known,
        "{what}: `{name}` ({path}) is neither a flag's variable nor a field of a config section"
    );
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string())
        })
        .collect()
}

#[test]
fn the_compose_file_runs_the_seeds_stack_with_flags_the_binaries_have() {
    let path = repo_root().join("deploy/compose.yaml");
    let compose = yaml_documents(&path).remove(0);
    for included in strings(&compose["include"]) {
        assert!(
            repo_root().join("deploy").join(&included).is_file(),
            "includes {included}"
        );
    }
    let services = compose["services"].as_object().expect("services");
    for name in ["consul", "consul-seed", "mysql", "user", "api"] {
        assert!(services.contains_key(name), "the stack has {name}");
    }
    assert_eq!(
        services["user"]["deploy"]["replicas"], 2,
        "the user service ×2"
    );
    for name in ["user", "api"] {
        let service = &services[name];
        let dockerfile = repo_root().join(
            service["build"]["dockerfile"]
                .as_str()
                .expect("a Dockerfile"),
        );
        assert!(dockerfile.is_file(), "{name}: {}", dockerfile.display());
        let image = service["image"].as_str().expect("an image name");
        let args = strings(&service["command"]);
        let help = help(image, &args);
        flags_exist(name, &args, &help);
        for var in service["environment"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            env_exists(name, var, &help);
        }
        let registry = args
            .iter()
            .position(|a| a == "--registry")
            .map(|i| args[i + 1].as_str());
        assert_eq!(registry, Some("consul"), "{name} finds services in Consul");
    }
    // The seeded keys are what the user service reads from its config source.
    let user_args = strings(&services["user"]["command"]);
    let source = user_args
        .iter()
        .position(|a| a == "--config-source")
        .map(|i| user_args[i + 1].clone())
        .expect("the user service reads Consul");
    let prefix = source.splitn(4, '/').nth(3).expect("a prefix").to_owned();
    let seed = strings(&services["consul-seed"]["entrypoint"]).join(" ");
    let mut seeded = 0;
    for line in seed.lines() {
        let Some(rest) = line.split("consul kv put ").nth(1) else {
            continue;
        };
        let (key, value) = rest.split_once(" '").expect("key 'value'");
        let value = value.split('\'').next().expect("a quoted value");
        let section = key
            .strip_prefix(&format!("{prefix}/"))
            .unwrap_or_else(|| panic!("{key} is under {prefix}"));
        let json: Value = serde_json::from_str(value).unwrap_or_else(|e| panic!("{key}: {e}"));
        match section {
            "mysql" => {
                let settings: rmicro::db::DbSettings =
                    serde_json::from_value(json).expect("the mysql section");
                let url = settings.url().expect("names a database");
                assert_eq!(url.to_string(), "mysql://mysql:3306/user");
                let mysql = &services["mysql"]["environment"];
                assert_eq!(mysql["MYSQL_DATABASE"], "user");
                assert_eq!(
                    settings.pwd,
                    mysql["MYSQL_ROOT_PASSWORD"].as_str().expect("a password")
                );
            }
            "user" => {
                let settings: user::domain::service::Settings =
                    serde_json::from_value(json).expect("the user section");
                user::domain::service::Tokens::new(&settings).expect("a key the service accepts");
            }
            other => panic!("{key}: no section `{other}` is read"),
        }
        seeded += 1;
    }
    assert_eq!(seeded, 2, "mysql and user are seeded: {seed}");
}

#[test]
fn the_kubernetes_manifests_probe_grpc_health_and_name_what_exists() {
    let dir = repo_root().join("deploy/k8s");
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("deploy/k8s") {
        docs.extend(yaml_documents(&entry.expect("an entry").path()));
    }
    let named = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
    };
    let mut deployments = 0;
    for deployment in docs.iter().filter(|d| d["kind"] == "Deployment") {
        let spec = &deployment["spec"]["template"]["spec"];
        for container in spec["containers"].as_array().expect("containers") {
            let image = container["image"].as_str().expect("an image");
            if !image.starts_with("rmicro/") {
                continue;
            }
            deployments += 1;
            let what = container["name"].as_str().unwrap_or_default().to_owned();
            let args = strings(&container["args"]);
            let help = help(image, &args);
            flags_exist(&what, &args, &help);
            for env in container["env"].as_array().into_iter().flatten() {
                let name = env["name"].as_str().expect("a name");
                if name != "POD_IP" {
                    env_exists(&what, name, &help);
                }
            }
            for from in container["envFrom"].as_array().into_iter().flatten() {
                let secret = from["secretRef"]["name"].as_str().expect("a secret");
                let secret =
                    named("Secret", secret).unwrap_or_else(|| panic!("{what}: no Secret {secret}"));
                for name in secret["stringData"].as_object().expect("stringData").keys() {
                    env_exists(&what, name, &help);
                }
            }
            let ports: Vec<i64> = container["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["containerPort"].as_i64())
                .collect();
            for probe in ["readinessProbe", "livenessProbe"] {
                let probe = &container[probe];
                let port = probe["grpc"]["port"]
                    .as_i64()
                    .or(probe["httpGet"]["port"].as_i64());
                assert!(
                    port.is_some_and(|p| ports.contains(&p)),
                    "{what}: {probe} on a port it exposes"
                );
            }
            if image.starts_with("rmicro/user") {
                assert!(
                    container["readinessProbe"]["grpc"].is_object(),
                    "readiness through gRPC health"
                );
                assert_eq!(
                    container["livenessProbe"]["grpc"]["service"],
                    rmicro::server::LIVENESS
                );
                let listen = container["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| e["name"] == "MICRO_SERVER_ADDRESS")
                    .and_then(|e| e["value"].as_str())
                    .expect("a server address");
                assert!(
                    ports.iter().any(|p| listen.ends_with(&format!(":{p}"))),
                    "{listen}"
                );
                // The config file it reads is the ConfigMap mounted there.
                let file = args
                    .iter()
                    .position(|a| a == "--config-file")
                    .map(|i| args[i + 1].clone())
                    .expect("--config-file");
                let mount = container["volumeMounts"][0]["mountPath"]
                    .as_str()
                    .expect("a mount");
                let (dir_part, file_part) = file.rsplit_once('/').expect("a path");
                assert_eq!(dir_part, mount);
                let map = spec["volumes"][0]["configMap"]["name"]
                    .as_str()
                    .expect("a ConfigMap");
                let map = named("ConfigMap", map).expect("the ConfigMap exists");
                let config: Value =
                    serde_norway::from_str(map["data"][file_part].as_str().expect("the file"))
                        .expect("YAML");
                let mut mysql: rmicro::db::DbSettings =
                    serde_json::from_value(config["mysql"].clone()).expect("mysql");
                mysql.pwd = "from the secret".into();
                assert_eq!(
                    mysql.url().expect("a database").to_string(),
                    "mysql://mysql:3306/user"
                );
                let _: user::domain::service::Settings =
                    serde_json::from_value(config["user"].clone()).expect("user");
            }
            let registry = args
                .iter()
                .position(|a| a == "--registry")
                .map(|i| args[i + 1].as_str());
            assert_eq!(registry, Some("etcd"));
            assert!(
                named("Service", "etcd").is_some(),
                "the etcd it registers in"
            );
        }
        let app = &deployment["spec"]["selector"]["matchLabels"]["app"];
        let service = docs
            .iter()
            .find(|d| d["kind"] == "Service" && d["spec"]["selector"]["app"] == *app)
            .unwrap_or_else(|| panic!("a Service for {app}"));
        let exposed: Vec<i64> = spec["containers"][0]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["containerPort"].as_i64())
            .collect();
        for port in service["spec"]["ports"].as_array().expect("ports") {
            let target = port["targetPort"].as_i64().expect("a target port");
            assert!(
                exposed.contains(&target),
                "{app}: the Service targets {target}, exposed {exposed:?}"
            );
        }
    }
    assert_eq!(deployments, 2, "the user service and the gateway");
}

#[test]
fn the_dockerfiles_are_multi_stage_non_root_and_check_health() {
    for (file, bin) in [
        ("services/user/Dockerfile", "user"),
        ("crates/rmicro-cli/Dockerfile", "rmicro"),
    ] {
        let text = std::fs::read_to_string(repo_root().join(file)).expect("the Dockerfile");
        let stages = text.lines().filter(|l| l.starts_with("FROM ")).count();
        assert_eq!(stages, 2, "{file}: a build stage and a small runtime stage");
        assert!(
            text.contains(&format!("--bin {bin}")),
            "{file} builds {bin}"
        );
        assert!(
            text.contains(&format!("/src/target/release/{bin} /usr/local/bin/{bin}")),
            "{file} ships {bin}"
        );
        assert!(
            text.contains("USER 10001"),
            "{file} runs as a user, not root"
        );
        assert!(
            text.contains("--locked"),
            "{file} builds with the lock file"
        );
    }
    let user = std::fs::read_to_string(repo_root().join("services/user/Dockerfile"))
        .expect("the Dockerfile");
    let check = user
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .nth(1)
        .expect("a HEALTHCHECK");
    assert!(
        check.contains(r#"["/usr/local/bin/user", "--health-check"]"#),
        "{check}"
    );
    assert!(help("rmicro/user", &[]).contains("--health-check"));
}
