//! The database goes away under load and comes back: calls fail fast with
//! `UNAVAILABLE` naming the database (no password), gRPC health says
//! `NOT_SERVING`, and the service recovers by itself — counted, not assumed.

mod common;

use rmicro::db::testing::PrivateMariaDb;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic_health::pb::health_check_response::ServingStatus;
use user::proto;

#[tokio::test]
async fn a_database_killed_and_restarted_under_load() {
    let test = "a_database_killed_and_restarted_under_load";
    let Some(mut mariadb) = PrivateMariaDb::start(test).await else {
        return;
    };
    mariadb.create("users").await;
    let url = mariadb.url("users");
    let running = common::start(&url).await;
    let ann = running
        .register("ann", "correct horse battery")
        .await
        .expect("registered");
    let token = running
        .login("ann", "correct horse battery")
        .await
        .expect("logged in");
    assert_eq!(running.health().await, ServingStatus::Serving as i32);

    // Load: GetUserInfo in a loop, counting what comes back.
    let ok = Arc::new(AtomicU64::new(0));
    let unavailable = Arc::new(AtomicU64::new(0));
    let other = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (client, ok, unavailable, other, stop) = (
            running.client.clone(),
            ok.clone(),
            unavailable.clone(),
            other.clone(),
            stop.clone(),
        );
        let expected = format!("database {url} unreachable: ");
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let answer = client
                    .get_user_info(proto::GetUserInfoRequest {
                        user_id: ann.user_id,
                        ..Default::default()
                    })
                    .metadata("authorization", &token)
                    .timeout(Duration::from_secs(10))
                    .await;
                match answer {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(err)
                        if err.grpc_code() == rmicro::Code::Unavailable
                            && err.detail.starts_with(&expected) =>
                    {
                        unavailable.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(err) => other
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(err.to_string()),
                }
            }
        })
    };
    let count = |counter: &Arc<AtomicU64>| counter.load(Ordering::Relaxed);
    let ok_before = count(&ok);
    wait_for("calls served before the kill", 10, &running, None, || {
        count(&ok) > ok_before + 20
    })
    .await;

    let ok_at_kill = count(&ok);
    mariadb.kill();
    wait_for(
        "UNAVAILABLE answers after the kill",
        20,
        &running,
        None,
        || count(&unavailable) >= 5,
    )
    .await;
    wait_for(
        "NOT_SERVING after the kill",
        20,
        &running,
        Some(ServingStatus::NotServing),
        || true,
    )
    .await;

    mariadb.restart().await.expect("MariaDB starts again");
    let ok_at_restart = count(&ok);
    wait_for(
        "calls served again after the restart",
        30,
        &running,
        None,
        || count(&ok) > ok_at_restart + 20,
    )
    .await;
    wait_for(
        "SERVING after the restart",
        20,
        &running,
        Some(ServingStatus::Serving),
        || true,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("the load ran");
    let other = other.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(
        other.is_empty(),
        "every failure was UNAVAILABLE naming the database: {other:?}"
    );
    let served_after = count(&ok) - ok_at_restart;
    eprintln!(
        "served {ok_at_kill} before the kill, {} UNAVAILABLE while down, {served_after} after the restart",
        count(&unavailable)
    );
    running.stop().await;
}

/// Waits up to `seconds` until `cond` holds and, when given, gRPC health reports
/// `status`; fails naming `what`.
async fn wait_for(
    what: &str,
    seconds: u64,
    running: &common::Running,
    status: Option<ServingStatus>,
    cond: impl Fn() -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let healthy = match status {
            Some(status) => running.health().await == status as i32,
            None => true,
        };
        if healthy && cond() {
            return;
        }
        assert!(Instant::now() < deadline, "{what} within {seconds} s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
