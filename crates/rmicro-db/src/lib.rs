//! rmicro's database glue on [SeaORM](https://www.sea-ql.org/SeaORM): what the
//! seed's `GetMysqlFromConsul(conf, "mysql")` + GORM gave a go-micro service.
//!
//! - [`DbSettings`]: the `mysql` section `{host, port, user, pwd, database}` (or a
//!   `dsn`), read with `service.config().get("mysql").scan()` from any config
//!   source; [`DbUrl`] shows it without user or password.
//! - [`Database`]: a SeaORM connection pool whose errors become gRPC statuses
//!   ([`Database::error`]): a database that cannot be reached is `UNAVAILABLE`
//!   "database mysql://127.0.0.1:3306/user unreachable: …", never with a password.
//! - [`Database::keep_health`]: the node reports `NOT_SERVING` on gRPC health while
//!   the database is down, and `SERVING` again when it is back, by itself.
//! - [`Migration`]s: ordered SQL files per backend, applied once each under a lock
//!   (two replicas starting together apply them once), edits to applied ones refused.
//!
//! MySQL/MariaDB, PostgreSQL and SQLite (a file: nothing to install) all work; the
//! SQL a repository runs is SeaORM's, with bound values, never concatenated — or,
//! for a hot query, a constant statement on the sqlx [`Pool`] beneath it.
//!
//! ```no_run
//! # async fn demo(service: rmicro::Service) -> Result<(), Box<dyn std::error::Error>> {
//! use rmicro_db::{Database, DbSettings};
//! let settings: DbSettings = service.config().get("mysql").scan()?;
//! let db = Database::connect(&settings.url()?, std::time::Duration::from_secs(30)).await?;
//! db.migrate(&[]).await?;
//! db.keep_health(service.health(), std::time::Duration::from_secs(2));
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod migrate;
mod settings;
#[cfg(feature = "testing")]
pub mod testing;

pub use migrate::Migration;
pub use sea_orm;
pub use settings::{Backend, DbSettings, DbUrl};

use rmicro_core::Error;
use sea_orm::{
    ConnAcquireErr, ConnectOptions, ConnectionTrait, DatabaseConnection, DbErr, RuntimeErr,
};
use std::sync::Arc;
use std::time::Duration;

/// What can go wrong before a database serves: settings that name none, a server
/// that does not answer in time, migrations that fail.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The settings do not name a usable database.
    #[error("{0}")]
    Settings(String),
    /// The server could not be reached (or refused the login) in time.
    #[error("database {target} unreachable: {detail}")]
    Unreachable {
        /// The database, without credentials.
        target: String,
        /// The driver's reason.
        detail: String,
    },
    /// A migration could not be applied, or an applied one was changed.
    #[error("database {target}: migration {detail}")]
    Migration {
        /// The database, without credentials.
        target: String,
        /// Which migration and why.
        detail: String,
    },
}

/// The sqlx pool under a [`Database`]'s SeaORM connection, by kind of server:
/// for a hot query written by hand as a constant statement with bound values
/// (sqlx prepares it once per connection and keeps it), where building the
/// statement with SeaORM on every call would cost more than running it. See
/// [`Database::pool`].
#[derive(Clone, Copy, Debug)]
pub enum Pool<'a> {
    /// MySQL or MariaDB: placeholders are `?`.
    MySql(&'a sea_orm::sqlx::MySqlPool),
    /// PostgreSQL: placeholders are `$1`, `$2`, ….
    Postgres(&'a sea_orm::sqlx::PgPool),
    /// SQLite: placeholders are `?`.
    Sqlite(&'a sea_orm::sqlx::SqlitePool),
}

/// A pool of connections to one database, SeaORM's [`DatabaseConnection`]
/// underneath ([`Database::conn`]), that knows how to show itself without secrets.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Database {
    conn: DatabaseConnection,
    url: Arc<DbUrl>,
    down: Arc<Down>,
}

/// What the pool knows of the server being down, shared by every clone.
#[derive(Debug, Default)]
struct Down {
    /// Why the server was last found unreachable; `None` while it answers.
    reason: std::sync::RwLock<Option<String>>,
    /// Whether a [`Database::keep_health`] task pings it (only then is a
    /// server marked down, since only a ping marks it up again).
    watched: std::sync::atomic::AtomicBool,
}

impl Database {
    /// Connects to `url`, trying again (every half second, then slower) until
    /// `within` has passed, so a service started with its database does not fail
    /// because it won the race.
    pub async fn connect(url: &DbUrl, within: Duration) -> Result<Database, DbError> {
        let deadline = tokio::time::Instant::now() + within;
        let mut pause = Duration::from_millis(500);
        loop {
            let left = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .clamp(Duration::from_millis(200), Duration::from_secs(5));
            let mut options = ConnectOptions::new(url.expose().to_owned());
            options
                .max_connections(url.max_connections())
                .min_connections(0)
                .connect_timeout(left)
                // Also how long a call waits for a free connection, later.
                .acquire_timeout(Duration::from_secs(5))
                .idle_timeout(Duration::from_secs(300))
                // A connection that died with its server is found out before use.
                .test_before_acquire(true)
                .sqlx_logging(false);
            match sea_orm::Database::connect(options).await {
                Ok(conn) => {
                    return Ok(Database {
                        conn,
                        url: Arc::new(url.clone()),
                        down: Arc::default(),
                    });
                }
                Err(err) => {
                    let now = tokio::time::Instant::now();
                    if now + pause > deadline {
                        return Err(DbError::Unreachable {
                            target: url.to_string(),
                            detail: describe(&err),
                        });
                    }
                    tracing::warn!(database = %url, error = %describe(&err), "database not reachable yet; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Connects to the database the configuration's `section` names (the seed's
    /// `config().get("mysql").scan()`), waiting up to `within` for it, and logs
    /// every later change to that section: the pool keeps the database it opened
    /// until the service restarts, and says so rather than ignoring the change.
    pub async fn from_config(
        config: &rmicro_core::config::Config,
        section: &str,
        within: Duration,
    ) -> Result<Database, DbError> {
        config
            .ready()
            .await
            .map_err(|err| DbError::Settings(format!("configuration not ready: {err}")))?;
        let value = config.get(section);
        if !value.exists() {
            return Err(DbError::Settings(format!(
                "the configuration has no `{section}` section (sources: {})",
                config.sources().join(", ")
            )));
        }
        let settings: DbSettings = value
            .scan()
            .map_err(|err| DbError::Settings(format!("config section `{section}`: {err}")))?;
        let url = settings.url()?;
        let db = Database::connect(&url, within).await?;
        let mut changes = config.watch::<DbSettings>(section);
        let section = section.to_owned();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut current = settings;
            while let Some(next) = changes.next().await {
                match next {
                    Ok(next) if next != current => {
                        let now = next.url().map_or_else(|e| e.to_string(), |u| u.to_string());
                        tracing::warn!(section = %section, was = %url, now = %now, "database settings changed; this process keeps its connections to the old database until it restarts");
                        current = next;
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(section = %section, error = %err, "database settings unusable; keeping the database in use");
                    }
                }
            }
        });
        Ok(db)
    }

    /// The SeaORM connection: what entities, queries and transactions run on.
    pub fn conn(&self) -> &DatabaseConnection {
        &self.conn
    }

    /// The database's URL (its `Display` has no credentials).
    pub fn url(&self) -> &DbUrl {
        &self.url
    }

    /// The kind of server.
    pub fn backend(&self) -> Backend {
        self.url.backend()
    }

    /// The connection for a call of service `id`, or at once `UNAVAILABLE`
    /// "database … unreachable: …" while the server is known to be down (a
    /// query failed to reach it, and the [`keep_health`](Self::keep_health)
    /// pings have not reached it since): during an outage calls fail fast
    /// instead of each waiting out the pool's connect timeout.
    pub fn available(&self, id: &str) -> Result<&DatabaseConnection, Error> {
        match &*rmicro_core::sync::read(&self.down.reason) {
            None => Ok(&self.conn),
            Some(reason) => Err(Error::unavailable(
                id,
                format!("database {} unreachable: {reason}", self.url),
            )),
        }
    }

    /// The sqlx pool beneath the connection for a call of service `id` (see
    /// [`Pool`]), or `UNAVAILABLE` as [`Database::available`] says; a failed
    /// query's error becomes the caller's with [`Database::sqlx_error`].
    ///
    /// ```no_run
    /// # async fn demo(db: rmicro_db::Database) -> Result<(), rmicro_core::Error> {
    /// use rmicro_db::Pool;
    /// use rmicro_db::sea_orm::sqlx;
    /// let count: i64 = match db.pool("user")? {
    ///     Pool::MySql(pool) => sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(pool).await,
    ///     Pool::Postgres(pool) => sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(pool).await,
    ///     Pool::Sqlite(pool) => sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(pool).await,
    /// }
    /// .map_err(|e| db.sqlx_error("user", e))?;
    /// # let _ = count; Ok(()) }
    /// ```
    pub fn pool(&self, id: &str) -> Result<Pool<'_>, Error> {
        let conn = self.available(id)?;
        // The backend is read off the same pool the getters below return, so
        // each is only called on a connection of its own kind.
        Ok(match conn.get_database_backend() {
            sea_orm::DbBackend::MySql => Pool::MySql(conn.get_mysql_connection_pool()),
            sea_orm::DbBackend::Postgres => Pool::Postgres(conn.get_postgres_connection_pool()),
            sea_orm::DbBackend::Sqlite => Pool::Sqlite(conn.get_sqlite_connection_pool()),
            other => {
                return Err(Error::internal(
                    id,
                    format!("database {}: no sqlx pool for {other:?}", self.url),
                ));
            }
        })
    }

    /// A sqlx error of a query on [`Database::pool`] as the caller sees it: the
    /// same `UNAVAILABLE` or `INTERNAL` as [`Database::error`] makes of SeaORM's.
    pub fn sqlx_error(&self, id: &str, err: sea_orm::sqlx::Error) -> Error {
        self.error(id, &DbErr::Query(RuntimeErr::SqlxError(err.into())))
    }

    fn mark(&self, reason: Option<String>) {
        if reason.is_some() && !self.down.watched.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        *rmicro_core::sync::write(&self.down.reason) = reason;
    }

    /// One round trip (`SELECT 1`).
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.conn.execute_unprepared("SELECT 1").await.map(|_| ())
    }

    /// `err` as the error a caller of service `id` sees: `UNAVAILABLE`
    /// "database … unreachable: …" when the server cannot be reached (a retry may
    /// succeed), `INTERNAL` "database query failed" otherwise (the driver's words,
    /// which may hold row values, are logged, not returned). A unique-key clash is
    /// for the caller to turn into `ALREADY_EXISTS`: see [`is_unique_violation`].
    pub fn error(&self, id: &str, err: &DbErr) -> Error {
        if is_unreachable(err) {
            Error::unavailable(
                id,
                format!("database {} unreachable: {}", self.url, describe(err)),
            )
        } else {
            tracing::error!(database = %self.url, error = %err, "database query failed");
            Error::internal(id, "database query failed")
        }
    }

    /// Reports `NOT_SERVING` on `health` while a ping every `every` fails, and
    /// `SERVING` when it answers again; logs each change once. Runs until the
    /// returned task is aborted (or the runtime ends).
    pub fn keep_health(
        &self,
        health: rmicro_core::server::Health,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let db = self.clone();
        self.down
            .watched
            .store(true, std::sync::atomic::Ordering::Release);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let answered =
                    tokio::time::timeout(every.max(Duration::from_secs(1)) * 2, db.ping()).await;
                match answered {
                    Ok(Ok(())) => {
                        db.mark(None);
                        if !health.is_serving() {
                            tracing::info!(database = %db.url, "database reachable again: serving");
                        }
                        health.set_serving(true);
                    }
                    Ok(Err(err)) => {
                        db.mark(Some(describe(&err)));
                        if health.is_serving() {
                            tracing::error!(database = %db.url, error = %describe(&err), "database unreachable: not serving until it is back");
                        }
                        health.set_serving(false);
                    }
                    Err(_) => {
                        db.mark(Some("no answer to a ping in time".into()));
                        if health.is_serving() {
                            tracing::error!(database = %db.url, "database did not answer a ping in time: not serving until it does");
                        }
                        health.set_serving(false);
                    }
                }
            }
        })
    }

    /// Closes the pool's connections.
    pub async fn close(self) {
        let _ = self.conn.close().await;
    }
}

/// Whether `err` says the server could not be reached (down, restarting, the
/// connection lost, the pool out of connections in time, the login refused).
pub fn is_unreachable(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout | ConnAcquireErr::ConnectionClosed) => {
            true
        }
        DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            sqlx_unreachable(e)
        }
        _ => false,
    }
}

fn sqlx_unreachable(err: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::Error as E;
    match err {
        E::Io(_)
        | E::Tls(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed
        | E::Protocol(_) => true,
        E::Database(db) => {
            let code = db.code().unwrap_or_default();
            // SQLSTATE 08xxx: connection exceptions; 57P0x: the server is shutting
            // down or restarting; 53300: too many connections. MySQL's numbers:
            // 1040 too many connections, 1053 shutdown in progress, 1927 connection
            // killed, 4031 disconnected for inactivity.
            let mysql = db
                .try_downcast_ref::<sea_orm::sqlx::mysql::MySqlDatabaseError>()
                .map(|e| e.number());
            code.starts_with("08")
                || code.starts_with("57P")
                || code == "53300"
                || matches!(mysql, Some(1040 | 1053 | 1927 | 4031))
        }
        _ => false,
    }
}

/// Whether `err` is a unique-key clash (a second row with a value that must be
/// unique): the caller says `ALREADY_EXISTS` naming the field.
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

/// The driver's reason, as short as it says it, without the URL.
fn describe(err: &DbErr) -> String {
    match err {
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => e.to_string(),
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout) => {
            "no connection could be made or freed within 5 s".into()
        }
        other => other.to_string(),
    }
}
