//! `docs/tutorial.md` as written: every `sh` block, in order, in one shell, in a
//! fresh directory, with this build's `rmicro` on `PATH` — so the tutorial cannot
//! drift from what the tools do.

mod common;

use common::{fresh_dir, repo_root};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `sh` blocks of a Markdown text, in order.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn every_command_of_the_tutorial_runs() {
    let markdown =
        std::fs::read_to_string(repo_root().join("docs/tutorial.md")).expect("the tutorial");
    let blocks = sh_blocks(&markdown);
    assert!(
        blocks.len() >= 9,
        "a block per step at least: {}",
        blocks.len()
    );
    let rmicro = PathBuf::from(env!("CARGO_BIN_EXE_rmicro"));
    let bin_dir = rmicro.parent().expect("the binary's directory");
    let target = bin_dir.parent().expect("<target>/<profile>");
    let dir = fresh_dir("tutorial", "run");
    let script = format!(
        "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{}",
        blocks
            .iter()
            .enumerate()
            .map(|(i, b)| format!("echo '--- block {}'\n{b}", i + 1))
            .collect::<String>()
    );
    let api_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let path = std::env::join_paths(std::iter::once(bin_dir.to_owned()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .expect("a PATH");
    let out = Command::new("timeout")
        .args(["600", "bash", "-c", &script])
        .current_dir(&dir)
        .env("PATH", path)
        .env(
            "RMICRO_PATH",
            repo_root().canonicalize().expect("the checkout"),
        )
        .env("CARGO_TARGET_DIR", target)
        .env("API_PORT", api_port.to_string())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the tutorial failed:\n{stdout}\n{stderr}"
    );
    // What the last steps printed: the record made through rmicro call, the
    // records listed through the gateway.
    assert!(stdout.contains(r#""name": "first""#), "{stdout}");
    assert!(stdout.contains(r#""name":"second""#), "{stdout}");
    assert!(
        Path::new(&dir).join("member/member.db").is_file(),
        "kept in SQLite"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
