//! The user service from stacks that are not ours: Python's `grpcio` with stubs
//! compiled from `proto/user.proto` by grpcio-tools.

mod common;

use rmicro::db::Backend;
use rmicro::db::testing::TestDatabase;
use std::process::Command;

#[tokio::test(flavor = "multi_thread")]
async fn python_grpcio_registers_logs_in_and_pages() {
    let Some(python) = rmicro::testing::python() else {
        return;
    };
    let Some(db) = TestDatabase::create(Backend::Sqlite, "python_grpcio").await else {
        return;
    };
    let running = common::start(db.url()).await;
    let address = running.server.local_addr().to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(rmicro::testing::repo_root().join("interop/user_client.py"))
            .arg(address)
            .output()
            .expect("python runs")
    })
    .await
    .expect("the client ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success() && stdout.contains("all user interop checks passed"),
        "the Python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    running.stop().await;
    db.remove().await;
}
