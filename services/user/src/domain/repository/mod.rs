//! Where users are kept: MySQL/MariaDB, PostgreSQL or SQLite through SeaORM
//! (`entity.rs`), the schema in `migrations/` applied at start. The SQL is
//! SeaORM's with bound values — nothing is concatenated into a query — except
//! the hottest read, a user by id (`GetUserInfo`, every authenticated call's
//! lookup): a constant statement run on the sqlx pool beneath SeaORM, which
//! sqlx prepares once per connection. Building it with SeaORM on every call cost
//! more than running it (sea-query's SQL text, then the boxed executor futures:
//! ~60k instructions per call against sqlx's ~40k).

use super::model::{Changes, NewUser, User};
use rmicro::Error;
use rmicro::db::sea_orm::prelude::DateTimeUtc;
use rmicro::db::sea_orm::sqlx::{self, Row as _};
use rmicro::db::sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use rmicro::db::{Database, Migration, Pool, is_unique_violation};
use std::time::SystemTime;

pub mod entity;

/// The schema, oldest first: each step's SQL for every backend, from
/// `migrations/<backend>/`. Add a step with a higher version; never edit an
/// applied one (the start refuses it).
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "create_users",
    mysql: include_str!("../../../migrations/mysql/0001_create_users.sql"),
    postgres: include_str!("../../../migrations/postgres/0001_create_users.sql"),
    sqlite: include_str!("../../../migrations/sqlite/0001_create_users.sql"),
}];

/// A user by id (`entity::Model`'s columns in its order), SQLite's statement.
const BY_ID_SQLITE: &str = "SELECT id, user_name, first_name, email, password_hash, created_at, updated_at FROM users WHERE id = ?";
/// [`BY_ID_SQLITE`] with PostgreSQL's placeholder.
const BY_ID_POSTGRES: &str = "SELECT id, user_name, first_name, email, password_hash, created_at, updated_at FROM users WHERE id = $1";
/// [`BY_ID_SQLITE`] for MySQL/MariaDB, the times as microseconds since the epoch
/// (SeaORM writes them as UTC `DATETIME(6)`; the difference to the epoch is
/// plain arithmetic, whatever the session's time zone): sqlx 0.9 formats an
/// error message, unused, for every `DATETIME` value of every row it reads
/// (`ok_or` where `ok_or_else` was meant, ~7k instructions each).
const BY_ID_MYSQL: &str = "SELECT id, user_name, first_name, email, password_hash, TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', created_at), TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', updated_at) FROM users WHERE id = ?";

/// Users in a SQL database through SeaORM.
#[derive(Clone, Debug)]
pub struct UserRepository {
    db: Database,
}

impl UserRepository {
    /// Keeps users in `db` (migrated with [`MIGRATIONS`]).
    pub fn new(db: Database) -> Self {
        UserRepository { db }
    }

    /// The database underneath.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// A database error as the caller sees it: `UNAVAILABLE` naming the database
    /// (never its password) when it cannot be reached, `INTERNAL` otherwise.
    fn failed(&self, err: rmicro::db::sea_orm::DbErr) -> Error {
        self.db.error(crate::NAME, &err)
    }

    /// Stores `user`; a taken user name is `ALREADY_EXISTS` naming it.
    pub async fn insert(&self, user: NewUser) -> Result<User, Error> {
        let now = SystemTime::now();
        let user_name = user.user_name.clone();
        let row = entity::ActiveModel {
            user_name: Set(user.user_name),
            first_name: Set(user.first_name),
            email: Set(user.email),
            password_hash: Set(user.password_hash),
            created_at: Set(now.into()),
            updated_at: Set(now.into()),
            ..Default::default()
        }
        .insert(self.db.available(crate::NAME)?)
        .await
        .map_err(|err| {
            if is_unique_violation(&err) {
                Error::conflict(crate::NAME, format!("user_name `{user_name}` is taken"))
            } else {
                self.failed(err)
            }
        })?;
        Ok(row.into())
    }

    /// The user `id`, if there is one: the one statement written by hand (see
    /// the module's note), the same columns SeaORM's `find_by_id` reads.
    pub async fn find(&self, id: i64) -> Result<Option<User>, Error> {
        /// Reads the row of a `BY_ID_*` statement on one kind of pool; `$time`
        /// reads a time column of the row.
        macro_rules! by_id {
            ($pool:expr, $sql:expr, $time:expr) => {
                match sqlx::query($sql).bind(id).fetch_optional($pool).await {
                    Ok(Some(row)) => (|| {
                        Ok(Some(User::from(entity::Model {
                            id: row.try_get(0)?,
                            user_name: row.try_get(1)?,
                            first_name: row.try_get(2)?,
                            email: row.try_get(3)?,
                            password_hash: row.try_get(4)?,
                            created_at: $time(&row, 5)?,
                            updated_at: $time(&row, 6)?,
                        })))
                    })(),
                    Ok(None) => Ok(None),
                    Err(err) => Err(err),
                }
            };
        }
        let found: Result<Option<User>, sqlx::Error> = match self.db.pool(crate::NAME)? {
            Pool::MySql(pool) => by_id!(pool, BY_ID_MYSQL, |row: &sqlx::mysql::MySqlRow, i| {
                let micros: i64 = row.try_get(i)?;
                DateTimeUtc::from_timestamp_micros(micros).ok_or_else(|| {
                    sqlx::Error::Decode(format!("column {i}: {micros} µs is out of range").into())
                })
            }),
            Pool::Postgres(pool) => {
                by_id!(pool, BY_ID_POSTGRES, |row: &sqlx::postgres::PgRow, i| {
                    row.try_get::<DateTimeUtc, _>(i)
                })
            }
            Pool::Sqlite(pool) => by_id!(pool, BY_ID_SQLITE, |row: &sqlx::sqlite::SqliteRow, i| {
                row.try_get::<DateTimeUtc, _>(i)
            }),
        };
        found.map_err(|err| self.db.sqlx_error(crate::NAME, err))
    }

    /// The user called `user_name`, if there is one.
    pub async fn find_by_name(&self, user_name: &str) -> Result<Option<User>, Error> {
        let row = entity::Entity::find()
            .filter(entity::Column::UserName.eq(user_name))
            .one(self.db.available(crate::NAME)?)
            .await
            .map_err(|err| self.failed(err))?;
        Ok(row.map(User::from))
    }

    /// Applies `changes` to user `id`; `None` when there is no such user.
    pub async fn update(&self, id: i64, changes: Changes) -> Result<Option<User>, Error> {
        let Some(row) = entity::Entity::find_by_id(id)
            .one(self.db.available(crate::NAME)?)
            .await
            .map_err(|err| self.failed(err))?
        else {
            return Ok(None);
        };
        let mut row = row.into_active_model();
        if let Some(first_name) = changes.first_name {
            row.first_name = Set(first_name);
        }
        if let Some(email) = changes.email {
            row.email = Set(email);
        }
        if let Some(hash) = changes.password_hash {
            row.password_hash = Set(hash);
        }
        row.updated_at = Set(SystemTime::now().into());
        let row = row
            .update(self.db.available(crate::NAME)?)
            .await
            .map_err(|err| self.failed(err))?;
        Ok(Some(row.into()))
    }

    /// Removes user `id`; whether there was one.
    pub async fn delete(&self, id: i64) -> Result<bool, Error> {
        let done = entity::Entity::delete_by_id(id)
            .exec(self.db.available(crate::NAME)?)
            .await
            .map_err(|err| self.failed(err))?;
        Ok(done.rows_affected > 0)
    }

    /// Up to `limit` users with ids above `after`, in id order.
    pub async fn list(&self, after: i64, limit: u64) -> Result<Vec<User>, Error> {
        let rows = entity::Entity::find()
            .filter(entity::Column::Id.gt(after))
            .order_by_asc(entity::Column::Id)
            .limit(limit)
            .all(self.db.available(crate::NAME)?)
            .await
            .map_err(|err| self.failed(err))?;
        Ok(rows.into_iter().map(User::from).collect())
    }
}

impl From<entity::Model> for User {
    fn from(row: entity::Model) -> Self {
        User {
            id: row.id,
            user_name: row.user_name,
            first_name: row.first_name,
            email: row.email,
            password_hash: row.password_hash,
            created: row.created_at.into(),
            updated: row.updated_at.into(),
        }
    }
}
