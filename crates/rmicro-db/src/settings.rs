//! Where the database is: the seed's `mysql` section or a URL, and the URL shown
//! in messages (no user, no password).

use crate::DbError;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use std::fmt;

/// A database section of the configuration, as the seed's
/// `GetMysqlFromConsul(conf, "mysql")` reads it: `{host, port, user, pwd, database}`,
/// or one `dsn` (alias `url`) that wins over the parts. `driver` picks the
/// server kind for the parts (`mysql`, the default; `postgres`; `sqlite`, where
/// `database` is the file).
///
/// ```
/// let section: rmicro_db::DbSettings = serde_json::from_value(serde_json::json!({
///     "host": "127.0.0.1", "port": 3306, "user": "root", "pwd": "s3cret", "database": "user"
/// })).unwrap();
/// let url = section.url().unwrap();
/// assert_eq!(url.to_string(), "mysql://127.0.0.1:3306/user"); // never the user or password
/// assert!(!format!("{section:?}").contains("s3cret"));
/// ```
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DbSettings {
    /// A whole URL (`mysql://…`, `postgres://…`, `sqlite://file.db`); when set,
    /// the parts below are not used.
    #[serde(alias = "url")]
    pub dsn: String,
    /// `mysql` (also `mariadb`), `postgres` (also `postgresql`) or `sqlite`; the
    /// server kind of the parts. Empty means `mysql`.
    pub driver: String,
    /// The server's host name or address.
    pub host: String,
    /// Its port (0: the driver's default, 3306 or 5432).
    pub port: u16,
    /// The user to log in as.
    pub user: String,
    /// Their password (the seed's name for it).
    pub pwd: String,
    /// The database (for `sqlite`, the file).
    pub database: String,
    /// The most connections the pool opens (0: 10).
    pub max_connections: u32,
}

impl fmt::Debug for DbSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.url().map(|u| u.shown).unwrap_or_default();
        f.debug_struct("DbSettings")
            .field("url", &shown)
            .field("user", &self.user)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

/// The kinds of database server rmicro-db connects to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// MySQL or MariaDB.
    MySql,
    /// PostgreSQL.
    Postgres,
    /// SQLite: a file, nothing to install.
    Sqlite,
}

impl Backend {
    fn parse(name: &str) -> Option<Backend> {
        match name.to_ascii_lowercase().as_str() {
            "" | "mysql" | "mariadb" => Some(Backend::MySql),
            "postgres" | "postgresql" => Some(Backend::Postgres),
            "sqlite" => Some(Backend::Sqlite),
            _ => None,
        }
    }

    /// The URL scheme the drivers take.
    pub fn scheme(self) -> &'static str {
        match self {
            Backend::MySql => "mysql",
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Backend::MySql => 3306,
            Backend::Postgres => 5432,
            Backend::Sqlite => 0,
        }
    }
}

/// A database URL: [`Display`](fmt::Display) shows it without user, password or
/// options (`mysql://127.0.0.1:3306/user`), so it can go into errors and logs;
/// the whole URL is only handed to the driver.
#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl {
    secret: String,
    shown: String,
    backend: Backend,
    max_connections: u32,
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbUrl({})", self.shown)
    }
}

impl std::str::FromStr for DbUrl {
    type Err = DbError;

    fn from_str(url: &str) -> Result<Self, DbError> {
        DbUrl::parse(url)
    }
}

impl DbUrl {
    /// Reads `url` (`mysql://user:pwd@host:port/db`, `mariadb://…`,
    /// `postgres://…`, `sqlite://path`, `sqlite::memory:`); a SQLite file is made
    /// when missing.
    pub fn parse(url: &str) -> Result<DbUrl, DbError> {
        let url = url.trim();
        let (scheme, rest) = url.split_once(':').ok_or_else(|| {
            DbError::Settings(format!(
                "database URL `{}` has no scheme (mysql://, postgres://, sqlite://)",
                redact(url)
            ))
        })?;
        let backend = Backend::parse(scheme).filter(|_| !scheme.is_empty()).ok_or_else(|| {
            DbError::Settings(format!(
                "database URL scheme `{scheme}` is not one of mysql, mariadb, postgres, postgresql, sqlite"
            ))
        })?;
        if backend == Backend::Sqlite {
            let path = rest.trim_start_matches("//");
            let (file, query) = path.split_once('?').unwrap_or((path, ""));
            if file.is_empty() {
                return Err(DbError::Settings(
                    "database URL `sqlite://` names no file (sqlite://user.db, or sqlite::memory:)"
                        .into(),
                ));
            }
            let memory = file == ":memory:" || query.contains("mode=memory");
            let secret = if memory || query.contains("mode=") {
                format!("sqlite:{rest}")
            } else if query.is_empty() {
                format!("sqlite://{file}?mode=rwc")
            } else {
                format!("sqlite://{file}?{query}&mode=rwc")
            };
            return Ok(DbUrl {
                secret,
                shown: format!("sqlite://{file}"),
                backend,
                // Every connection to `:memory:` would be a database of its own.
                max_connections: if memory { 1 } else { 0 },
            });
        }
        let Some(rest) = rest.strip_prefix("//") else {
            return Err(DbError::Settings(format!(
                "database URL `{}` should start {}://",
                redact(url),
                backend.scheme()
            )));
        };
        let without_query = rest.split_once('?').map_or(rest, |(before, _)| before);
        let (authority, database) = without_query.split_once('/').unwrap_or((without_query, ""));
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        if host_port.is_empty() {
            return Err(DbError::Settings(format!(
                "database URL `{}` names no host",
                redact(url)
            )));
        }
        let host_port = if host_port.contains(':') && !host_port.ends_with(']') {
            host_port.to_owned()
        } else {
            format!("{host_port}:{}", backend.default_port())
        };
        Ok(DbUrl {
            secret: format!(
                "{}:{}",
                backend.scheme(),
                url.split_once(':').map_or("", |(_, r)| r)
            ),
            shown: format!("{}://{host_port}/{database}", backend.scheme()),
            backend,
            max_connections: 0,
        })
    }

    /// The kind of server.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The whole URL, credentials included: for the driver only.
    pub fn expose(&self) -> &str {
        &self.secret
    }

    /// The same server with `database` instead (tests make and drop databases).
    pub fn with_database(&self, database: &str) -> DbUrl {
        match self.backend {
            Backend::Sqlite => {
                DbUrl::parse(&format!("sqlite://{database}")).unwrap_or_else(|_| self.clone())
            }
            _ => {
                let (before_query, query) = self
                    .secret
                    .split_once('?')
                    .map_or((self.secret.as_str(), None), |(b, q)| (b, Some(q)));
                let scheme_len = self.backend.scheme().len() + 3;
                let base = match before_query[scheme_len..].find('/') {
                    Some(slash) => &before_query[..scheme_len + slash],
                    None => before_query,
                };
                let secret = match query {
                    Some(q) => format!("{base}/{database}?{q}"),
                    None => format!("{base}/{database}"),
                };
                let shown = match self.shown.rfind('/') {
                    Some(slash) => format!("{}/{database}", &self.shown[..slash]),
                    None => self.shown.clone(),
                };
                DbUrl {
                    secret,
                    shown,
                    ..self.clone()
                }
            }
        }
    }

    /// The pool's size: what the settings said, else 10.
    pub(crate) fn max_connections(&self) -> u32 {
        if self.max_connections == 0 {
            10
        } else {
            self.max_connections
        }
    }
}

/// `url` without what sits between its scheme and the last `@`.
fn redact(url: &str) -> String {
    match (url.find(':'), url.rfind('@')) {
        (Some(colon), Some(at)) if at > colon => {
            let slashes = if url[colon + 1..].starts_with("//") {
                "//"
            } else {
                ""
            };
            format!("{}:{slashes}…@{}", &url[..colon], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl DbSettings {
    /// The URL these settings name; a sentence naming what is missing when they
    /// name none.
    pub fn url(&self) -> Result<DbUrl, DbError> {
        let mut url = if !self.dsn.trim().is_empty() {
            DbUrl::parse(&self.dsn)?
        } else {
            let backend = Backend::parse(&self.driver).ok_or_else(|| {
                DbError::Settings(format!(
                    "database driver `{}` is not one of mysql, mariadb, postgres, sqlite",
                    self.driver
                ))
            })?;
            if self.database.trim().is_empty() {
                return Err(DbError::Settings(
                    "the database section names no `database` (nor a `dsn`)".into(),
                ));
            }
            if backend == Backend::Sqlite {
                DbUrl::parse(&format!("sqlite://{}", self.database))?
            } else {
                if self.host.trim().is_empty() {
                    return Err(DbError::Settings(
                        "the database section names no `host` (nor a `dsn`)".into(),
                    ));
                }
                let port = if self.port == 0 {
                    backend.default_port()
                } else {
                    self.port
                };
                let credentials = match (self.user.is_empty(), self.pwd.is_empty()) {
                    (true, _) => String::new(),
                    (false, true) => format!("{}@", encode(&self.user)),
                    (false, false) => format!("{}:{}@", encode(&self.user), encode(&self.pwd)),
                };
                let host = if self.host.contains(':') && !self.host.starts_with('[') {
                    format!("[{}]", self.host)
                } else {
                    self.host.clone()
                };
                DbUrl::parse(&format!(
                    "{}://{credentials}{host}:{port}/{}",
                    backend.scheme(),
                    encode(&self.database)
                ))?
            }
        };
        if self.max_connections > 0 {
            url.max_connections = self.max_connections;
        }
        Ok(url)
    }
}

fn encode(part: &str) -> String {
    utf8_percent_encode(part, NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(json: serde_json::Value) -> DbSettings {
        serde_json::from_value(json).expect("a section")
    }

    #[test]
    fn the_seeds_section_becomes_a_url_shown_without_credentials() {
        let url = section(serde_json::json!({
            "host": "db", "port": 3307, "user": "ann", "pwd": "p@ss:w/rd", "database": "user"
        }))
        .url()
        .expect("a URL");
        assert_eq!(url.backend(), Backend::MySql);
        assert_eq!(url.to_string(), "mysql://db:3307/user");
        assert_eq!(url.expose(), "mysql://ann:p%40ss%3Aw%2Frd@db:3307/user");
        assert!(!format!("{url:?}").contains("ann"));
    }

    #[test]
    fn a_dsn_wins_and_is_redacted() {
        let url = section(serde_json::json!({
            "dsn": "postgres://ann:secret@127.0.0.1/user?sslmode=disable", "host": "ignored"
        }))
        .url()
        .expect("a URL");
        assert_eq!(url.to_string(), "postgres://127.0.0.1:5432/user");
        assert!(url.expose().contains("secret"));
        let other = url.with_database("other");
        assert_eq!(other.to_string(), "postgres://127.0.0.1:5432/other");
        assert_eq!(
            other.expose(),
            "postgres://ann:secret@127.0.0.1/other?sslmode=disable"
        );
        let maria = DbUrl::parse("mariadb://root@localhost:3306/test").expect("mariadb");
        assert_eq!(maria.expose(), "mysql://root@localhost:3306/test");
    }

    #[test]
    fn sqlite_files_are_made_and_memory_is_one_connection() {
        let file = DbUrl::parse("sqlite://data/user.db").expect("a file");
        assert_eq!(file.expose(), "sqlite://data/user.db?mode=rwc");
        assert_eq!(file.to_string(), "sqlite://data/user.db");
        let memory = DbUrl::parse("sqlite::memory:").expect("memory");
        assert_eq!(memory.max_connections(), 1);
        let from_parts = section(serde_json::json!({"driver": "sqlite", "database": "x.db"}))
            .url()
            .expect("a file");
        assert_eq!(from_parts.to_string(), "sqlite://x.db");
    }

    #[test]
    fn broken_settings_say_what_is_wrong_without_the_password() {
        for (json, says) in [
            (serde_json::json!({}), "no `database`"),
            (serde_json::json!({"database": "u"}), "no `host`"),
            (
                serde_json::json!({"driver": "oracle", "database": "u"}),
                "`oracle` is not one of",
            ),
            (
                serde_json::json!({"dsn": "mongodb://ann:secret@h/u"}),
                "`mongodb` is not one of",
            ),
            (
                serde_json::json!({"dsn": "mysql:ann:secret@h/u"}),
                "should start mysql://",
            ),
            (serde_json::json!({"dsn": "sqlite://"}), "names no file"),
        ] {
            let err = section(json.clone())
                .url()
                .expect_err("refused")
                .to_string();
            assert!(err.contains(says), "{json}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
        let unknown = serde_json::from_value::<DbSettings>(serde_json::json!({"hots": "x"}));
        assert!(unknown.expect_err("a typo").to_string().contains("hots"));
    }
}
