//! A user service started for a test: on a database of the test's own, a free
//! port, the memory registry, wired as `main.rs` wires it (auth included).

#![allow(dead_code)]

use rmicro::broker::typed::Event;
use rmicro::db::{Database, DbUrl};
use std::sync::Arc;
use std::time::Duration;
use user::domain::service::{Settings, Tokens, UserService, auth_layer};
use user::proto::{self, UserClient};

/// The key the tests' tokens are signed with.
pub const SECRET: &str = "a test key of at least thirty-two bytes";
/// The user name whose tokens are an admin's.
pub const ADMIN: &str = "root-admin";

/// A running user service.
pub struct Running {
    pub service: rmicro::Service,
    pub server: rmicro::server::RunningServer,
    pub client: UserClient,
    pub users: UserService,
    /// `(topic, event)` for each `user.created` / `user.deleted` received.
    pub events: tokio::sync::mpsc::UnboundedReceiver<(String, proto::UserEvent)>,
    /// Keeps gRPC health in step with the database, as `main.rs` does.
    watcher: tokio::task::JoinHandle<()>,
}

pub async fn start(url: &DbUrl) -> Running {
    let auth = auth_layer();
    let service = rmicro::Service::builder(user::NAME)
        .address("127.0.0.1:0")
        .args([user::NAME, "--log-level", "warn"])
        .registry(Arc::new(rmicro::registry::MemoryRegistry::new()))
        .wrap_handler(auth.clone())
        .build()
        .expect("valid flags");
    let settings = Settings {
        jwt_secret: SECRET.to_owned(),
        admins: vec![ADMIN.to_owned()],
        ..Settings::default()
    };
    let tokens = Tokens::new(&settings).expect("a good key");
    tokens.install(&auth);
    let db = Database::connect(url, Duration::from_secs(10))
        .await
        .expect("the database answers");
    let (users, watcher) =
        user::app::prepare(&service, db, tokens, true, Duration::from_millis(100))
            .await
            .expect("prepared");
    let (seen, events) = tokio::sync::mpsc::unbounded_channel();
    for topic in [user::CREATED, user::DELETED] {
        let seen = seen.clone();
        service
            .subscribe(topic, move |event: Event<proto::UserEvent>| {
                let seen = seen.clone();
                async move {
                    let _ = seen.send((topic.to_owned(), event.message().clone()));
                    Ok(())
                }
            })
            .await
            .expect("subscribed");
    }
    let server = service.start().await.expect("the service starts");
    let client = UserClient::new(user::NAME, service.client());
    Running {
        service,
        server,
        client,
        users,
        events,
        watcher,
    }
}

impl Running {
    /// Registers `name` with password `password`.
    pub async fn register(
        &self,
        name: &str,
        password: &str,
    ) -> Result<proto::UserInfo, rmicro::Error> {
        self.client
            .register(proto::RegisterRequest {
                user_name: name.to_owned(),
                first_name: "First".to_owned(),
                email: format!("{name}@example.com"),
                password: password.to_owned(),
            })
            .await
    }

    /// Logs `name` in; the bearer value for `authorization`.
    pub async fn login(&self, name: &str, password: &str) -> Result<String, rmicro::Error> {
        let reply = self
            .client
            .login(proto::LoginRequest {
                user_name: name.to_owned(),
                password: password.to_owned(),
            })
            .await?;
        Ok(format!("Bearer {}", reply.token))
    }

    /// The next event, within 10 s.
    pub async fn next_event(&mut self) -> (String, proto::UserEvent) {
        tokio::time::timeout(Duration::from_secs(10), self.events.recv())
            .await
            .expect("an event within 10 s")
            .expect("the subscription is open")
    }

    /// What the server reports on gRPC health for the whole node, asked over
    /// the wire with tonic's own health client.
    pub async fn health(&self) -> i32 {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.server.local_addr()))
                .expect("a valid URI")
                .connect()
                .await
                .expect("the server accepts connections");
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health answers")
            .into_inner()
            .status
    }

    pub async fn stop(self) {
        self.watcher.abort();
        assert!(self.server.stop().await, "drained");
        self.service.unsubscribe_all().await;
    }
}
