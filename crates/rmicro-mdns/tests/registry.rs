//! The mDNS registry on this host's loopback interface (multicast stays on `lo`;
//! nothing leaves the machine). Service names carry the process id so parallel
//! test processes never see each other's services.

use rmicro::registry::{Registry, testing};
use rmicro_mdns::MdnsRegistry;
use rmicro_mdns::dns::{self, Message, RData};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

fn loopback() -> MdnsRegistry {
    MdnsRegistry::on_interfaces("127.0.0.1")
        .expect("loopback")
        .with_poll_interval(Duration::from_millis(200))
}

fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

#[tokio::test(flavor = "multi_thread")]
async fn mdns_registry_conforms() {
    let registry = loopback();
    testing::conformance(&registry, &unique("mdns-"), Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_responder_on_the_host_finds_the_first_and_loses_it_on_deregister() {
    let name = unique("pair");
    let serving = loopback();
    let asking = loopback();
    let record = testing::record(&name, "1.0.0", &format!("{name}-1"), "127.0.0.1:9000");
    serving
        .register(&record, Duration::from_secs(30))
        .await
        .expect("register");
    let found = asking.get_service(&name).await.expect("lookup");
    assert_eq!(found, vec![record.clone()]);
    let listed = asking.list_services().await.expect("list");
    assert!(listed.iter().any(|s| s.name == name), "{listed:?}");

    serving.deregister(&record).await.expect("deregister");
    assert!(asking.get_service(&name).await.expect("lookup").is_empty());
}

/// A query built byte by byte as hashicorp/mdns (go-micro's mDNS library) sends it:
/// id 0, one PTR question for `<service>.micro.`, from an ephemeral port.
#[tokio::test(flavor = "multi_thread")]
async fn answers_a_go_micro_style_query_by_unicast_with_ptr_srv_txt_and_a() {
    let name = unique("raw");
    let serving = loopback();
    let record = testing::record(&name, "2.0.0", &format!("{name}-1"), "127.0.0.1:9100");
    serving
        .register(&record, Duration::from_secs(30))
        .await
        .expect("register");

    let mut query = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in [name.as_str(), "micro"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 12, 0, 1]);
    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
    socket2::SockRef::from(&socket)
        .set_multicast_if_v4(&Ipv4Addr::LOCALHOST)
        .expect("multicast interface");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    // Malformed packets first: the responder must shrug them off.
    for garbage in [
        &b"\x00\x01"[..],
        &[0xff; 40],
        &[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12],
    ] {
        socket
            .send_to(
                garbage,
                SocketAddrV4::new(rmicro_mdns::GROUP, rmicro_mdns::PORT),
            )
            .expect("send garbage");
    }
    socket
        .send_to(
            &query,
            SocketAddrV4::new(rmicro_mdns::GROUP, rmicro_mdns::PORT),
        )
        .expect("send query");
    let mut buf = [0u8; 9000];
    let (len, from) = socket.recv_from(&mut buf).expect("a unicast answer");
    assert_eq!(from.port(), rmicro_mdns::PORT);
    let answer = Message::decode(&buf[..len]).expect("a well-formed answer");
    assert!(answer.is_response());
    let instance = format!("{name}-1.{name}.micro.");
    let ptr = answer
        .records()
        .find(|r| r.rtype == dns::TYPE_PTR)
        .expect("PTR");
    assert_eq!(ptr.data, RData::Ptr(instance.clone()));
    assert!(
        answer
            .records()
            .any(|r| r.name == instance && matches!(r.data, RData::Srv { port: 9100, .. }))
    );
    assert!(
        answer
            .records()
            .any(|r| r.name == instance && r.data == RData::A(Ipv4Addr::LOCALHOST))
    );
    let txt = answer
        .records()
        .find_map(|r| match &r.data {
            RData::Txt(strings) => Some(strings.concat()),
            _ => None,
        })
        .expect("TXT");
    let json = rmicro::registry::compact::decode(&String::from_utf8_lossy(&txt)).expect("hex zlib");
    let json: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
    assert_eq!(json["Service"], name.as_str());
    assert_eq!(json["Version"], "2.0.0");
}

#[tokio::test]
async fn bad_interface_addresses_are_refused_with_a_sentence() {
    let err = MdnsRegistry::on_interfaces("eth0")
        .err()
        .expect("not an IP");
    assert!(
        err.to_string().contains("not an interface's IPv4 address"),
        "{err}"
    );
    let registry = rmicro::registry::from_flags("mdns", Some("127.0.0.1")).expect("mdns");
    assert_eq!(registry.describe(), "mdns://micro@127.0.0.1");
}
