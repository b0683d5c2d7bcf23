//! Where users are kept: MySQL/MariaDB, PostgreSQL or SQLite through SeaORM
//! (`entity.rs`), the schema in `migrations/` applied at start. The SQL is
//! SeaORM's with bound values: nothing is concatenated into a query.

use super::model::{Changes, NewUser, User};
use rmicro::Error;
use rmicro::db::sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use rmicro::db::{Database, Migration, is_unique_violation};
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

    /// The user `id`, if there is one.
    pub async fn find(&self, id: i64) -> Result<Option<User>, Error> {
        let row = entity::Entity::find_by_id(id)
            .one(self.db.available(crate::NAME)?)
            .await
            .map_err(|err| self.failed(err))?;
        Ok(row.map(User::from))
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
