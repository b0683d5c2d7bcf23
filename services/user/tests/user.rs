//! The user service through gRPC with its typed client, on the real MariaDB and
//! PostgreSQL of this machine (a database of each test's own, dropped after)
//! and on SQLite: every endpoint, every error a caller can provoke, the events,
//! 100 registrations of one name at once.

mod common;

use common::{ADMIN, start};
use rmicro::db::Backend;
use rmicro::db::testing::TestDatabase;
use user::domain::service::LOGIN_FAILED;
use user::proto;

async fn every_endpoint_and_error(backend: Backend, test: &str) {
    let Some(db) = TestDatabase::create(backend, test).await else {
        return;
    };
    let mut running = start(db.url()).await;
    let client = running.client.clone();

    // Register: the reply, the event, and what is refused.
    let ann = running
        .register("ann", "correct horse battery")
        .await
        .expect("registered");
    assert_eq!(
        (ann.user_name.as_str(), ann.email.as_str()),
        ("ann", "ann@example.com")
    );
    assert!(ann.user_id > 0 && ann.created_unix > 0, "{ann:?}");
    let (topic, event) = running.next_event().await;
    assert_eq!(
        (topic.as_str(), event.user_id, event.user_name.as_str()),
        ("user.created", ann.user_id, "ann")
    );
    let taken = running
        .register("ann", "another password")
        .await
        .expect_err("taken");
    assert_eq!(taken.grpc_code(), rmicro::Code::AlreadyExists, "{taken}");
    assert!(taken.detail.contains("user_name `ann` is taken"), "{taken}");
    for (request, field) in [
        (
            proto::RegisterRequest {
                user_name: "Bad Name".into(),
                first_name: "B".into(),
                email: "b@example.com".into(),
                password: "long enough".into(),
            },
            "user_name",
        ),
        (
            proto::RegisterRequest {
                user_name: "bob".into(),
                first_name: " ".into(),
                email: "b@example.com".into(),
                password: "long enough".into(),
            },
            "first_name",
        ),
        (
            proto::RegisterRequest {
                user_name: "bob".into(),
                first_name: "Bob".into(),
                email: "not-an-email".into(),
                password: "long enough".into(),
            },
            "email",
        ),
        (
            proto::RegisterRequest {
                user_name: "bob".into(),
                first_name: "Bob".into(),
                email: "b@example.com".into(),
                password: "short".into(),
            },
            "password",
        ),
    ] {
        let err = client.register(request).await.expect_err(field);
        assert_eq!(err.grpc_code(), rmicro::Code::InvalidArgument, "{err}");
        assert!(err.detail.starts_with(field), "{field}: {err}");
        assert!(
            !err.detail.contains("short"),
            "the password is not echoed: {err}"
        );
    }

    // Login: a wrong password and an unknown user look the same, and cost the same work.
    let checks = running.users.passwords().checks();
    let wrong = running
        .login("ann", "wrong password!")
        .await
        .expect_err("wrong");
    let unknown = running
        .login("nobody", "correct horse battery")
        .await
        .expect_err("unknown");
    for err in [&wrong, &unknown] {
        assert_eq!(err.grpc_code(), rmicro::Code::Unauthenticated, "{err}");
        assert_eq!(err.detail, LOGIN_FAILED);
    }
    assert_eq!(
        running.users.passwords().checks() - checks,
        2,
        "one hash checked per login, known user or not"
    );
    let ann_token = running
        .login("ann", "correct horse battery")
        .await
        .expect("logged in");

    // Reading needs a token; missing users are NOT_FOUND.
    let anonymous = client
        .get_user_info(proto::GetUserInfoRequest {
            user_id: ann.user_id,
            ..Default::default()
        })
        .await
        .expect_err("no token");
    assert_eq!(
        anonymous.grpc_code(),
        rmicro::Code::Unauthenticated,
        "{anonymous}"
    );
    let got = client
        .get_user_info(proto::GetUserInfoRequest {
            user_id: ann.user_id,
            ..Default::default()
        })
        .metadata("authorization", &ann_token)
        .await
        .expect("found");
    assert_eq!(got, ann);
    let by_name = client
        .get_user_info(proto::GetUserInfoRequest {
            user_name: "ann".into(),
            ..Default::default()
        })
        .metadata("authorization", &ann_token)
        .await
        .expect("found by name");
    assert_eq!(by_name, ann);
    let missing = client
        .get_user_info(proto::GetUserInfoRequest {
            user_id: 999_999,
            ..Default::default()
        })
        .metadata("authorization", &ann_token)
        .await
        .expect_err("missing");
    assert_eq!(missing.grpc_code(), rmicro::Code::NotFound, "{missing}");
    let neither = client
        .get_user_info(proto::GetUserInfoRequest::default())
        .metadata("authorization", &ann_token)
        .await
        .expect_err("neither");
    assert_eq!(
        neither.grpc_code(),
        rmicro::Code::InvalidArgument,
        "{neither}"
    );

    // Updating: oneself, not another; an admin anyone.
    let bob = running
        .register("bob", "bob's password")
        .await
        .expect("registered");
    let _ = running.next_event().await;
    let updated = client
        .update_user(proto::UpdateUserRequest {
            user_id: ann.user_id,
            first_name: Some("Annie".into()),
            ..Default::default()
        })
        .metadata("authorization", &ann_token)
        .await
        .expect("updated");
    assert_eq!(
        (updated.first_name.as_str(), updated.email.as_str()),
        ("Annie", "ann@example.com")
    );
    let other = client
        .update_user(proto::UpdateUserRequest {
            user_id: bob.user_id,
            first_name: Some("Robert".into()),
            ..Default::default()
        })
        .metadata("authorization", &ann_token)
        .await
        .expect_err("not hers");
    assert_eq!(other.grpc_code(), rmicro::Code::PermissionDenied, "{other}");
    let bad_email = client
        .update_user(proto::UpdateUserRequest {
            user_id: ann.user_id,
            email: Some("nope".into()),
            ..Default::default()
        })
        .metadata("authorization", &ann_token)
        .await
        .expect_err("bad email");
    assert!(bad_email.detail.starts_with("email"), "{bad_email}");
    running
        .register(ADMIN, "the admin's password")
        .await
        .expect("registered");
    let _ = running.next_event().await;
    let admin_token = running
        .login(ADMIN, "the admin's password")
        .await
        .expect("logged in");
    client
        .update_user(proto::UpdateUserRequest {
            user_id: bob.user_id,
            password: Some("bob's new password".into()),
            ..Default::default()
        })
        .metadata("authorization", &admin_token)
        .await
        .expect("an admin may");
    running
        .login("bob", "bob's password")
        .await
        .expect_err("the old password is gone");
    running
        .login("bob", "bob's new password")
        .await
        .expect("the new one works");

    // Listing, a page at a time.
    for name in ["cat", "dan"] {
        running
            .register(name, "a long password")
            .await
            .expect("registered");
        let _ = running.next_event().await;
    }
    let mut names = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_users(proto::ListUsersRequest {
                page_size: 2,
                page_token: token,
            })
            .metadata("authorization", &ann_token)
            .await
            .expect("a page");
        pages += 1;
        assert!(page.users.len() <= 2);
        names.extend(page.users.into_iter().map(|u| u.user_name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(names, ["ann", "bob", ADMIN, "cat", "dan"]);
    assert_eq!(pages, 3);
    let forged_cursor = client
        .list_users(proto::ListUsersRequest {
            page_size: 2,
            page_token: "'; DROP TABLE users; --".into(),
        })
        .metadata("authorization", &ann_token)
        .await
        .expect_err("not a cursor");
    assert_eq!(
        forged_cursor.grpc_code(),
        rmicro::Code::InvalidArgument,
        "{forged_cursor}"
    );
    let capped = client
        .list_users(proto::ListUsersRequest {
            page_size: 100_000,
            page_token: String::new(),
        })
        .metadata("authorization", &ann_token)
        .await
        .expect("capped, not refused");
    assert_eq!(capped.users.len(), 5);

    // Deleting: oneself; the event; then gone.
    client
        .delete_user(proto::DeleteUserRequest {
            user_id: ann.user_id,
        })
        .metadata("authorization", &ann_token)
        .await
        .expect("deleted");
    let (topic, event) = running.next_event().await;
    assert_eq!(
        (topic.as_str(), event.user_name.as_str()),
        ("user.deleted", "ann")
    );
    let gone = client
        .delete_user(proto::DeleteUserRequest {
            user_id: ann.user_id,
        })
        .metadata("authorization", &admin_token)
        .await
        .expect_err("already gone");
    assert_eq!(gone.grpc_code(), rmicro::Code::NotFound, "{gone}");

    running.stop().await;
    db.remove().await;
}

#[tokio::test]
async fn sqlite_every_endpoint_and_error() {
    every_endpoint_and_error(Backend::Sqlite, "sqlite_every_endpoint").await;
}

#[tokio::test]
async fn mariadb_every_endpoint_and_error() {
    every_endpoint_and_error(Backend::MySql, "mariadb_every_endpoint").await;
}

#[tokio::test]
async fn postgres_every_endpoint_and_error() {
    every_endpoint_and_error(Backend::Postgres, "postgres_every_endpoint").await;
}

async fn one_name_registered_100_times_at_once(backend: Backend, test: &str) {
    let Some(db) = TestDatabase::create(backend, test).await else {
        return;
    };
    let running = start(db.url()).await;
    let attempts = (0..100).map(|i| {
        let client = running.client.clone();
        async move {
            client
                .register(proto::RegisterRequest {
                    user_name: "popular".into(),
                    first_name: format!("Try {i}"),
                    email: format!("try{i}@example.com"),
                    password: "the same password".into(),
                })
                .await
        }
    });
    let results = futures_util::future::join_all(attempts).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    let taken = results
        .iter()
        .filter(|r| {
            r.as_ref()
                .is_err_and(|e| e.grpc_code() == rmicro::Code::AlreadyExists)
        })
        .count();
    let others: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|e| e.grpc_code() != rmicro::Code::AlreadyExists)
        .map(ToString::to_string)
        .collect();
    assert_eq!((won, taken), (1, 99), "other failures: {others:?}");
    let page = running.users.list(100, "").await.expect("listed");
    assert_eq!(page.0.len(), 1, "one row");
    running.stop().await;
    db.remove().await;
}

#[tokio::test]
async fn sqlite_one_name_registered_100_times_at_once() {
    one_name_registered_100_times_at_once(Backend::Sqlite, "sqlite_100").await;
}

#[tokio::test]
async fn mariadb_one_name_registered_100_times_at_once() {
    one_name_registered_100_times_at_once(Backend::MySql, "mariadb_100").await;
}

#[tokio::test]
async fn postgres_one_name_registered_100_times_at_once() {
    one_name_registered_100_times_at_once(Backend::Postgres, "postgres_100").await;
}

/// The hand-written read by id (`UserRepository::find`, on the sqlx pool) gives
/// exactly what SeaORM's `find_by_id` gives on every backend: the same columns,
/// text beyond ASCII, times to the microsecond, and nothing for a missing id.
async fn the_read_by_id_matches_seaorm(backend: Backend, test: &str) {
    use rmicro::db::Database;
    use rmicro::db::sea_orm::EntityTrait;
    use user::domain::model::{NewUser, User};
    use user::domain::repository::{MIGRATIONS, UserRepository, entity};
    let Some(test_db) = TestDatabase::create(backend, test).await else {
        return;
    };
    let db = Database::connect(test_db.url(), std::time::Duration::from_secs(10))
        .await
        .expect("connected");
    db.migrate(MIGRATIONS).await.expect("migrated");
    let users = UserRepository::new(db.clone());
    let mut ids = Vec::new();
    for (name, first) in [("zoë", "Zoë Ünicode 名前"), ("plain", "Plain")] {
        let user = users
            .insert(NewUser {
                user_name: name.into(),
                first_name: first.into(),
                email: format!("{name}@example.com"),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            })
            .await
            .expect("inserted");
        ids.push((user.id, true));
    }
    let missing = ids.iter().map(|(id, _)| *id).max().unwrap_or_default() + 1000;
    ids.push((missing, false));
    for (id, present) in ids {
        let by_hand = users.find(id).await.expect("read by hand");
        let by_seaorm = entity::Entity::find_by_id(id)
            .one(db.conn())
            .await
            .expect("read by SeaORM")
            .map(User::from);
        assert!(
            by_hand == by_seaorm,
            "user {id}: {by_hand:?} != {by_seaorm:?}"
        );
        assert_eq!(by_hand.is_some(), present, "user {id}");
        if let Some(user) = by_hand {
            assert_ne!(user.created, std::time::UNIX_EPOCH, "{user:?}");
        }
    }
    db.close().await;
    test_db.remove().await;
}

#[tokio::test]
async fn sqlite_the_read_by_id_matches_seaorm() {
    the_read_by_id_matches_seaorm(Backend::Sqlite, "sqlite_by_id").await;
}

#[tokio::test]
async fn mariadb_the_read_by_id_matches_seaorm() {
    the_read_by_id_matches_seaorm(Backend::MySql, "mariadb_by_id").await;
}

#[tokio::test]
async fn postgres_the_read_by_id_matches_seaorm() {
    the_read_by_id_matches_seaorm(Backend::Postgres, "postgres_by_id").await;
}
