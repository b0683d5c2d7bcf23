//! The `consul_health` fuzz target's committed inputs (`fuzz/corpus/consul_health`:
//! seeds, and any input that once crashed it) through the same checks, in the
//! ordinary test run; and a record with go-micro's compact tags read back whole.

use rmicro::registry::{Endpoint, Node, Service};
use std::collections::BTreeMap;

#[test]
fn consul_health() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus/consul_health");
    let mut read = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = rmicro_consul::fuzzing::body_of(&std::fs::read(&path).unwrap());
        for service in rmicro_consul::fuzzing::health_entries(&data) {
            let again = rmicro_consul::fuzzing::round_trip(&service).expect("reads back");
            assert_eq!(again.version, service.version, "{}", path.display());
            assert_eq!(again.metadata, service.metadata, "{}", path.display());
            assert_eq!(
                again.nodes[0].metadata,
                service.nodes[0].metadata,
                "{}",
                path.display()
            );
            read += 1;
        }
    }
    assert!(read > 0, "the seeds hold services");
    // The structured seed is tag payloads the harness encodes.
    let structured = std::fs::read(dir.join("structured_tags")).unwrap();
    let services =
        rmicro_consul::fuzzing::health_entries(&rmicro_consul::fuzzing::body_of(&structured));
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].version, "1.0.0");
    assert_eq!(
        services[0].metadata.get("team").map(String::as_str),
        Some("core")
    );
    assert_eq!(services[0].endpoints[0].name, "Greeter.SayHello");
    assert_eq!(
        services[0].nodes[0]
            .metadata
            .get("region")
            .map(String::as_str),
        Some("eu")
    );
}

#[test]
fn compact_tags_read_back_whole() {
    let service = Service {
        name: "greeter".into(),
        version: "1.2.3".into(),
        metadata: BTreeMap::from([("team".into(), "core".into())]),
        endpoints: vec![Endpoint {
            name: "Greeter.SayHello".into(),
            metadata: BTreeMap::from([("stream".into(), "false".into())]),
            ..Default::default()
        }],
        nodes: vec![Node {
            id: "greeter-1".into(),
            address: "127.0.0.1:9".into(),
            metadata: BTreeMap::from([("region".into(), "eu".into())]),
        }],
    };
    let again = rmicro_consul::fuzzing::round_trip(&service).expect("reads back");
    assert_eq!(again, service);
}
