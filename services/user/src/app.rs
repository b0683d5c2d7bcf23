//! What `main.rs` does once the service is built, shared with the demo and the
//! tests so that all three run the same service.

use crate::domain::repository::{MIGRATIONS, UserRepository};
use crate::domain::service::{Settings, Tokens, UserService};
use crate::handler::Handler;
use crate::{CREATED, DELETED, proto, subscriber};
use rmicro::db::Database;
use rmicro::wrapper::auth::AuthLayer;
use std::time::Duration;

/// Reads the `user` section (defaults when absent) and puts its key into `auth`
/// (the layer [`auth_layer`](crate::domain::service::auth_layer) made); the
/// tokens to sign with. Waits for the configuration's sources first.
pub async fn tokens(config: &rmicro::config::Config, auth: &AuthLayer) -> anyhow::Result<Tokens> {
    config.ready().await?;
    let settings = if config.get("user").exists() {
        config
            .get("user")
            .scan::<Settings>()
            .map_err(|err| anyhow::anyhow!("config section `user`: {err}"))?
    } else {
        Settings::default()
    };
    let tokens = Tokens::new(&settings).map_err(anyhow::Error::msg)?;
    tokens.install(auth);
    Ok(tokens)
}

/// Applies the migrations (when `migrate`), keeps gRPC health in step with `db`
/// (pinged every `health_every`), and adds the handler and the subscribers to
/// `service`; the domain service it serves.
pub async fn prepare(
    service: &rmicro::Service,
    db: Database,
    tokens: Tokens,
    migrate: bool,
    health_every: Duration,
) -> anyhow::Result<(UserService, tokio::task::JoinHandle<()>)> {
    if migrate {
        db.migrate(MIGRATIONS).await?;
    }
    // NOT_SERVING on gRPC health while the database is down, by itself.
    let watcher = db.keep_health(service.health(), health_every);
    let users = UserService::new(UserRepository::new(db), tokens);
    service.handle(proto::UserServer::new(Handler::new(
        users.clone(),
        service.client(),
    )))?;
    service.subscribe(CREATED, subscriber::on_created).await?;
    service.subscribe(DELETED, subscriber::on_deleted).await?;
    Ok((users, watcher))
}
