//! The fuzz targets' committed inputs (`fuzz/corpus/<target>`: seeds, and every
//! input that once crashed a target, kept as a regression) run through the same
//! entry points and checks as the targets, in the ordinary test run — no fuzzer
//! needed. `scripts/fuzz` runs the targets themselves.

extern crate rmicro_core as rmicro;

use std::path::PathBuf;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut all: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("an entry").path())
        .map(|path| {
            let bytes = std::fs::read(&path).expect("readable");
            (path, bytes)
        })
        .collect();
    all.sort();
    assert!(!all.is_empty(), "no inputs in {}", dir.display());
    all
}

#[test]
fn grpc_frames() {
    for (path, data) in inputs("grpc_frames") {
        let taken = rmicro::fuzzing::grpc_frames(&data, 4096);
        assert!(taken <= data.len() / 5, "{}", path.display());
    }
}

#[test]
fn grpc_timeout() {
    use rmicro::transport::{format_grpc_timeout, parse_grpc_timeout};
    let mut parsed = 0;
    for (path, data) in inputs("grpc_timeout") {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        if let Some(timeout) = parse_grpc_timeout(text) {
            let again = parse_grpc_timeout(&format_grpc_timeout(timeout));
            assert!(again.is_some_and(|a| a >= timeout), "{}", path.display());
            parsed += 1;
        }
    }
    assert!(parsed > 0, "the seeds hold valid timeouts");
}

#[test]
fn metadata() {
    for (_, data) in inputs("metadata") {
        rmicro::fuzzing::metadata(&data);
    }
}

#[test]
fn registry_record() {
    for (path, data) in inputs("registry_record") {
        if let Ok(service) = serde_json::from_slice::<rmicro::registry::Service>(&data) {
            let json = serde_json::to_vec(&service).expect("serializes");
            let again: rmicro::registry::Service =
                serde_json::from_slice(&json).expect("what we write, we read");
            assert_eq!(service, again, "{}", path.display());
        }
    }
}

#[test]
fn config_formats() {
    use rmicro::config::source::Format;
    for (_, data) in inputs("config_formats") {
        let Some((&pick, rest)) = data.split_first() else {
            continue;
        };
        let Ok(text) = std::str::from_utf8(rest) else {
            continue;
        };
        let _ = [Format::Json, Format::Yaml, Format::Toml][usize::from(pick) % 3].parse(text);
        let _ = rmicro::config::source::parse_value(text);
    }
}

#[test]
fn broker_delivery() {
    let mut read = 0;
    for (path, data) in inputs("broker_delivery") {
        if let Some(message) = rmicro::fuzzing::broker_delivery(&data) {
            let again = rmicro::fuzzing::broker_delivery(&rmicro::fuzzing::broker_envelope(
                message.clone(),
            ));
            assert_eq!(again, Some(message), "{}", path.display());
            read += 1;
        }
    }
    assert!(read > 0, "the seeds hold valid deliveries");
}
