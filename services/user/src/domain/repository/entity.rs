//! The `users` table as a SeaORM entity (its schema: `migrations/`).

use rmicro::db::sea_orm;
use sea_orm::entity::prelude::*;

/// One row of `users`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    /// Given by the database, increasing.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Unique.
    pub user_name: String,
    /// What the user is called.
    pub first_name: String,
    /// Where they are reached.
    pub email: String,
    /// argon2id, PHC string.
    pub password_hash: String,
    /// When they registered.
    pub created_at: DateTimeUtc,
    /// When they last changed.
    pub updated_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
