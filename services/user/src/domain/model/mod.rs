//! What a user is, and what makes one valid.

use std::time::{SystemTime, UNIX_EPOCH};

/// The shortest and longest user names, in characters.
pub const USER_NAME_LEN: (usize, usize) = (3, 32);
/// The longest first name, in characters.
pub const MAX_FIRST_NAME: usize = 64;
/// The longest email address (RFC 5321's path limit).
pub const MAX_EMAIL: usize = 254;
/// The shortest and longest passwords, in characters.
pub const PASSWORD_LEN: (usize, usize) = (8, 128);

/// One user. The password hash is here for the domain to check; it never leaves
/// the service (not in replies, not in logs: `Debug` leaves it out).
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// Given by the database, increasing.
    pub id: i64,
    /// Unique; how the user logs in.
    pub user_name: String,
    /// What they are called.
    pub first_name: String,
    /// Where they are reached.
    pub email: String,
    /// argon2id, in the PHC string format.
    pub password_hash: String,
    /// When they registered.
    pub created: SystemTime,
    /// When they last changed.
    pub updated: SystemTime,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("user_name", &self.user_name)
            .field("first_name", &self.first_name)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// A user about to be stored (the password already hashed).
#[derive(Clone)]
pub struct NewUser {
    /// Unique; how the user logs in.
    pub user_name: String,
    /// What they are called.
    pub first_name: String,
    /// Where they are reached.
    pub email: String,
    /// argon2id, in the PHC string format.
    pub password_hash: String,
}

/// What an update changes: `None` leaves a field as it is.
#[derive(Clone, Default)]
pub struct Changes {
    /// A new first name.
    pub first_name: Option<String>,
    /// A new email address.
    pub email: Option<String>,
    /// A new password hash.
    pub password_hash: Option<String>,
}

/// Seconds since the Unix epoch.
pub fn unix(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Why `user_name` is not acceptable, naming the field; `None` when it is.
pub fn check_user_name(user_name: &str) -> Option<String> {
    let length = user_name.chars().count();
    let (min, max) = USER_NAME_LEN;
    if length < min || length > max {
        return Some(format!(
            "user_name must be {min} to {max} characters long; it is {length}"
        ));
    }
    if !user_name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Some(
            "user_name may hold only lower-case letters, digits, `.`, `_` and `-`".to_owned(),
        );
    }
    None
}

/// Why `first_name` is not acceptable, naming the field; `None` when it is.
pub fn check_first_name(first_name: &str) -> Option<String> {
    if first_name.trim().is_empty() {
        return Some("first_name must not be empty".to_owned());
    }
    let length = first_name.chars().count();
    if length > MAX_FIRST_NAME {
        return Some(format!(
            "first_name is {length} characters long; at most {MAX_FIRST_NAME} are allowed"
        ));
    }
    if first_name.chars().any(char::is_control) {
        return Some("first_name must not hold control characters".to_owned());
    }
    None
}

/// Why `email` is not acceptable, naming the field; `None` when it is. The
/// check is the shape `local@domain.tld`; whether it is reachable is for a
/// confirmation mail to find out.
pub fn check_email(email: &str) -> Option<String> {
    if email.len() > MAX_EMAIL {
        return Some(format!("email is longer than {MAX_EMAIL} characters"));
    }
    let shaped = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
    });
    if !shaped || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("email must look like name@example.com".to_owned());
    }
    None
}

/// Why `password` is not acceptable, naming the field (never its value);
/// `None` when it is.
pub fn check_password(password: &str) -> Option<String> {
    let length = password.chars().count();
    let (min, max) = PASSWORD_LEN;
    if length < min || length > max {
        return Some(format!("password must be {min} to {max} characters long"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_checked_and_named() {
        assert_eq!(check_user_name("ann.lee-2_x"), None);
        for bad in ["an", "Ann", "ann lee", &"a".repeat(33), "ann@x"] {
            let why = check_user_name(bad).expect(bad);
            assert!(why.starts_with("user_name"), "{why}");
        }
        assert_eq!(check_first_name("Ann"), None);
        assert!(check_first_name(" ").is_some_and(|w| w.starts_with("first_name")));
        assert!(check_first_name("a\u{7}b").is_some());
        assert_eq!(check_email("ann@example.com"), None);
        for bad in [
            "ann",
            "@example.com",
            "ann@example",
            "ann@@x.com",
            "a nn@x.com",
            "ann@x.com.",
        ] {
            assert!(
                check_email(bad).is_some_and(|w| w.starts_with("email")),
                "{bad}"
            );
        }
        assert_eq!(check_password("correct horse"), None);
        let why = check_password("short").expect("too short");
        assert!(
            why.starts_with("password") && !why.contains("short"),
            "{why}"
        );
    }

    #[test]
    fn debug_leaves_the_hash_out() {
        let user = User {
            id: 1,
            user_name: "ann".into(),
            first_name: "Ann".into(),
            email: "ann@example.com".into(),
            password_hash: "$argon2id$secret".into(),
            created: UNIX_EPOCH,
            updated: UNIX_EPOCH,
        };
        assert!(!format!("{user:?}").contains("argon2"));
    }
}
