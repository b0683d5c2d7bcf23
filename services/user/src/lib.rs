//! The seed's user service, laid out as `rmicro new user --db mysql` lays a
//! service out: `domain/model` (what a user is, what makes one valid),
//! `domain/repository` (users in MySQL/MariaDB, PostgreSQL or SQLite through
//! SeaORM), `domain/service` (the rules: password hashing, login, tokens,
//! paging), `handler` (the gRPC endpoints), `subscriber` (the events it
//! consumes). `main.rs` wires them to rmicro.

pub mod app;
pub mod domain;
pub mod handler;
pub mod subscriber;

/// The code `rmicro-build` generated from `proto/user.proto`.
pub mod proto {
    rmicro::include_proto!("user.v1");
}

/// The service's name in the registry, and its events' topic prefix.
pub const NAME: &str = "user";

/// The topic a new user is announced on.
pub const CREATED: &str = "user.created";

/// The topic a removed user is announced on.
pub const DELETED: &str = "user.deleted";
