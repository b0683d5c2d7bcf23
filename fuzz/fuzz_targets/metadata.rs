//! Request headers (lines of `name:value`) read as call metadata, including
//! `-bin` base64 values.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rmicro_core::fuzzing::metadata(data);
});
