//! The README's first command: the demo runs on embedded defaults (local registry,
//! embedded broker) with nothing installed, and shows every call and an event.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_demo_makes_every_call_and_receives_its_event() {
    // A registry directory of its own, so other tests' services do not mix in.
    let registry = std::env::temp_dir().join(format!("rmicro-demo-test-{}", std::process::id()));
    let mut demo = Command::new(env!("CARGO_BIN_EXE_greeter-demo"))
        .env("MICRO_REGISTRY_ADDRESS", &registry)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the demo starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = demo.try_wait().expect("the demo can be waited on") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = demo.kill();
            panic!("the demo did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut demo.stdout.take().expect("stdout"), &mut stdout)
        .expect("the demo's output is text");
    let _ = std::fs::remove_dir_all(&registry);
    assert!(status.success(), "the demo failed: {status}\n{stdout}");
    for line in [
        "SayHello       -> Hello rmicro",
        "SayHelloStream -> Hello rmicro #3",
        "Collect        -> Hello a, b, c",
        "Chat           -> Hello c",
        "SayHello('')   -> error 400 Bad Request: name must not be empty",
        r#"call_json      -> {"message":"Hello rmicro (JSON)"}"#,
        "event          -> Hello rmicro, by event (from greeter, on greeter.greeted)",
        "server stopped gracefully: true",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
}
