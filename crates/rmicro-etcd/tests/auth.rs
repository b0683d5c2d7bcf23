//! etcd's user/password auth: a private etcd whose auth `etcdctl` turns on (a
//! `root` user and an `app` user with a role on the registry's keys), with tokens
//! that live one second (`--auth-token-ttl 1`). The registry authenticates, keeps
//! working after its token expired (it gets a new one), and a wrong password or
//! none is refused with etcd's reason and never shows the password.

use rmicro::registry::{Registry, testing};
use rmicro::testing::in_ci;
use rmicro_etcd::testing::EtcdServer;
use rmicro_etcd::{EtcdClient, EtcdRegistry};
use std::time::Duration;

/// Runs `etcdctl` against `endpoint`; `None` when it is not installed.
fn etcdctl(endpoint: &str, args: &[&str]) -> Option<()> {
    let binary = rmicro::testing::find_binary("etcdctl", "RMICRO_ETCDCTL")?;
    let output = std::process::Command::new(binary)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_registry_authenticates_and_renews_its_token() {
    let server = match EtcdServer::start_with_flags(&["--auth-token-ttl", "1"]).await {
        Ok(Some(server)) => server,
        Ok(None) => {
            assert!(!in_ci(), "etcd is not installed and CI=true");
            eprintln!("SKIPPED etcd auth: etcd is not installed");
            return;
        }
        Err(err) => panic!("etcd did not start: {err}"),
    };
    let endpoint = server.address();
    let setup: [&[&str]; 7] = [
        &["user", "add", "root", "--new-user-password=root-pw-0"],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "registry"],
        &[
            "role",
            "grant-permission",
            "registry",
            "--prefix=true",
            "readwrite",
            "/micro/",
        ],
        &["user", "add", "app", "--new-user-password=app-pw-7731"],
        &["user", "grant-role", "app", "registry"],
        &["auth", "enable"],
    ];
    for args in setup {
        if etcdctl(&endpoint, args).is_none() {
            assert!(
                !in_ci(),
                "etcdctl is not installed and CI=true (apt-get install etcd-client)"
            );
            eprintln!("SKIPPED etcd auth: etcdctl is not installed");
            return;
        }
    }

    let registry = EtcdRegistry::new(&format!("app:app-pw-7731@{endpoint}")).unwrap();
    assert!(
        !registry.describe().contains("app-pw-7731"),
        "{}",
        registry.describe()
    );
    let record = testing::record("auth-greeter", "1.0.0", "auth-1", "127.0.0.1:9");
    registry
        .register(&record, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        registry.get_service("auth-greeter").await.unwrap()[0].nodes[0].id,
        "auth-1"
    );
    // The token lives a second: after three, calls still succeed on a new one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        registry.get_service("auth-greeter").await.unwrap()[0].nodes[0].id,
        "auth-1"
    );
    registry.deregister(&record).await.unwrap();

    // The role covers /micro/ only.
    let app = EtcdClient::new(&format!("app:app-pw-7731@{endpoint}")).unwrap();
    let err = app
        .put("/elsewhere", b"x".to_vec(), 0)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("permission denied"), "{err}");

    let wrong = EtcdClient::new(&format!("app:wrong-pw-2@{endpoint}")).unwrap();
    let err = wrong.get("/micro/x").await.unwrap_err().to_string();
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("wrong-pw-2"), "the password shown: {err}");

    let anonymous = EtcdClient::new(&endpoint).unwrap();
    let err = anonymous.get("/micro/x").await.unwrap_err().to_string();
    assert!(err.contains("user name is empty"), "{err}");

    let err = EtcdClient::new(&format!("app@{endpoint}"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("user:password@host") && !err.contains("app@"),
        "{err}"
    );
}
