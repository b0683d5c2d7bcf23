//! `rmicro-bench user`: the user service's `GetUserInfo` over gRPC — the shipped
//! `user` binary (default flags: auth, logging, SeaORM) — against the peer a Rust
//! team would write by hand: tonic + sqlx, checking the same bearer token and
//! running the same query on the same database, in the same run, under `h2load`
//! (a C load generator, many connections). Each round runs both servers in turn,
//! the order rotating.

use crate::h2load::{Shape, h2load_once};
use prost::Message;
use rmicro::db::sea_orm::sqlx;
use rmicro::db::sea_orm::{ConnectionTrait, Statement};
use rmicro::db::{Database, DbUrl};
use std::time::Duration;

/// The tonic-generated code for the user service's proto (the peer serves only
/// `GetUserInfo`; the event message goes unused).
#[allow(dead_code)]
mod tonic_user {
    tonic::include_proto!("user.v1");
}

/// Options of `rmicro-bench user`.
#[derive(clap::Parser, Clone)]
pub struct UserArgs {
    /// How hard and how long each server is loaded.
    #[command(flatten)]
    load: Shape,
    /// The database server; a database of the benchmark's own is made there
    /// (MySQL/MariaDB, the seed's, or PostgreSQL).
    #[arg(long, default_value = "mysql://root@127.0.0.1:3306/test")]
    dsn: String,
    /// Users in the table.
    #[arg(long, default_value_t = 1000)]
    users: u32,
    /// Only make the database and the request, print the database URL, the
    /// token and the request file, and keep them (for profiling a server by
    /// hand, e.g. under callgrind).
    #[arg(long)]
    prepare_only: bool,
}

const SECRET: &str = "the benchmark's key: at least thirty-two bytes";
const DATABASE: &str = "rmicro_bench_user";

/// Runs `rmicro-bench user`.
pub async fn run(args: UserArgs) -> anyhow::Result<()> {
    let admin: DbUrl = args.dsn.parse()?;
    let url = prepare(&admin, args.users).await?;
    let token = token()?;
    let body = std::env::temp_dir().join(format!("rmicro-bench-user-{}.req", std::process::id()));
    let message = tonic_user::GetUserInfoRequest {
        user_id: 1,
        user_name: String::new(),
    }
    .encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(message.len())?.to_be_bytes());
    framed.extend_from_slice(&message);
    std::fs::write(&body, framed)?;
    if args.prepare_only {
        println!("database {}", url.expose());
        println!("token {token}");
        println!("request {}", body.display());
        return Ok(());
    }
    let load = &args.load;
    println!(
        "GetUserInfo on {url} ({} users) under h2load -c {} -m {} -t {}, {:?} x {} rounds per server (+{:?} warm-up)",
        args.users,
        load.connections,
        load.streams,
        load.threads,
        load.duration,
        load.rounds,
        load.warmup
    );
    let kinds = ["tonic+sqlx", "user"];
    let mut series: Vec<crate::summary::Series> = kinds
        .iter()
        .map(|k| crate::summary::Series::new(k))
        .collect::<anyhow::Result<_>>()?;
    let headers = [format!("authorization: Bearer {token}")];
    for round in 0..load.rounds {
        for i in (0..kinds.len()).map(|i| (i + round as usize) % kinds.len()) {
            let (mut child, address) = match kinds[i] {
                "user" => {
                    let dsn = format!("mysql.dsn={}", url.expose());
                    let secret = format!("user.jwt_secret={SECRET}");
                    crate::spawn_shipped(
                        "user",
                        "user",
                        &[
                            "--config-set",
                            &dsn,
                            "--config-set",
                            &secret,
                            "--migrate=false",
                        ],
                    )?
                }
                _ => crate::listening(
                    std::process::Command::new(std::env::current_exe()?)
                        .args(["tonic-user", "--dsn", url.expose(), "--secret", SECRET])
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::inherit())
                        .spawn()?,
                    kinds[i],
                )?,
            };
            let result = h2load_once(
                &address,
                child.id(),
                load,
                &body,
                "/user.v1.User/GetUserInfo",
                &headers,
            );
            let _ = child.kill();
            let _ = child.wait();
            let run = result?;
            println!(
                "  round {} {:>10}: {:>9.0} req/s  p50 {:>5} us  p99 {:>5} us  CPU {:>6.2} us/req  done {} failed {}",
                round + 1,
                kinds[i],
                run.rps,
                run.latency.value_at_quantile(0.5),
                run.latency.value_at_quantile(0.99),
                run.cpu_us,
                run.requests,
                run.failed
            );
            let s = &mut series[i];
            s.rps.push(run.rps);
            s.cpu_us.push(run.cpu_us);
            s.errors += run.failed;
            s.latency.add(&run.latency)?;
        }
    }
    let _ = std::fs::remove_file(&body);
    crate::summary::print(&series);
    let server = Database::connect(&admin, Duration::from_secs(5)).await?;
    server
        .conn()
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {DATABASE}"))
        .await?;
    Ok(())
}

/// A fresh database with the user service's schema and `users` rows; its URL.
async fn prepare(admin: &DbUrl, users: u32) -> anyhow::Result<DbUrl> {
    let server = Database::connect(admin, Duration::from_secs(5)).await?;
    server
        .conn()
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {DATABASE}"))
        .await?;
    server
        .conn()
        .execute_unprepared(&format!("CREATE DATABASE {DATABASE}"))
        .await?;
    server.close().await;
    let url = admin.with_database(DATABASE);
    let db = Database::connect(&url, Duration::from_secs(5)).await?;
    db.migrate(user::domain::repository::MIGRATIONS).await?;
    let backend = db.conn().get_database_backend();
    for first in (0..users).step_by(100) {
        let rows: Vec<u32> = (first..(first + 100).min(users)).collect();
        let mut values = Vec::new();
        let mut placeholders = Vec::new();
        for (n, i) in rows.iter().enumerate() {
            let p = match backend {
                rmicro::db::sea_orm::DbBackend::Postgres => {
                    let b = n * 4;
                    format!(
                        "(${}, ${}, ${}, ${}, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4
                    )
                }
                _ => "(?, ?, ?, ?, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)".to_owned(),
            };
            placeholders.push(p);
            values.extend([
                rmicro::db::sea_orm::Value::from(format!("user-{i}")),
                rmicro::db::sea_orm::Value::from(format!("User {i}")),
                rmicro::db::sea_orm::Value::from(format!("user-{i}@example.com")),
                rmicro::db::sea_orm::Value::from(
                    "$argon2id$v=19$m=19456,t=2,p=1$bm90IGEgcmVhbCBzYWx0$bm90IGEgcmVhbCBoYXNo"
                        .to_owned(),
                ),
            ]);
        }
        let sql = format!(
            "INSERT INTO users (user_name, first_name, email, password_hash, created_at, updated_at) VALUES {}",
            placeholders.join(", ")
        );
        db.conn()
            .execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
    }
    db.close().await;
    Ok(url)
}

/// A token the user service accepts for user 1.
fn token() -> anyhow::Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = serde_json::json!({
        "sub": "1", "name": "user-0", "scope": "user", "iss": user::domain::service::ISSUER,
        "iat": now, "exp": now + 86_400,
    });
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )?)
}

/// The hand-written peer's pool: one driver per database kind.
#[derive(Clone)]
enum Pool {
    MySql(sqlx::MySqlPool),
    Postgres(sqlx::PgPool),
}

/// The hand-written peer: `GetUserInfo` by id with sqlx, the bearer token
/// checked as the user service checks it (HS256, `iss`, `exp`).
#[derive(Clone)]
struct TonicUser {
    pool: Pool,
}

type Row = (i64, String, String, String, i64, i64);

#[tonic::async_trait]
impl tonic_user::user_server::User for TonicUser {
    async fn get_user_info(
        &self,
        request: tonic::Request<tonic_user::GetUserInfoRequest>,
    ) -> Result<tonic::Response<tonic_user::UserInfo>, tonic::Status> {
        let id = request.get_ref().user_id;
        let row: Option<Row> = match &self.pool {
            Pool::MySql(pool) => sqlx::query_as(
                "SELECT id, user_name, first_name, email, CAST(UNIX_TIMESTAMP(created_at) AS SIGNED), CAST(UNIX_TIMESTAMP(updated_at) AS SIGNED) FROM users WHERE id = ?",
            )
            .bind(id)
            .fetch_optional(pool)
            .await,
            Pool::Postgres(pool) => sqlx::query_as(
                "SELECT id, user_name, first_name, email, CAST(EXTRACT(EPOCH FROM created_at) AS BIGINT), CAST(EXTRACT(EPOCH FROM updated_at) AS BIGINT) FROM users WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await,
        }
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let (user_id, user_name, first_name, email, created_unix, updated_unix) =
            row.ok_or_else(|| tonic::Status::not_found(format!("no user {id}")))?;
        Ok(tonic::Response::new(tonic_user::UserInfo {
            user_id,
            user_name,
            first_name,
            email,
            created_unix,
            updated_unix,
        }))
    }

    async fn register(
        &self,
        _: tonic::Request<tonic_user::RegisterRequest>,
    ) -> Result<tonic::Response<tonic_user::UserInfo>, tonic::Status> {
        Err(tonic::Status::unimplemented("only GetUserInfo is measured"))
    }
    async fn login(
        &self,
        _: tonic::Request<tonic_user::LoginRequest>,
    ) -> Result<tonic::Response<tonic_user::LoginResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("only GetUserInfo is measured"))
    }
    async fn update_user(
        &self,
        _: tonic::Request<tonic_user::UpdateUserRequest>,
    ) -> Result<tonic::Response<tonic_user::UserInfo>, tonic::Status> {
        Err(tonic::Status::unimplemented("only GetUserInfo is measured"))
    }
    async fn delete_user(
        &self,
        _: tonic::Request<tonic_user::DeleteUserRequest>,
    ) -> Result<tonic::Response<tonic_user::DeleteUserResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("only GetUserInfo is measured"))
    }
    async fn list_users(
        &self,
        _: tonic::Request<tonic_user::ListUsersRequest>,
    ) -> Result<tonic::Response<tonic_user::ListUsersResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("only GetUserInfo is measured"))
    }
}

/// Serves the hand-written peer on a free loopback port; prints `LISTENING <address>`.
pub async fn serve_tonic(dsn: &str, secret: &str) -> anyhow::Result<()> {
    let pool = if dsn.starts_with("postgres") {
        Pool::Postgres(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(10)
                .connect(dsn)
                .await?,
        )
    } else {
        Pool::MySql(
            sqlx::mysql::MySqlPoolOptions::new()
                .max_connections(10)
                .connect(dsn)
                .await?,
        )
    };
    let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&[user::domain::service::ISSUER]);
    let check = move |request: tonic::Request<()>| {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| tonic::Status::unauthenticated("no bearer token"))?;
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map_err(|e| tonic::Status::unauthenticated(e.to_string()))?;
        Ok(request)
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("LISTENING {}", listener.local_addr()?);
    tonic::transport::Server::builder()
        .add_service(tonic_user::user_server::UserServer::with_interceptor(
            TonicUser { pool },
            check,
        ))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await?;
    Ok(())
}
