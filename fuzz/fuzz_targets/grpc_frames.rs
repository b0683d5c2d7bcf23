//! The gRPC length-prefixed message framing, as the server's JSON codec reads it.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let taken = rmicro_core::fuzzing::grpc_frames(data, 4096);
    // Each message costs at least its 5-byte prefix.
    assert!(taken <= data.len() / 5);
});
