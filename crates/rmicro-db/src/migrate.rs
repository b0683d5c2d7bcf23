//! Ordered SQL migrations, applied once each, under a lock.

use crate::{Backend, Database, DbError};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr, Statement, TransactionTrait, Value};

/// One step of a database's schema: the SQL for each backend, usually
/// `include_str!`-ed from `migrations/<backend>/<version>_<name>.sql`.
///
/// Statements in a file are separated by a `;` that ends a line; lines starting
/// with `--` are comments. A migration is applied once: its version, name and a
/// checksum of its SQL are recorded in `rmicro_migrations`, and a migration
/// changed after it was applied stops the start with a sentence (add a new one
/// instead).
///
/// ```
/// use rmicro_db::Migration;
/// const MIGRATIONS: &[Migration] = &[Migration {
///     version: 1,
///     name: "create_records",
///     mysql: "CREATE TABLE records (id BIGINT AUTO_INCREMENT PRIMARY KEY);",
///     postgres: "CREATE TABLE records (id BIGSERIAL PRIMARY KEY);",
///     sqlite: "CREATE TABLE records (id INTEGER PRIMARY KEY AUTOINCREMENT);",
/// }];
/// # assert_eq!(MIGRATIONS[0].version, 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    /// Its place in the order; unique, increasing.
    pub version: i64,
    /// What it does, for people.
    pub name: &'static str,
    /// The SQL for MySQL/MariaDB.
    pub mysql: &'static str,
    /// The SQL for PostgreSQL.
    pub postgres: &'static str,
    /// The SQL for SQLite.
    pub sqlite: &'static str,
}

impl Migration {
    fn sql(&self, backend: Backend) -> &'static str {
        match backend {
            Backend::MySql => self.mysql,
            Backend::Postgres => self.postgres,
            Backend::Sqlite => self.sqlite,
        }
    }
}

/// The statements of `sql`: split at each `;` that ends a line, comment lines and
/// blank statements dropped.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            let statement = current.trim().trim_end_matches(';').trim().to_owned();
            if !statement.is_empty() {
                out.push(statement);
            }
            current.clear();
        }
    }
    let rest = current.trim().trim_end_matches(';').trim();
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

/// FNV-1a, 64 bits, as 16 hex digits: enough to see that a file changed.
fn checksum(sql: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sql.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

const TABLE: &str = "CREATE TABLE IF NOT EXISTS rmicro_migrations (\
    version BIGINT NOT NULL PRIMARY KEY, \
    name VARCHAR(255) NOT NULL, \
    checksum VARCHAR(16) NOT NULL, \
    applied_unix BIGINT NOT NULL)";

impl Database {
    /// Applies the `migrations` not applied yet, in version order, and returns
    /// the names of those it applied. Concurrent starts (two replicas) take turns:
    /// PostgreSQL by an advisory lock in one transaction (all or nothing),
    /// MySQL by `GET_LOCK` (its DDL commits by itself, so each migration is
    /// recorded right after it ran), SQLite by its write lock.
    pub async fn migrate(&self, migrations: &[Migration]) -> Result<Vec<&'static str>, DbError> {
        let mut sorted: Vec<&Migration> = migrations.iter().collect();
        sorted.sort_by_key(|m| m.version);
        if let Some(pair) = sorted.windows(2).find(|w| w[0].version == w[1].version) {
            return Err(self.migration_error(format!(
                "{} `{}` and `{}` have the same version",
                pair[0].version, pair[0].name, pair[1].name
            )));
        }
        let backend = self.backend();
        let fail = |what: &str, err: DbErr| self.migration_error(format!("{what}: {err}"));
        if backend == Backend::Sqlite {
            self.conn()
                .execute_unprepared(TABLE)
                .await
                .map_err(|e| self.unreachable_or(e, "bookkeeping table"))?;
        }
        let txn = self
            .conn()
            .begin()
            .await
            .map_err(|e| self.unreachable_or(e, "begin"))?;
        match backend {
            Backend::Postgres => {
                txn.execute_unprepared("SELECT pg_advisory_xact_lock(7274110153)")
                    .await
                    .map_err(|e| fail("lock", e))?;
                txn.execute_unprepared(TABLE)
                    .await
                    .map_err(|e| fail("bookkeeping table", e))?;
            }
            Backend::MySql => {
                let got = txn
                    .query_one_raw(Statement::from_string(
                        sea_orm::DbBackend::MySql,
                        "SELECT GET_LOCK('rmicro_migrations', 60)",
                    ))
                    .await
                    .map_err(|e| fail("lock", e))?
                    .and_then(|row| row.try_get_by_index::<Option<i64>>(0).ok().flatten());
                if got != Some(1) {
                    return Err(self.migration_error(
                        "lock: another start held `rmicro_migrations` for 60 s".into(),
                    ));
                }
                let done = self.apply(&txn, &sorted, backend).await;
                let _ = txn
                    .execute_unprepared("SELECT RELEASE_LOCK('rmicro_migrations')")
                    .await;
                let applied = done?;
                txn.commit().await.map_err(|e| fail("commit", e))?;
                return Ok(applied);
            }
            Backend::Sqlite => {
                // A write first: the transaction takes the write lock now (waiting
                // for another start's to end) and reads what that one recorded.
                txn.execute_unprepared(
                    "DELETE FROM rmicro_migrations WHERE version < -9223372036854775807",
                )
                .await
                .map_err(|e| fail("lock", e))?;
            }
        }
        let applied = self.apply(&txn, &sorted, backend).await?;
        txn.commit().await.map_err(|e| fail("commit", e))?;
        Ok(applied)
    }

    async fn apply(
        &self,
        txn: &DatabaseTransaction,
        sorted: &[&Migration],
        backend: Backend,
    ) -> Result<Vec<&'static str>, DbError> {
        let fail = |what: String, err: DbErr| self.migration_error(format!("{what}: {err}"));
        if backend == Backend::MySql {
            txn.execute_unprepared(TABLE)
                .await
                .map_err(|e| fail("bookkeeping table".into(), e))?;
        }
        let db = sea_orm::DbBackend::from(backend);
        let rows = txn
            .query_all_raw(Statement::from_string(
                db,
                "SELECT version, name, checksum FROM rmicro_migrations",
            ))
            .await
            .map_err(|e| fail("reading what was applied".into(), e))?;
        let mut done = std::collections::HashMap::new();
        for row in rows {
            let version: i64 = row
                .try_get_by_index(0)
                .map_err(|e| fail("reading what was applied".into(), e))?;
            let checksum: String = row
                .try_get_by_index(2)
                .map_err(|e| fail("reading what was applied".into(), e))?;
            done.insert(version, checksum);
        }
        let mut applied = Vec::new();
        for migration in sorted {
            let sql = migration.sql(backend);
            let sum = checksum(sql);
            if let Some(recorded) = done.get(&migration.version) {
                if *recorded != sum {
                    return Err(self.migration_error(format!(
                        "{} `{}` was changed after it was applied; add a new migration instead",
                        migration.version, migration.name
                    )));
                }
                continue;
            }
            if sql.trim().is_empty() {
                return Err(self.migration_error(format!(
                    "{} `{}` has no SQL for {}",
                    migration.version,
                    migration.name,
                    backend.scheme()
                )));
            }
            for statement in statements(sql) {
                txn.execute_unprepared(&statement)
                    .await
                    .map_err(|e| fail(format!("{} `{}`", migration.version, migration.name), e))?;
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            txn.execute_raw(Statement::from_sql_and_values(
                db,
                match backend {
                    Backend::Postgres => "INSERT INTO rmicro_migrations (version, name, checksum, applied_unix) VALUES ($1, $2, $3, $4)",
                    _ => "INSERT INTO rmicro_migrations (version, name, checksum, applied_unix) VALUES (?, ?, ?, ?)",
                },
                [
                    Value::from(migration.version),
                    Value::from(migration.name),
                    Value::from(sum),
                    Value::from(now),
                ],
            ))
            .await
            .map_err(|e| fail(format!("recording {} `{}`", migration.version, migration.name), e))?;
            tracing::info!(database = %self.url(), version = migration.version, name = migration.name, "migration applied");
            applied.push(migration.name);
        }
        Ok(applied)
    }

    fn migration_error(&self, detail: String) -> DbError {
        DbError::Migration {
            target: self.url().to_string(),
            detail,
        }
    }

    fn unreachable_or(&self, err: DbErr, what: &str) -> DbError {
        if crate::is_unreachable(&err) {
            DbError::Unreachable {
                target: self.url().to_string(),
                detail: err.to_string(),
            }
        } else {
            self.migration_error(format!("{what}: {err}"))
        }
    }
}

impl From<Backend> for sea_orm::DbBackend {
    fn from(backend: Backend) -> Self {
        match backend {
            Backend::MySql => sea_orm::DbBackend::MySql,
            Backend::Postgres => sea_orm::DbBackend::Postgres,
            Backend::Sqlite => sea_orm::DbBackend::Sqlite,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_line_ending_semicolons() {
        let sql = "-- a comment\nCREATE TABLE a (x TEXT DEFAULT ';');\n\nCREATE INDEX i ON a (x);\nINSERT INTO a VALUES ('b')";
        assert_eq!(
            statements(sql),
            [
                "CREATE TABLE a (x TEXT DEFAULT ';')",
                "CREATE INDEX i ON a (x)",
                "INSERT INTO a VALUES ('b')"
            ]
        );
        assert_ne!(checksum("a"), checksum("b"));
        assert_eq!(checksum("a").len(), 16);
    }
}
