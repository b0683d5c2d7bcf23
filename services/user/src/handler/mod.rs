//! The gRPC endpoints: requests in, the domain service, replies out, events
//! announced. Changing or removing a user needs the user's own token or an
//! admin's (`PERMISSION_DENIED` otherwise).

use crate::domain::model::{User, unix};
use crate::domain::service::{Registration, UserService};
use crate::proto;
use rmicro::wrapper::auth::Principal;
use rmicro::{Error, Request};

/// Serves `user.v1.User` over the domain service.
#[derive(Clone)]
pub struct Handler {
    service: UserService,
    /// Publishes the events this service announces.
    client: rmicro::Client,
}

impl Handler {
    /// Serves `service`, publishing through `client` (the service's own).
    pub fn new(service: UserService, client: rmicro::Client) -> Self {
        Handler { service, client }
    }

    /// Announces `user` on `topic`; the change is made either way, so a broker
    /// that is down is logged, not returned.
    async fn announce(&self, topic: &str, user: &User) {
        let event = proto::UserEvent {
            user_id: user.id,
            user_name: user.user_name.clone(),
            at_unix: unix(std::time::SystemTime::now()),
        };
        if let Err(err) = self.client.publish(topic, &event).await {
            tracing::warn!(user_id = user.id, error = %err, "{topic} not published");
        }
    }
}

/// A domain user as the contract's message: never the password hash.
pub fn to_proto(user: &User) -> proto::UserInfo {
    proto::UserInfo {
        user_id: user.id,
        user_name: user.user_name.clone(),
        first_name: user.first_name.clone(),
        email: user.email.clone(),
        created_unix: unix(user.created),
        updated_unix: unix(user.updated),
    }
}

/// Whether the caller may change user `id`: their own token, or an admin's.
/// Without an auth wrapper (no principal) the service trusts its network.
fn may_change<T>(request: &Request<T>, id: i64) -> Result<(), Error> {
    let Some(principal) = request.context().get::<Principal>() else {
        return Ok(());
    };
    if principal.subject == id.to_string() || principal.has_scope("admin") {
        return Ok(());
    }
    Err(Error::forbidden(
        crate::NAME,
        format!(
            "user {} may change only themselves, not user {id}; an admin may change anyone",
            principal.subject
        ),
    ))
}

fn positive_id(id: i64) -> Result<i64, Error> {
    if id > 0 {
        Ok(id)
    } else {
        Err(Error::bad_request(
            crate::NAME,
            "user_id must be a positive number",
        ))
    }
}

impl proto::User for Handler {
    async fn register(
        &self,
        request: Request<proto::RegisterRequest>,
    ) -> Result<proto::UserInfo, Error> {
        let asked = request.message();
        let user = self
            .service
            .register(Registration {
                user_name: &asked.user_name,
                first_name: &asked.first_name,
                email: &asked.email,
                password: &asked.password,
            })
            .await?;
        self.announce(crate::CREATED, &user).await;
        Ok(to_proto(&user))
    }

    async fn login(
        &self,
        request: Request<proto::LoginRequest>,
    ) -> Result<proto::LoginResponse, Error> {
        let asked = request.message();
        let (token, expires_unix, user) = self
            .service
            .login(&asked.user_name, &asked.password)
            .await?;
        Ok(proto::LoginResponse {
            token,
            expires_unix,
            user: Some(to_proto(&user)),
        })
    }

    async fn get_user_info(
        &self,
        request: Request<proto::GetUserInfoRequest>,
    ) -> Result<proto::UserInfo, Error> {
        let asked = request.message();
        let user = match (asked.user_id, asked.user_name.as_str()) {
            (0, "") => {
                return Err(Error::bad_request(
                    crate::NAME,
                    "user_id or user_name is needed",
                ));
            }
            (0, name) => self.service.get_by_name(name).await?,
            (id, _) => self.service.get(positive_id(id)?).await?,
        };
        Ok(to_proto(&user))
    }

    async fn update_user(
        &self,
        request: Request<proto::UpdateUserRequest>,
    ) -> Result<proto::UserInfo, Error> {
        let asked = request.message();
        let id = positive_id(asked.user_id)?;
        may_change(&request, id)?;
        let user = self
            .service
            .update(
                id,
                asked.first_name.as_deref(),
                asked.email.as_deref(),
                asked.password.as_deref(),
            )
            .await?;
        Ok(to_proto(&user))
    }

    async fn delete_user(
        &self,
        request: Request<proto::DeleteUserRequest>,
    ) -> Result<proto::DeleteUserResponse, Error> {
        let id = positive_id(request.message().user_id)?;
        may_change(&request, id)?;
        let user = self.service.delete(id).await?;
        self.announce(crate::DELETED, &user).await;
        Ok(proto::DeleteUserResponse {})
    }

    async fn list_users(
        &self,
        request: Request<proto::ListUsersRequest>,
    ) -> Result<proto::ListUsersResponse, Error> {
        let asked = request.message();
        let (users, next) = self
            .service
            .list(asked.page_size, &asked.page_token)
            .await?;
        Ok(proto::ListUsersResponse {
            users: users.iter().map(to_proto).collect(),
            next_page_token: next,
        })
    }
}
