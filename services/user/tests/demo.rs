//! The README's first command: `cargo run -p user --bin user-demo` tells the
//! seed's story on embedded defaults and exits cleanly.

use std::process::Command;

#[test]
fn the_demo_registers_logs_in_reads_lists_and_stops_cleanly() {
    let output = Command::new(env!("CARGO_BIN_EXE_user-demo"))
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with `{needle}`:\n{stdout}"))
    };
    // In order, each answered as it should be.
    let order = [
        at("users in sqlite://"),
        at("→ POST /v1/users {"),
        at("event  user.created: user_id 1, user_name ann"),
        at("→ POST /v1/users/login"),
        at("→ GET /v1/users/1"),
        at("→ GET /v1/users?page_size=10  [authorization"),
        at("← 401"),
        at("stopped (in-flight calls drained: true)"),
    ];
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "out of order:\n{stdout}"
    );
    for ok in [at("→ POST /v1/users {") + 1, at("→ GET /v1/users/1") + 1] {
        assert!(lines[ok].starts_with("← 200 {"), "{}", lines[ok]);
    }
    assert!(lines[at("→ POST /v1/users/login") + 1].starts_with("← 200 {\"token\":"));
    assert!(
        !stdout.contains("argon2"),
        "no password hash shown:\n{stdout}"
    );
}
