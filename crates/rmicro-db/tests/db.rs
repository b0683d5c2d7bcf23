//! rmicro-db against the real MariaDB and PostgreSQL of this machine (a database
//! of each test's own, dropped after) and a SQLite file: migrations applied once
//! under concurrent starts, edits refused, errors as gRPC statuses without
//! secrets, health that follows a private MariaDB killed and restarted.

use rmicro_db::testing::{PrivateMariaDb, TestDatabase};
use rmicro_db::{Backend, Database, DbError, DbUrl, Migration, is_unique_violation};
use sea_orm::ConnectionTrait;
use std::time::{Duration, Instant};

const NAMES: Migration = Migration {
    version: 1,
    name: "create_names",
    mysql: "CREATE TABLE names (\n  id BIGINT AUTO_INCREMENT PRIMARY KEY,\n  name VARCHAR(64) NOT NULL\n);\nCREATE UNIQUE INDEX names_name ON names (name);",
    postgres: "CREATE TABLE names (\n  id BIGSERIAL PRIMARY KEY,\n  name VARCHAR(64) NOT NULL\n);\nCREATE UNIQUE INDEX names_name ON names (name);",
    sqlite: "CREATE TABLE names (\n  id INTEGER PRIMARY KEY AUTOINCREMENT,\n  name TEXT NOT NULL\n);\nCREATE UNIQUE INDEX names_name ON names (name);",
};

const EXTRA: Migration = Migration {
    version: 2,
    name: "add_note",
    mysql: "ALTER TABLE names ADD COLUMN note VARCHAR(64) NULL;",
    postgres: "ALTER TABLE names ADD COLUMN note VARCHAR(64) NULL;",
    sqlite: "ALTER TABLE names ADD COLUMN note TEXT NULL;",
};

async fn migrations_apply_once_refuse_edits_and_report_clashes(backend: Backend, test: &str) {
    let Some(test_db) = TestDatabase::create(backend, test).await else {
        return;
    };
    let url = test_db.url().clone();
    // Two replicas start at once: each migration is applied by exactly one.
    let (a, b) = tokio::join!(
        async {
            let db = Database::connect(&url, Duration::from_secs(10))
                .await
                .expect("connects");
            db.migrate(&[NAMES, EXTRA]).await.expect("migrates")
        },
        async {
            let db = Database::connect(&url, Duration::from_secs(10))
                .await
                .expect("connects");
            db.migrate(&[EXTRA, NAMES]).await.expect("migrates")
        }
    );
    let mut all: Vec<&str> = a.iter().chain(&b).copied().collect();
    all.sort_unstable();
    assert_eq!(all, ["add_note", "create_names"], "{a:?} {b:?}");

    let db = Database::connect(&url, Duration::from_secs(10))
        .await
        .expect("connects");
    assert!(
        db.migrate(&[NAMES, EXTRA])
            .await
            .expect("nothing to do")
            .is_empty()
    );
    let edited = Migration {
        postgres: "SELECT 1;",
        mysql: "SELECT 1;",
        sqlite: "SELECT 1;",
        ..EXTRA
    };
    let err = db
        .migrate(&[NAMES, edited])
        .await
        .expect_err("an edit is refused");
    assert!(matches!(err, DbError::Migration { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("2 `add_note` was changed after it was applied"),
        "{err}"
    );
    let twice = db
        .migrate(&[
            NAMES,
            Migration {
                name: "again",
                ..NAMES
            },
        ])
        .await
        .expect_err("same version");
    assert!(twice.to_string().contains("the same version"), "{twice}");
    let broken = Migration {
        version: 3,
        name: "broken",
        mysql: "CREATE TABL x;",
        postgres: "CREATE TABL x;",
        sqlite: "CREATE TABL x;",
    };
    let err = db
        .migrate(&[NAMES, EXTRA, broken])
        .await
        .expect_err("bad SQL");
    assert!(err.to_string().contains("migration 3 `broken`"), "{err}");

    // A unique clash is recognised (the caller says ALREADY_EXISTS); values are bound.
    let insert = |name: &str| {
        sea_orm::Statement::from_sql_and_values(
            db.conn().get_database_backend(),
            match backend {
                Backend::Postgres => "INSERT INTO names (name) VALUES ($1)",
                _ => "INSERT INTO names (name) VALUES (?)",
            },
            [sea_orm::Value::from(name.to_owned())],
        )
    };
    db.conn()
        .execute_raw(insert("ann'); DROP TABLE names; --"))
        .await
        .expect("a hostile name is a value");
    db.conn()
        .execute_raw(insert("bob"))
        .await
        .expect("inserted");
    let clash = db
        .conn()
        .execute_raw(insert("bob"))
        .await
        .expect_err("duplicate");
    assert!(is_unique_violation(&clash), "{clash}");
    let internal = db.error("names", &clash);
    assert_eq!(internal.code, 500, "{internal}");
    assert!(
        !internal.detail.contains("bob"),
        "row values are not returned: {internal}"
    );
    db.close().await;
    test_db.remove().await;
}

#[tokio::test]
async fn sqlite_migrations() {
    migrations_apply_once_refuse_edits_and_report_clashes(Backend::Sqlite, "sqlite_migrations")
        .await;
}

#[tokio::test]
async fn mariadb_migrations() {
    migrations_apply_once_refuse_edits_and_report_clashes(Backend::MySql, "mariadb_migrations")
        .await;
}

#[tokio::test]
async fn postgres_migrations() {
    migrations_apply_once_refuse_edits_and_report_clashes(Backend::Postgres, "postgres_migrations")
        .await;
}

#[tokio::test]
async fn an_unreachable_database_is_named_without_its_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a port")
        .local_addr()
        .expect("addr")
        .port();
    for scheme in ["mysql", "postgres"] {
        let url: DbUrl = format!("{scheme}://ann:hunter2@127.0.0.1:{port}/user")
            .parse()
            .expect("a URL");
        let started = Instant::now();
        let err = Database::connect(&url, Duration::from_secs(1))
            .await
            .expect_err("nothing listens");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "database {scheme}://127.0.0.1:{port}/user unreachable: "
            )),
            "{text}"
        );
        assert!(!text.contains("hunter2") && !text.contains("ann"), "{text}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "gave up in bounded time"
        );
    }
}

#[tokio::test]
async fn health_follows_a_database_killed_and_restarted() {
    let Some(mut server) =
        PrivateMariaDb::start("health_follows_a_database_killed_and_restarted").await
    else {
        return;
    };
    server.create("app").await;
    let db = Database::connect(&server.url("app"), Duration::from_secs(10))
        .await
        .expect("connects");
    let health = rmicro::server::Health::default();
    let watcher = db.keep_health(health.clone(), Duration::from_millis(100));
    db.ping().await.expect("up");

    server.kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    while health.is_serving() {
        assert!(
            Instant::now() < deadline,
            "still serving 20 s after the database died"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fast = db
        .available("app")
        .expect_err("known down: no waiting on the pool");
    assert_eq!(fast.code, 503, "{fast}");
    assert!(
        fast.detail
            .starts_with(&format!("database {} unreachable: ", server.url("app"))),
        "{fast}"
    );
    let down = db.ping().await.expect_err("down");
    let status = db.error("app", &down);
    assert_eq!(status.code, 503, "{status}");
    assert!(
        status
            .detail
            .starts_with(&format!("database {} unreachable: ", server.url("app"))),
        "{status}"
    );

    server.restart().await.expect("restarts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !health.is_serving() {
        assert!(
            Instant::now() < deadline,
            "not serving 30 s after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.ping().await.expect("the pool reconnected by itself");
    db.available("app").expect("known up again");
    watcher.abort();
}

/// Log lines the test's subscriber wrote.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

#[tokio::test]
async fn the_seeds_section_is_read_from_config_and_a_change_is_logged() {
    let logs = Captured::default();
    let writer = logs.clone();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    );
    let dir = std::env::temp_dir().join(format!("rmicro-db-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let file = dir.join("config.yaml");
    let db_file = dir.join("first.db");
    std::fs::write(
        &file,
        format!(
            "mysql:\n  driver: sqlite\n  database: {}\n  pwd: hunter2\n",
            db_file.display()
        ),
    )
    .expect("written");
    let config = rmicro::config::Config::builder()
        .source(
            rmicro::config::source::File::new(&file)
                .expect("a file source")
                .poll_interval(Duration::from_millis(50)),
        )
        .start();
    let db = Database::from_config(&config, "mysql", Duration::from_secs(5))
        .await
        .expect("opens");
    assert_eq!(
        db.url().to_string(),
        format!("sqlite://{}", db_file.display())
    );
    db.ping().await.expect("answers");

    std::fs::write(
        &file,
        format!(
            "mysql:\n  driver: sqlite\n  database: {}/second.db\n  pwd: hunter3\n",
            dir.display()
        ),
    )
    .expect("rewritten");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logs.text().contains("database settings changed") {
        assert!(
            Instant::now() < deadline,
            "no log line within 10 s: {}",
            logs.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = logs.text();
    assert!(
        text.contains("second.db") && !text.contains("hunter"),
        "{text}"
    );

    let missing = Database::from_config(&config, "postgres", Duration::from_secs(1))
        .await
        .expect_err("no section");
    assert!(
        missing.to_string().contains("no `postgres` section"),
        "{missing}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
