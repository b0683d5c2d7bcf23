//! Test support: a fresh database per test on this machine's MariaDB or
//! PostgreSQL (or a SQLite file), dropped afterwards.
//!
//! The servers are found at `RMICRO_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`) and `RMICRO_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). A server that cannot be reached
//! fails the test under `CI=true`; otherwise the test is skipped with a line
//! saying why.

use crate::{Backend, Database, DbUrl};
use sea_orm::ConnectionTrait;
use std::time::Duration;

/// A database made for one test: [`TestDatabase::url`] to connect to; dropped
/// (the database, or the SQLite file) when [`TestDatabase::remove`] runs or the
/// value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    url: DbUrl,
    admin: Option<DbUrl>,
    name: String,
    file: Option<std::path::PathBuf>,
}

fn unique(test: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let clean: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(30)
        .collect();
    format!("rmicro_{clean}_{}_{n}", std::process::id())
}

impl TestDatabase {
    /// A new, empty database named after `test` on `backend`; `None` (after
    /// printing why) when the server is missing outside CI.
    pub async fn create(backend: Backend, test: &str) -> Option<TestDatabase> {
        let name = unique(test);
        match backend {
            Backend::Sqlite => {
                let file = std::env::temp_dir().join(format!("{name}.db"));
                let _ = std::fs::remove_file(&file);
                let url = DbUrl::parse(&format!("sqlite://{}", file.display())).ok()?;
                Some(TestDatabase {
                    url,
                    admin: None,
                    name,
                    file: Some(file),
                })
            }
            _ => {
                let (var, default) = match backend {
                    Backend::MySql => ("RMICRO_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
                    _ => (
                        "RMICRO_TEST_POSTGRES_URL",
                        "postgres://postgres@127.0.0.1:5432/postgres",
                    ),
                };
                let admin = std::env::var(var).unwrap_or_else(|_| default.to_owned());
                let admin = match DbUrl::parse(&admin) {
                    Ok(url) => url,
                    Err(err) => panic!("{var}: {err}"),
                };
                let server = match Database::connect(&admin, Duration::from_secs(3)).await {
                    Ok(db) => db,
                    Err(err) => {
                        if rmicro_core::testing::in_ci() {
                            panic!("CI=true and the test database is missing: {err}");
                        }
                        eprintln!("SKIPPED {test}: {err} (set {var})");
                        return None;
                    }
                };
                // The name is ours (letters, digits, `_`): safe to put in DDL.
                if let Err(err) = server
                    .conn()
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                {
                    panic!("creating database {name} on {admin}: {err}");
                }
                server.close().await;
                Some(TestDatabase {
                    url: admin.with_database(&name),
                    admin: Some(admin),
                    name,
                    file: None,
                })
            }
        }
    }

    /// Where the test's database is.
    pub fn url(&self) -> &DbUrl {
        &self.url
    }

    /// Drops the database now (closing other sessions to it first on PostgreSQL).
    pub async fn remove(mut self) {
        self.drop_database().await;
    }

    async fn drop_database(&mut self) {
        if let Some(file) = self.file.take() {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
        }
        let Some(admin) = self.admin.take() else {
            return;
        };
        let Ok(server) = Database::connect(&admin, Duration::from_secs(3)).await else {
            return;
        };
        let sql = match admin.backend() {
            Backend::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            _ => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        if let Err(err) = server.conn().execute_unprepared(&sql).await {
            eprintln!("dropping test database {}: {err}", self.name);
        }
        server.close().await;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.admin.is_none() && self.file.is_none() {
            return;
        }
        // Dropped without `remove()` (a failed assertion): clean up on a runtime
        // of its own, the test's may be gone.
        let mut this = TestDatabase {
            url: self.url.clone(),
            admin: self.admin.take(),
            name: std::mem::take(&mut self.name),
            file: self.file.take(),
        };
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(this.drop_database());
            }
        })
        .join();
    }
}

/// A MariaDB server of the test's own (`mariadbd` in a fresh data directory on
/// a free loopback port, root without a password) that the test can kill and
/// start again, to see what a service does while its database is down.
pub struct PrivateMariaDb {
    process: rmicro_core::testing::ServerProcess,
}

impl PrivateMariaDb {
    /// Installs and starts one; `None` (after printing why) when MariaDB is not
    /// installed outside CI.
    pub async fn start(test: &str) -> Option<PrivateMariaDb> {
        let missing = |why: String| {
            if rmicro_core::testing::in_ci() {
                panic!("CI=true and a private MariaDB cannot run: {why}");
            }
            eprintln!("SKIPPED {test}: {why}");
            None
        };
        let Some(server) = rmicro_core::testing::find_binary("mariadbd", "RMICRO_MARIADBD") else {
            return missing("mariadbd not found (apt-get install mariadb-server)".into());
        };
        let process =
            match rmicro_core::testing::ServerProcess::new("mariadb", server, 1, |dir, ports| {
                let dir = dir.display().to_string();
                [
                    "--no-defaults".to_owned(),
                    format!("--datadir={dir}/data"),
                    format!("--port={}", ports[0]),
                    "--bind-address=127.0.0.1".into(),
                    format!("--socket={dir}/mysqld.sock"),
                    format!("--pid-file={dir}/mysqld.pid"),
                    "--user=root".into(),
                    "--innodb-buffer-pool-size=16M".into(),
                    "--skip-log-bin".into(),
                ]
                .into_iter()
                .map(Into::into)
                .collect()
            }) {
                Ok(process) => process,
                Err(err) => return missing(format!("no directory or port: {err}")),
            };
        let installed = std::process::Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={}/data", process.dir().display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if !installed.is_ok_and(|s| s.success()) {
            return missing("mariadb-install-db failed".into());
        }
        let mut db = PrivateMariaDb { process };
        if let Err(err) = db.restart().await {
            return missing(err.to_string());
        }
        Some(db)
    }

    /// The URL of `database` on it (made when missing by [`PrivateMariaDb::create`]).
    pub fn url(&self, database: &str) -> DbUrl {
        DbUrl::parse(&format!(
            "mysql://root@127.0.0.1:{}/{database}",
            self.process.ports()[0]
        ))
        .unwrap_or_else(|err| panic!("{err}"))
    }

    /// Makes `database` (a name of letters, digits and `_`).
    pub async fn create(&self, database: &str) {
        let server = Database::connect(&self.url("mysql"), Duration::from_secs(10))
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        if let Err(err) = server
            .conn()
            .execute_unprepared(&format!("CREATE DATABASE IF NOT EXISTS {database}"))
            .await
        {
            panic!("creating {database}: {err}");
        }
        server.close().await;
    }

    /// Kills the server (SIGKILL, as a crash); its data stays.
    pub fn kill(&mut self) {
        self.process.stop();
    }

    /// Starts it again on the same port and data, and waits until it answers.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        let url = self.url("mysql");
        self.process
            .start(|| {
                let url = url.clone();
                async move {
                    match sea_orm::Database::connect(url.expose()).await {
                        Ok(conn) => {
                            let _ = conn.close().await;
                            true
                        }
                        Err(_) => false,
                    }
                }
            })
            .await
    }
}
