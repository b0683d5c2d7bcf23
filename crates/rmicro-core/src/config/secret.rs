//! Which configuration values are secrets, and showing a value without them.
//!
//! A value is secret when its key says so — `pwd` (the seed's `mysql` section),
//! `password`, `passwd`, `secret`, `token`, `credentials`, `private_key`,
//! `api_key`, any key containing one of those (`client_secret`,
//! `auth_token`), case-insensitive — or when it is a URL that carries a password
//! (`redis://user:pw@host`). Tools that print configuration (`rmicro config get`)
//! show such values as `"***"` unless asked for them.

use serde_json::Value;

/// What a secret is printed as.
pub const REDACTED: &str = "***";

const SECRET_WORDS: [&str; 8] = [
    "pwd",
    "pass",
    "secret",
    "token",
    "credential",
    "private_key",
    "privatekey",
    "api_key",
];

/// Whether a value under key `name` is a secret by its name.
///
/// ```
/// # extern crate rmicro_core as rmicro;
/// use rmicro::config::is_secret_key;
/// assert!(is_secret_key("pwd") && is_secret_key("DB_PASSWORD") && is_secret_key("client_secret"));
/// assert!(!is_secret_key("host") && !is_secret_key("port") && !is_secret_key("user"));
/// ```
pub fn is_secret_key(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|word| name.contains(word)) || name == "apikey"
}

/// `value` with every secret replaced by [`REDACTED`]; `path` is where it sits
/// (`mysql`, or `mysql.pwd` — then the whole value is the secret).
///
/// ```
/// # extern crate rmicro_core as rmicro;
/// let mysql = serde_json::json!({"host": "db", "pwd": "s3cret", "dsn": "mysql://u:s3cret@db/user"});
/// let shown = rmicro::config::redacted("mysql", &mysql);
/// assert_eq!(shown["pwd"], "***");
/// assert_eq!(shown["dsn"], "mysql://u:***@db/user");
/// assert_eq!(shown["host"], "db");
/// ```
pub fn redacted(path: &str, value: &Value) -> Value {
    if path.rsplit('.').next().is_some_and(is_secret_key) && !path.is_empty() {
        return Value::String(REDACTED.into());
    }
    redact(value)
}

fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if is_secret_key(k) && !v.is_object() && !v.is_array() {
                        Value::String(REDACTED.into())
                    } else {
                        redact(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        Value::String(text) => Value::String(crate::broker::redact_str(text)),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_by_name_and_by_url_are_hidden_and_nothing_else() {
        let config = json!({
            "mysql": {"host": "db", "port": 3306, "user": "root", "pwd": "p1", "database": "user"},
            "broker": {"address": "redis://app:p2@cache:6379/0", "plain": "nats://nats:4222"},
            "auth": {"client_secret": "p3", "issuer": "https://id"},
            "list": [{"token": "p4"}, "amqp://guest:p5@mq/"],
            "nested": {"password": {"inner": "p6"}}
        });
        let shown = redacted("", &config).to_string();
        for secret in ["p1", "p2", "p3", "p4", "p5"] {
            assert!(
                !shown.contains(&format!("\"{secret}\""))
                    && !shown.contains(&format!(":{secret}@")),
                "{secret} in {shown}"
            );
        }
        for kept in [
            "\"db\"",
            "3306",
            "\"root\"",
            "nats://nats:4222",
            "https://id",
            "redis://app:***@cache:6379/0",
        ] {
            assert!(shown.contains(kept), "{kept} missing from {shown}");
        }
        // An object under a secret-looking key is walked, not dropped whole.
        assert!(shown.contains("\"inner\""), "{shown}");
        assert_eq!(redacted("mysql.pwd", &json!("p1")), json!(REDACTED));
    }
}
