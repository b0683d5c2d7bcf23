//! `rmicro new`: the project it makes builds, its own tests pass, its binary
//! starts, registers, and answers `rmicro call`; bad names, unbuilt options and an
//! existing directory are refused with a sentence.

mod common;

use common::{Guard, repo_root};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The target directory this test was built in: the generated project builds
/// there too, reusing every crate already compiled.
fn target_dir() -> PathBuf {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_rmicro"));
    binary
        .parent()
        .and_then(Path::parent)
        .expect("the binary sits in <target>/<profile>/")
        .to_owned()
}

fn fresh_dir(test: &str) -> PathBuf {
    common::fresh_dir("new", test)
}

fn rmicro(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rmicro"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("rmicro runs")
}

#[test]
fn bad_names_unbuilt_options_and_existing_directories_are_refused() {
    let dir = fresh_dir("refused");
    for (name, rule) in [
        ("Bad.Name", "starts with a lower-case letter"),
        ("my.svc", "only lower-case letters, digits"),
        ("self", "Rust keyword"),
    ] {
        let out = rmicro(&dir, &["new", name]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(rule), "{name}: {stderr}");
    }
    let out = rmicro(&dir, &["new", "shop", "--db", "sqlite"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--db sqlite") && stderr.contains("--db none"),
        "{stderr}"
    );
    assert!(!dir.join("shop").exists(), "nothing written for a refusal");

    let out = rmicro(&dir, &["new", "shop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join("shop/src/handler/mod.rs"), "// mine").expect("edit");
    let again = rmicro(&dir, &["new", "shop"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("already exists") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("shop/src/handler/mod.rs")).expect("kept"),
        "// mine",
        "the refused run changed nothing"
    );
    let forced = rmicro(&dir, &["new", "shop", "--force"]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert_ne!(
        std::fs::read_to_string(dir.join("shop/src/handler/mod.rs")).expect("written"),
        "// mine"
    );
    // --registry and --broker compile their adapters in and are what `make run` uses.
    let out = rmicro(
        &dir,
        &["new", "edge", "--registry", "etcd", "--broker", "nats"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = std::fs::read_to_string(dir.join("edge/Cargo.toml")).expect("manifest");
    assert!(
        manifest.contains(r#"features = ["etcd", "nats"]"#),
        "{manifest}"
    );
    let makefile = std::fs::read_to_string(dir.join("edge/Makefile")).expect("Makefile");
    assert!(
        makefile.contains("--registry etcd --broker nats"),
        "{makefile}"
    );
    // Without --rmicro-path the project depends on the released version.
    let manifest = std::fs::read_to_string(dir.join("shop/Cargo.toml")).expect("manifest");
    assert!(
        manifest.contains(&format!(
            "rmicro = {{ version = \"{}\" }}",
            env!("CARGO_PKG_VERSION")
        )),
        "{manifest}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_new_project_builds_passes_its_tests_and_answers_calls() {
    let dir = fresh_dir("build");
    let root = repo_root();
    let out = rmicro(
        &dir,
        &[
            "new",
            "demo-svc",
            "--rmicro-path",
            root.to_str().expect("a UTF-8 checkout path"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let project = dir.join("demo-svc");
    for file in [
        "Cargo.toml",
        "build.rs",
        "proto/demo-svc.proto",
        "src/main.rs",
        "src/handler/mod.rs",
        "src/domain/model/mod.rs",
        "src/domain/repository/mod.rs",
        "src/domain/service/mod.rs",
        "src/subscriber/mod.rs",
        "migrations/README.md",
        "config/config.yaml",
        "tests/service.rs",
        "Dockerfile",
        "Makefile",
        "README.md",
        ".gitignore",
        "Cargo.lock",
    ] {
        assert!(project.join(file).is_file(), "{file} is made");
    }

    // Its own tests, in the target directory this test was built in.
    let target = target_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let tested = Command::new(&cargo)
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &target)
        .args(["test", "--quiet"])
        .output()
        .expect("cargo runs");
    assert!(
        tested.status.success(),
        "the project's tests:\n{}\n{}",
        String::from_utf8_lossy(&tested.stdout),
        String::from_utf8_lossy(&tested.stderr)
    );
    let built = Command::new(&cargo)
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &target)
        .args(["build", "--quiet", "--bin", "demo-svc"])
        .output()
        .expect("cargo runs");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );

    // Its binary registers in the local registry and answers `rmicro call`.
    let registry = dir.join("registry");
    let registry = registry.to_str().expect("a UTF-8 path");
    let _service = Guard(
        Command::new(target.join("debug/demo-svc"))
            .args([
                "--server-address",
                "127.0.0.1:0",
                "--registry",
                "local",
                "--registry-address",
                registry,
            ])
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the service starts"),
    );
    let call = |json: &str| {
        rmicro(
            &dir,
            &[
                "call",
                "demo-svc",
                "DemoSvc.Create",
                json,
                "--registry",
                "local",
                "--registry-address",
                registry,
            ],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let made = loop {
        let out = call(r#"{"name": "first"}"#);
        if out.status.success() {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "no answer within 30 s: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let reply: serde_json::Value = serde_json::from_slice(&made.stdout).expect("the reply is JSON");
    assert_eq!(reply["name"], "first", "{reply}");
    let refused = call(r#"{"name": ""}"#);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("name must not be empty"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
