//! A delivery to the HTTP broker's endpoint from another process (a JSON envelope
//! of headers and a base64 body), then its body as typed subscribers decode it:
//! never a panic, and a delivery read is written back and read as the same.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(message) = rmicro_core::fuzzing::broker_delivery(data) {
        let again = rmicro_core::fuzzing::broker_delivery(&rmicro_core::fuzzing::broker_envelope(
            message.clone(),
        ));
        assert_eq!(again, Some(message));
    }
});
