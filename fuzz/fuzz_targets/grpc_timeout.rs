//! The `grpc-timeout` header: parsed, and what parses formats back to a value
//! that parses to at least as long (formatting may round up, never down).
#![no_main]
use rmicro_core::transport::{format_grpc_timeout, parse_grpc_timeout};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(timeout) = parse_grpc_timeout(text) {
        let again = format_grpc_timeout(timeout);
        let parsed = parse_grpc_timeout(&again).expect("what we format, we parse");
        assert!(
            parsed >= timeout,
            "{text} -> {timeout:?} -> {again} -> {parsed:?}"
        );
    }
});
