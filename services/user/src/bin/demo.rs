//! The seed's story in one command, nothing to install: the user service on
//! SQLite, `rmicro api` in front of it, a register → login → get-info → list
//! sequence over HTTP/JSON printed as it happens, the `user.created` event
//! received, and a clean shutdown.
//!
//! ```sh
//! cargo run -p user --bin user-demo
//! ```

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rmicro::broker::typed::Event;
use std::sync::Arc;
use std::time::Duration;
use user::domain::service::auth_layer;
use user::proto;

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("rmicro-user-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let database = format!("sqlite://{}", dir.join("user.db").display());
    let registry: rmicro::registry::SharedRegistry =
        Arc::new(rmicro::registry::MemoryRegistry::new());

    // The user service, as `user` runs it, with its users in a SQLite file.
    let auth = auth_layer();
    let service = rmicro::Service::builder(user::NAME)
        .address("127.0.0.1:0")
        .args([user::NAME, "--log-level", "warn"])
        .registry(registry.clone())
        .config_defaults(serde_json::json!({
            "mysql": { "dsn": database },
            "user": { "jwt_secret": "the demo's key: thirty-two bytes or more" },
        }))
        .wrap_handler(auth.clone())
        .build()?;
    let tokens = user::app::tokens(service.config(), &auth).await?;
    let db = rmicro::db::Database::from_config(service.config(), "mysql", Duration::from_secs(5))
        .await?;
    println!("user service: users in {}", db.url());
    let (_users, watcher) =
        user::app::prepare(&service, db, tokens, true, Duration::from_secs(2)).await?;
    let (seen, mut events) = tokio::sync::mpsc::unbounded_channel();
    service
        .subscribe(user::CREATED, move |event: Event<proto::UserEvent>| {
            let seen = seen.clone();
            async move {
                let _ = seen.send(event.message().clone());
                Ok(())
            }
        })
        .await?;
    let server = service.start().await?;
    println!("user service: gRPC on {}", server.local_addr());

    // The gateway in front of it, over the same registry.
    let gateway = rmicro_api::Gateway::new(rmicro_api::Options::default(), registry);
    gateway.refresh().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("rmicro api: HTTP on {base}");
    let serving = tokio::spawn(gateway.serve(listener));

    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let ann = call(
        &http,
        "POST",
        &format!("{base}/v1/users"),
        None,
        r#"{"user_name": "ann", "first_name": "Ann", "email": "ann@example.com", "password": "correct horse battery"}"#,
    )
    .await?;
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .ok()
        .flatten()
        .ok_or_else(|| anyhow::anyhow!("no user.created event within 10 s"))?;
    println!(
        "event  {}: user_id {}, user_name {}",
        user::CREATED,
        event.user_id,
        event.user_name
    );
    let login = call(
        &http,
        "POST",
        &format!("{base}/v1/users/login"),
        None,
        r#"{"user_name": "ann", "password": "correct horse battery"}"#,
    )
    .await?;
    let token = login["token"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the login reply has no token"))?;
    let bearer = format!("Bearer {token}");
    let id = ann["userId"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| ann["userId"].to_string());
    call(
        &http,
        "GET",
        &format!("{base}/v1/users/{id}"),
        Some(&bearer),
        "",
    )
    .await?;
    call(
        &http,
        "GET",
        &format!("{base}/v1/users?page_size=10"),
        Some(&bearer),
        "",
    )
    .await?;
    println!("(the same list without the token is refused:)");
    let refused = call(
        &http,
        "GET",
        &format!("{base}/v1/users?page_size=10"),
        None,
        "",
    )
    .await;
    if refused.is_ok() {
        anyhow::bail!("a list without a token was answered");
    }

    // A clean shutdown: the gateway, then the service (deregistered, drained).
    serving.abort();
    service.unsubscribe_all().await;
    let drained = server.stop().await;
    watcher.abort();
    println!("stopped (in-flight calls drained: {drained})");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Sends one request, prints it and the answer; the reply's JSON, or the error
/// answer as an error.
async fn call(
    http: &Http,
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: &str,
) -> anyhow::Result<serde_json::Value> {
    let path = url.splitn(4, '/').nth(3).unwrap_or_default();
    let mut line = format!("→ {method} /{path}");
    if !body.is_empty() {
        line = format!("{line} {body}");
    }
    if bearer.is_some() {
        line.push_str("  [authorization: Bearer <the token>]");
    }
    println!("{line}");
    let mut request = http::Request::builder().method(method).uri(url);
    if !body.is_empty() {
        request = request.header("content-type", "application/json");
    }
    if let Some(bearer) = bearer {
        request = request.header("authorization", bearer);
    }
    let response = http
        .request(request.body(Full::new(Bytes::from(body.to_owned())))?)
        .await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    let shown = if text.len() > 300 {
        format!("{}…", &text[..300])
    } else {
        text.to_string()
    };
    println!("← {} {shown}", status.as_u16());
    if !status.is_success() {
        anyhow::bail!("{method} /{path}: {status} {text}");
    }
    Ok(serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}
