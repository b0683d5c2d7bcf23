//! The user service: `cargo run -p user -- --server-address 127.0.0.1:50051`
//! (`--help` lists every flag: registry, broker, config, tracing, metrics, …).
//!
//! Its database is the configuration's `mysql` section, as the seed's
//! `GetMysqlFromConsul(conf, "mysql")` reads it (`{host, port, user, pwd,
//! database}` or a `dsn`, which may also name PostgreSQL or SQLite), from
//! `--config-file`, `MICRO_MYSQL_*` variables, `--config-set mysql.dsn=…` or a
//! config center (`--config-source consul://…`). Without one, users are kept in
//! the SQLite file `user.db`: nothing to install. The `user` section holds the
//! token key (`jwt_secret`), `token_ttl_seconds` and `admins`.

use rmicro::wrapper::logging::LoggingLayer;
use std::time::Duration;
use user::NAME;
use user::domain::service::auth_layer;

/// The user service's own flags, next to rmicro's.
#[derive(clap::Args, Debug)]
struct Flags {
    /// Apply the schema's migrations at start (`--migrate=false` to skip them).
    #[arg(long, env = "USER_MIGRATE", default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    migrate: bool,
    /// How long the start waits for the database to answer (it may be starting
    /// too), then gives up naming it.
    #[arg(long, env = "USER_DATABASE_WAIT", default_value = "30s", value_parser = rmicro::cmd::parse_duration)]
    database_wait: Duration,
}

/// Where users are kept when the configuration has no `mysql` section.
const EMBEDDED: &str = "sqlite://user.db";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let auth = auth_layer();
    let service = match rmicro::Service::builder(NAME)
        .version(env!("CARGO_PKG_VERSION"))
        .app_flags::<Flags>()
        .wrap_handler(LoggingLayer::new())
        .wrap_handler(auth.clone())
        .build()
    {
        Ok(service) => service,
        Err(err) => err.exit(),
    };
    let config = service.config();
    config.ready().await?;
    let tokens = user::app::tokens(config, &auth).await?;
    let within = service
        .app_flags::<Flags>()
        .map_or(Duration::from_secs(30), |flags| flags.database_wait);
    let db = if config.get("mysql").exists() {
        rmicro::db::Database::from_config(config, "mysql", within).await?
    } else {
        tracing::info!(
            database = EMBEDDED,
            "no `mysql` section in the configuration: keeping users in SQLite"
        );
        rmicro::db::Database::connect(&EMBEDDED.parse()?, within).await?
    };
    let migrate = service
        .app_flags::<Flags>()
        .is_none_or(|flags| flags.migrate);
    user::app::prepare(&service, db, tokens, migrate, Duration::from_secs(2)).await?;
    service.run().await?;
    Ok(())
}
