//! What the CLI's integration tests share: a child process killed with the
//! test, the checkout's root, and fresh temporary directories.

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// Kills a child process when the test ends, however it ends.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cargo ARGS` in `project`, building in `target`; fails the test with
/// cargo's output when it fails.
pub fn cargo_in(project: &Path, target: &Path, args: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(&cargo)
        .current_dir(project)
        .env("CARGO_TARGET_DIR", target)
        .args(args)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo {}:\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A binary of this workspace, built if this test run did not build it.
pub fn binary(name: &str) -> PathBuf {
    let rmicro = PathBuf::from(env!("CARGO_BIN_EXE_rmicro"));
    let path = rmicro.with_file_name(name);
    if !path.is_file() {
        let target = rmicro
            .parent()
            .and_then(Path::parent)
            .expect("<target>/<profile>/rmicro");
        cargo_in(&repo_root(), target, &["build", "--quiet", "--bin", name]);
    }
    path
}

/// The rmicro checkout these tests run in.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh directory `rmicro-<what>-<test>-<pid>-<nanos>` under the system's
/// temporary directory.
pub fn fresh_dir(what: &str, test: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "rmicro-{what}-{test}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
