//! What the CLI's integration tests share: a child process killed with the
//! test, the checkout's root, and fresh temporary directories.

#![allow(dead_code)] // each test binary uses its own part

use std::path::PathBuf;
use std::process::Child;

/// Kills a child process when the test ends, however it ends.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
