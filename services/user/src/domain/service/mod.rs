//! The rules: validation, password hashing (argon2id), login without user
//! enumeration, signed tokens, cursor paging, and the errors a caller sees.

mod password;
mod token;

pub use password::Passwords;
pub use token::{ISSUER, Settings, Tokens, auth_layer};

use super::model::{
    Changes, NewUser, User, check_email, check_first_name, check_password, check_user_name,
};
use super::repository::UserRepository;
use rmicro::Error;

/// Users per page when the caller does not say.
pub const DEFAULT_PAGE: u32 = 20;
/// The most users one page holds.
pub const MAX_PAGE: u32 = 100;

/// The one answer to a failed login, whatever failed: no one learns from it
/// whether a user name exists.
pub const LOGIN_FAILED: &str = "user_name or password is wrong";

/// A registration as the caller sent it.
pub struct Registration<'a> {
    /// Wanted user name.
    pub user_name: &'a str,
    /// First name.
    pub first_name: &'a str,
    /// Email address.
    pub email: &'a str,
    /// Password, in the clear (hashed here, never stored or logged).
    pub password: &'a str,
}

/// The domain service over the repository.
#[derive(Clone)]
pub struct UserService {
    repository: UserRepository,
    passwords: Passwords,
    tokens: Tokens,
}

fn invalid(why: String) -> Error {
    Error::bad_request(crate::NAME, why)
}

impl UserService {
    /// The service keeping users in `repository` and signing tokens with `tokens`.
    pub fn new(repository: UserRepository, tokens: Tokens) -> Self {
        UserService {
            repository,
            passwords: Passwords::new(),
            tokens,
        }
    }

    /// The password hasher (its [`Passwords::checks`] counts the logins' work).
    pub fn passwords(&self) -> &Passwords {
        &self.passwords
    }

    /// The repository underneath.
    pub fn repository(&self) -> &UserRepository {
        &self.repository
    }

    /// Makes an account: each field checked (`INVALID_ARGUMENT` naming it), the
    /// password hashed, a taken name `ALREADY_EXISTS`.
    pub async fn register(&self, new: Registration<'_>) -> Result<User, Error> {
        let first_name = new.first_name.trim();
        let email = new.email.trim();
        // The first field that is wrong is named.
        if let Some(why) = [
            check_user_name(new.user_name),
            check_first_name(first_name),
            check_email(email),
            check_password(new.password),
        ]
        .into_iter()
        .flatten()
        .next()
        {
            return Err(invalid(why));
        }
        let password_hash = self.passwords.hash(new.password).await?;
        self.repository
            .insert(NewUser {
                user_name: new.user_name.to_owned(),
                first_name: first_name.to_owned(),
                email: email.to_owned(),
                password_hash,
            })
            .await
    }

    /// Checks a password and returns a token, its expiry (Unix seconds) and the
    /// user. A wrong password and an unknown user are the same `UNAUTHENTICATED`
    /// [`LOGIN_FAILED`], after the same work (a hash is checked either way).
    pub async fn login(
        &self,
        user_name: &str,
        password: &str,
    ) -> Result<(String, i64, User), Error> {
        let user = if check_user_name(user_name).is_none() {
            self.repository.find_by_name(user_name).await?
        } else {
            None
        };
        let hash = user.as_ref().map(|u| u.password_hash.as_str());
        if !self.passwords.verify(password, hash).await? {
            return Err(Error::unauthorized(crate::NAME, LOGIN_FAILED));
        }
        let Some(user) = user else {
            return Err(Error::unauthorized(crate::NAME, LOGIN_FAILED));
        };
        let (token, expires) = self.tokens.issue(&user)?;
        Ok((token, expires, user))
    }

    /// User `id`, or `NOT_FOUND`.
    pub async fn get(&self, id: i64) -> Result<User, Error> {
        self.repository
            .find(id)
            .await?
            .ok_or_else(|| Error::not_found(crate::NAME, format!("no user {id}")))
    }

    /// The user called `user_name`, or `NOT_FOUND`.
    pub async fn get_by_name(&self, user_name: &str) -> Result<User, Error> {
        if let Some(why) = check_user_name(user_name) {
            return Err(invalid(why));
        }
        self.repository
            .find_by_name(user_name)
            .await?
            .ok_or_else(|| Error::not_found(crate::NAME, format!("no user `{user_name}`")))
    }

    /// Changes the fields given (each checked), or `NOT_FOUND`.
    pub async fn update(
        &self,
        id: i64,
        first_name: Option<&str>,
        email: Option<&str>,
        password: Option<&str>,
    ) -> Result<User, Error> {
        let first_name = first_name.map(str::trim);
        let email = email.map(str::trim);
        if let Some(why) = first_name.and_then(check_first_name) {
            return Err(invalid(why));
        }
        if let Some(why) = email.and_then(check_email) {
            return Err(invalid(why));
        }
        if let Some(why) = password.and_then(check_password) {
            return Err(invalid(why));
        }
        let password_hash = match password {
            Some(password) => Some(self.passwords.hash(password).await?),
            None => None,
        };
        let changes = Changes {
            first_name: first_name.map(str::to_owned),
            email: email.map(str::to_owned),
            password_hash,
        };
        self.repository
            .update(id, changes)
            .await?
            .ok_or_else(|| Error::not_found(crate::NAME, format!("no user {id}")))
    }

    /// Removes user `id` and returns who it was, or `NOT_FOUND`.
    pub async fn delete(&self, id: i64) -> Result<User, Error> {
        let user = self.get(id).await?;
        if !self.repository.delete(id).await? {
            return Err(Error::not_found(crate::NAME, format!("no user {id}")));
        }
        Ok(user)
    }

    /// A page of users after the cursor `token` (empty for the first page), and
    /// the cursor of the next page (empty on the last).
    pub async fn list(&self, page_size: u32, token: &str) -> Result<(Vec<User>, String), Error> {
        let after = if token.is_empty() {
            0
        } else {
            token
                .parse::<i64>()
                .ok()
                .filter(|after| *after > 0)
                .ok_or_else(|| {
                    invalid(format!("page_token `{token}` is not one this service gave"))
                })?
        };
        let size = match page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        // One more than asked tells whether another page follows.
        let mut users = self.repository.list(after, u64::from(size) + 1).await?;
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let next = if users.len() > size {
            users.truncate(size);
            users.last().map(|u| u.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok((users, next))
    }
}
