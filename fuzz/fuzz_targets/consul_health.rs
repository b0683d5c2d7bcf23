//! A Consul `GET /v1/health/service/<name>` body (anything a process with the
//! agent's token registered: tags in go-micro's compact encoding, metadata): read
//! as the registry reads it; each service read, registered again with the tags
//! rmicro writes, reads back the same. An input starting with `#` is structured
//! (tag payloads, encoded by the harness: see `rmicro_consul::fuzzing::body_of`),
//! so mutations also reach the JSON inside the tags.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let body = rmicro_consul::fuzzing::body_of(data);
    for service in rmicro_consul::fuzzing::health_entries(&body) {
        let Some(again) = rmicro_consul::fuzzing::round_trip(&service) else {
            continue;
        };
        assert_eq!(again.version, service.version);
        assert_eq!(again.metadata, service.metadata);
        assert_eq!(again.endpoints.len(), service.endpoints.len());
        assert_eq!(again.nodes[0].metadata, service.nodes[0].metadata);
    }
});
