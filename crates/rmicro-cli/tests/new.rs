//! `rmicro new`: the project it makes builds, its own tests pass, its binary
//! starts, registers, and answers `rmicro call`, on each `--db`; bad names, unknown options and an
//! existing directory are refused with a sentence.

mod common;

use common::{Guard, cargo_in, repo_root};
use rmicro::db::Backend;
use rmicro::db::sea_orm::ConnectionTrait;
use rmicro::db::testing::TestDatabase;
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
fn bad_names_unknown_options_and_existing_directories_are_refused() {
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
    let out = rmicro(&dir, &["new", "shop", "--db", "oracle"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("oracle") && stderr.contains("sqlite, mysql, postgres, none"),
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
        manifest.contains(r#"features = ["etcd", "nats", "db"]"#),
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
            "rmicro = {{ version = \"{}\", features = [\"db\"] }}",
            env!("CARGO_PKG_VERSION")
        )),
        "{manifest}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_new_project_on_sqlite_the_default_builds_passes_its_tests_and_answers_calls() {
    builds_passes_its_tests_and_answers_calls("sqlite");
}

#[test]
fn a_new_project_on_mysql_builds_passes_its_tests_and_answers_calls() {
    builds_passes_its_tests_and_answers_calls("mysql");
}

#[test]
fn a_new_project_on_postgres_builds_passes_its_tests_and_answers_calls() {
    builds_passes_its_tests_and_answers_calls("postgres");
}

#[test]
fn a_new_project_in_memory_builds_passes_its_tests_and_answers_calls() {
    builds_passes_its_tests_and_answers_calls("none");
}

/// `rmicro new --db DB` (no flag for `sqlite`, the default), then the project's
/// tests, its binary on a database of the test's own, and `rmicro call`.
fn builds_passes_its_tests_and_answers_calls(db: &str) {
    let backend = match db {
        "mysql" => Some(Backend::MySql),
        "postgres" => Some(Backend::Postgres),
        _ => None,
    };
    let name = format!("demo-{db}");
    let dir = fresh_dir(&format!("build-{db}"));
    let root = repo_root();
    let mut args = vec![
        "new".to_owned(),
        name.clone(),
        "--rmicro-path".to_owned(),
        root.to_str().expect("a UTF-8 checkout path").to_owned(),
    ];
    // SQLite is the default: no flag.
    if db != "sqlite" {
        args.extend(["--db".to_owned(), db.to_owned()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = rmicro(&dir, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let project = dir.join(&name);
    let proto = format!("proto/{name}.proto");
    let mut files = vec![
        "Cargo.toml",
        "build.rs",
        proto.as_str(),
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
    ];
    if db != "none" {
        files.extend([
            "src/domain/repository/entity.rs",
            "migrations/mysql/0001_create_records.sql",
            "migrations/postgres/0001_create_records.sql",
            "migrations/sqlite/0001_create_records.sql",
        ]);
    } else {
        assert!(
            !project.join("migrations/sqlite").exists(),
            "no schema in memory"
        );
    }
    for file in files {
        assert!(project.join(file).is_file(), "{file} is made");
    }

    // Its own tests, in the target directory this test was built in.
    let target = target_dir();
    // Starts `cargo fmt` clean, its tests pass, its binary builds.
    cargo_in(&project, &target, &["fmt", "--check"]);
    cargo_in(&project, &target, &["test", "--quiet"]);
    cargo_in(&project, &target, &["build", "--quiet", "--bin", &name]);

    // Its binary registers in the local registry and answers `rmicro call`, its
    // records in a database of the test's own on the real server.
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let database = match backend {
        Some(backend) => match runtime.block_on(TestDatabase::create(backend, &name)) {
            Some(database) => Some(database),
            None => return, // skipped, and said why
        },
        None => None,
    };
    let mut config = Vec::new();
    if let Some(database) = &database {
        config.extend([
            "--config-set".to_owned(),
            format!("{db}.dsn={}", database.url().expose()),
        ]);
    }
    let registry = dir.join("registry");
    let registry = registry.to_str().expect("a UTF-8 path");
    let _service = Guard(
        Command::new(target.join("debug").join(&name))
            .current_dir(&project)
            .args(&config)
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
                &name,
                &format!("Demo{}.Create", db[..1].to_uppercase() + &db[1..]),
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
    if let Some(database) = &database {
        // The record is in the test's database on the real server.
        let names = runtime.block_on(async {
            let db = rmicro::db::Database::connect(database.url(), Duration::from_secs(10))
                .await
                .expect("the test database answers");
            let rows = db
                .conn()
                .query_all_raw(rmicro::db::sea_orm::Statement::from_string(
                    db.conn().get_database_backend(),
                    "SELECT name FROM records",
                ))
                .await
                .expect("the table the migration made");
            let names: Vec<String> = rows
                .iter()
                .map(|row| row.try_get_by_index(0).expect("a name"))
                .collect();
            db.close().await;
            names
        });
        assert_eq!(names, ["first"]);
    }
    drop(_service);
    if let Some(database) = database {
        runtime.block_on(database.remove());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
