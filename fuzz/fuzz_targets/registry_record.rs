//! A registry record in go-micro's JSON (what etcd, the local registry and the
//! gateway read from others): parsed, written and parsed again to the same.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(service) = serde_json::from_slice::<rmicro_core::registry::Service>(data) {
        let json = serde_json::to_vec(&service).expect("a record serializes");
        let again: rmicro_core::registry::Service =
            serde_json::from_slice(&json).expect("what we write, we read");
        assert_eq!(service, again);
    }
});
