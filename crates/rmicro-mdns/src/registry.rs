//! The mDNS registry: a responder answering for this process's nodes and a querier
//! that gathers other processes' answers.

use crate::dns::{
    CLASS_IN, CLASS_TOP_BIT, FLAG_AUTHORITATIVE, FLAG_RESPONSE, Message, Question, RData, Record,
    TYPE_A, TYPE_AAAA, TYPE_ANY, TYPE_PTR, TYPE_SRV, TYPE_TXT,
};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use rmicro::registry::{
    Endpoint, Node, Registry, RegistryError, Service, Watcher, compact, merge_by_version,
    watch_snapshots,
};
use rmicro::sync::lock;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::broadcast;

/// The mDNS multicast group.
pub const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
/// The mDNS port.
pub const PORT: u16 = 5353;
/// go-micro's mDNS domain.
pub const DEFAULT_DOMAIN: &str = "micro";
/// How long a lookup gathers answers (go-micro's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
/// The TTL of the records we send, in seconds (hashicorp/mdns's default).
const RECORD_TTL: u32 = 120;
/// The largest mDNS packet (RFC 6762 §17).
const MAX_PACKET: usize = 9000;

/// The TXT payload, as go-micro's `mdnsTxt` (Go field names as JSON keys).
#[derive(Debug, Serialize, Deserialize)]
struct Txt {
    #[serde(rename = "Service")]
    service: String,
    #[serde(rename = "Version", default)]
    version: String,
    #[serde(rename = "Endpoints", default)]
    endpoints: Option<Vec<Endpoint>>,
    #[serde(rename = "Metadata", default)]
    metadata: Option<BTreeMap<String, String>>,
    /// rmicro's addition (go-micro ignores it): the service-level metadata.
    #[serde(
        rename = "ServiceMetadata",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    service_metadata: Option<BTreeMap<String, String>>,
}

/// One node this process answers for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Instance {
    service: String,
    name: String,
    ip: IpAddr,
    port: u16,
    txt: Vec<Vec<u8>>,
    expires: Instant,
}

struct Shared {
    domain: String,
    interfaces: Vec<Ipv4Addr>,
    timeout: Duration,
    poll: Duration,
    zone: Mutex<BTreeMap<String, Instance>>,
    socket: tokio::sync::OnceCell<Arc<UdpSocket>>,
    responses: broadcast::Sender<Message>,
    responder: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.responder).take() {
            task.abort();
        }
    }
}

/// A [`Registry`] on multicast DNS, compatible with go-micro's mDNS registry.
///
/// Registering a node makes this process answer for it until it is deregistered
/// or its TTL passes without a refresh; a killed process simply stops answering.
/// `watch` re-reads every second and reports differences.
#[derive(Clone)]
pub struct MdnsRegistry {
    shared: Arc<Shared>,
}

impl Default for MdnsRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl MdnsRegistry {
    /// A registry on every non-loopback IPv4 interface (loopback if there is none).
    pub fn new() -> Self {
        let mut interfaces: Vec<Ipv4Addr> = if_addrs::get_if_addrs()
            .unwrap_or_default()
            .into_iter()
            .filter(|i| !i.is_loopback())
            .filter_map(|i| match i.ip() {
                IpAddr::V4(ip) => Some(ip),
                IpAddr::V6(_) => None,
            })
            .collect();
        if interfaces.is_empty() {
            interfaces.push(Ipv4Addr::LOCALHOST);
        }
        Self::with_interfaces(interfaces)
    }

    /// A registry on the interfaces with these IPv4 addresses (comma-separated),
    /// e.g. `127.0.0.1` to keep discovery on this host.
    pub fn on_interfaces(list: &str) -> Result<Self, RegistryError> {
        let interfaces = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<Ipv4Addr>()
                    .map_err(|e| RegistryError::BadAddress {
                        registry: "mdns".into(),
                        address: list.to_owned(),
                        detail: format!("`{s}` is not an interface's IPv4 address ({e})"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if interfaces.is_empty() {
            return Ok(Self::new());
        }
        Ok(Self::with_interfaces(interfaces))
    }

    fn with_interfaces(interfaces: Vec<Ipv4Addr>) -> Self {
        MdnsRegistry {
            shared: Arc::new(Shared::new(
                DEFAULT_DOMAIN.to_owned(),
                interfaces,
                DEFAULT_TIMEOUT,
                Duration::from_secs(1),
            )),
        }
    }

    /// Changes a setting; a registry already shared (cloned) becomes a new one
    /// with the same settings and nothing registered.
    fn configure(mut self, change: impl FnOnce(&mut Shared)) -> Self {
        if Arc::get_mut(&mut self.shared).is_none() {
            let s = &self.shared;
            self.shared = Arc::new(Shared::new(
                s.domain.clone(),
                s.interfaces.clone(),
                s.timeout,
                s.poll,
            ));
        }
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            change(shared);
        }
        self
    }

    /// Uses `domain` instead of go-micro's `micro` (peers must agree).
    pub fn with_domain(self, domain: &str) -> Self {
        let domain = domain.trim_matches('.').to_owned();
        self.configure(|s| s.domain = domain)
    }

    /// How long a lookup gathers answers (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.configure(|s| s.timeout = timeout)
    }

    /// How often a watch re-reads (default 1 s).
    pub fn with_poll_interval(self, poll: Duration) -> Self {
        self.configure(|s| s.poll = poll)
    }

    /// The interfaces used.
    pub fn interfaces(&self) -> &[Ipv4Addr] {
        &self.shared.interfaces
    }

    fn error(&self, operation: &'static str, detail: impl std::fmt::Display) -> RegistryError {
        RegistryError::Backend {
            registry: self.describe(),
            operation,
            detail: detail.to_string(),
        }
    }

    fn service_name(&self, service: &str) -> String {
        format!("{service}.{}.", self.shared.domain)
    }

    fn enum_name(&self) -> String {
        format!("_services.{}.", self.shared.domain)
    }

    /// The responder's socket, bound and answering from the first use on.
    async fn socket(&self) -> Result<Arc<UdpSocket>, RegistryError> {
        let shared = &self.shared;
        let socket = shared
            .socket
            .get_or_try_init(|| async {
                let socket = Arc::new(bind_responder(&shared.interfaces)?);
                let task = tokio::spawn(respond(Arc::downgrade(shared), socket.clone()));
                *lock(&shared.responder) = Some(task);
                Ok::<_, std::io::Error>(socket)
            })
            .await
            .map_err(|e| self.error("listen on 224.0.0.251:5353", e))?;
        Ok(socket.clone())
    }

    /// Sends `message` to the group on every interface.
    async fn multicast(&self, message: &Message) -> Result<(), RegistryError> {
        let socket = self.socket().await?;
        let bytes = message
            .encode()
            .map_err(|e| self.error("encode an announcement", e))?;
        send_to_group(&socket, &self.shared.interfaces, &bytes)
            .await
            .map_err(|e| self.error("multicast", e))
    }

    /// Asks `name` (PTR) on every interface and gathers answers for the timeout.
    async fn query(&self, name: &str) -> Result<Vec<Message>, RegistryError> {
        // The responder must run so multicast answers (from RFC responders) reach us.
        self.socket().await?;
        let mut multicast_answers = self.shared.responses.subscribe();
        let socket = bind_querier().map_err(|e| self.error("open a query socket", e))?;
        let query = Message {
            id: query_id(),
            flags: 0,
            questions: vec![Question {
                name: name.to_owned(),
                qtype: TYPE_PTR,
                qclass: CLASS_IN,
            }],
            ..Default::default()
        };
        let bytes = query
            .encode()
            .map_err(|e| self.error("encode a query", e))?;
        send_to_group(&socket, &self.shared.interfaces, &bytes)
            .await
            .map_err(|e| self.error("send a query", e))?;
        let deadline = tokio::time::Instant::now() + self.shared.timeout;
        let mut answers = Vec::new();
        let mut buf = vec![0u8; MAX_PACKET];
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                received = socket.recv_from(&mut buf) => {
                    if let Ok((len, _)) = received
                        && let Ok(message) = Message::decode(&buf[..len])
                        && message.is_response()
                    {
                        answers.push(message);
                    }
                }
                heard = multicast_answers.recv() => {
                    if let Ok(message) = heard {
                        answers.push(message);
                    }
                }
            }
        }
        Ok(answers)
    }

    /// The nodes of `service` answering now, one record per node.
    async fn nodes(&self, service: &str) -> Result<Vec<Service>, RegistryError> {
        let name = self.service_name(service);
        let answers = self.query(&name).await?;
        let suffix = format!(".{name}");
        Ok(instances(&answers, &name)
            .into_iter()
            .filter_map(|(instance, address, txt)| {
                let txt = decode_txt(&txt)?;
                if txt.service != service {
                    return None;
                }
                let id = instance
                    .strip_suffix(&suffix)
                    .unwrap_or(&instance)
                    .to_owned();
                Some(Service {
                    name: txt.service,
                    version: txt.version,
                    metadata: txt.service_metadata.unwrap_or_default(),
                    endpoints: txt.endpoints.unwrap_or_default(),
                    nodes: vec![Node {
                        id,
                        address: address.to_string(),
                        metadata: txt.metadata.unwrap_or_default(),
                    }],
                })
            })
            .collect())
    }

    async fn service_names(&self) -> Result<BTreeSet<String>, RegistryError> {
        let enum_name = self.enum_name();
        let answers = self.query(&enum_name).await?;
        let suffix = format!("._services.{}.", self.shared.domain);
        Ok(answers
            .iter()
            .flat_map(Message::records)
            .filter(|r| r.ttl > 0 && r.name.eq_ignore_ascii_case(&enum_name))
            .filter_map(|r| match &r.data {
                RData::Ptr(target) => target.strip_suffix(&suffix).map(str::to_owned),
                _ => None,
            })
            .collect())
    }

    async fn all_nodes(&self) -> Result<Vec<Service>, RegistryError> {
        let mut all = Vec::new();
        for name in self.service_names().await? {
            all.extend(self.nodes(&name).await?);
        }
        Ok(all)
    }
}

/// Complete instances answering under `service_name`: (instance name, address, TXT).
fn instances(answers: &[Message], service_name: &str) -> Vec<(String, SocketAddr, Vec<Vec<u8>>)> {
    let mut targets: BTreeSet<String> = BTreeSet::new();
    let mut srv: BTreeMap<String, (u16, String)> = BTreeMap::new();
    let mut txt: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    let mut ips: BTreeMap<String, IpAddr> = BTreeMap::new();
    let mut gone: BTreeSet<String> = BTreeSet::new();
    for record in answers.iter().flat_map(Message::records) {
        let name = record.name.to_ascii_lowercase();
        match &record.data {
            RData::Ptr(target) if name.eq_ignore_ascii_case(service_name) => {
                if record.ttl == 0 {
                    gone.insert(target.to_ascii_lowercase());
                } else {
                    targets.insert(target.to_ascii_lowercase());
                }
            }
            RData::Srv { port, target, .. } => {
                srv.insert(name, (*port, target.to_ascii_lowercase()));
            }
            RData::Txt(strings) => {
                txt.insert(name, strings.clone());
            }
            RData::A(ip) => {
                ips.insert(name, IpAddr::V4(*ip));
            }
            RData::Aaaa(ip) => {
                ips.entry(name).or_insert(IpAddr::V6(*ip));
            }
            _ => {}
        }
    }
    targets
        .difference(&gone)
        .filter_map(|instance| {
            let (port, host) = srv.get(instance)?;
            let ip = ips.get(host).or_else(|| ips.get(instance))?;
            Some((
                instance.clone(),
                SocketAddr::new(*ip, *port),
                txt.get(instance)?.clone(),
            ))
        })
        .collect()
}

fn decode_txt(strings: &[Vec<u8>]) -> Option<Txt> {
    let joined: String = strings.iter().map(|s| String::from_utf8_lossy(s)).collect();
    let json = compact::decode(&joined)?;
    serde_json::from_slice(&json).ok()
}

fn encode_txt(service: &Service, node: &Node) -> Vec<Vec<u8>> {
    let txt = Txt {
        service: service.name.clone(),
        version: service.version.clone(),
        endpoints: Some(service.endpoints.clone()),
        metadata: Some(node.metadata.clone()),
        service_metadata: (!service.metadata.is_empty()).then(|| service.metadata.clone()),
    };
    let encoded = compact::encode(&serde_json::to_vec(&txt).unwrap_or_default());
    encoded.as_bytes().chunks(255).map(<[u8]>::to_vec).collect()
}

fn query_id() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ std::process::id()) as u16
}

/// Binds 0.0.0.0:5353 shared with other responders on the host, joined to the
/// group on each interface.
fn bind_responder(interfaces: &[Ipv4Addr]) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT)).into())?;
    let mut joined = 0;
    for interface in interfaces {
        match socket.join_multicast_v4(&GROUP, interface) {
            Ok(()) => joined += 1,
            Err(err) => tracing::warn!(%interface, error = %err, "cannot join the mDNS group"),
        }
    }
    if joined == 0 {
        return Err(std::io::Error::other(format!(
            "could not join 224.0.0.251 on any of {interfaces:?}"
        )));
    }
    socket.set_multicast_loop_v4(true)?;
    socket.set_multicast_ttl_v4(255)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// An ephemeral socket for queries; answers to it come back by unicast.
fn bind_querier() -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).into())?;
    socket.set_multicast_loop_v4(true)?;
    socket.set_multicast_ttl_v4(255)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

async fn send_to_group(
    socket: &UdpSocket,
    interfaces: &[Ipv4Addr],
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut last_error = None;
    let mut sent = 0;
    for interface in interfaces {
        let result = socket2::SockRef::from(socket)
            .set_multicast_if_v4(interface)
            .map(drop);
        let result = match result {
            Ok(()) => socket
                .send_to(bytes, SocketAddrV4::new(GROUP, PORT))
                .await
                .map(drop),
            Err(err) => Err(err),
        };
        match result {
            Ok(()) => sent += 1,
            Err(err) => last_error = Some(err),
        }
    }
    match (sent, last_error) {
        (0, Some(err)) => Err(err),
        _ => Ok(()),
    }
}

impl Shared {
    fn new(domain: String, interfaces: Vec<Ipv4Addr>, timeout: Duration, poll: Duration) -> Self {
        Shared {
            domain,
            interfaces,
            timeout,
            poll,
            zone: Mutex::new(BTreeMap::new()),
            socket: tokio::sync::OnceCell::new(),
            responses: broadcast::channel(256).0,
            responder: Mutex::new(None),
        }
    }

    /// The records answering `question`, from live zone entries.
    fn answer(&self, question: &Question) -> Vec<Record> {
        let now = Instant::now();
        let mut zone = lock(&self.zone);
        zone.retain(|_, instance| instance.expires > now);
        let q = question.name.to_ascii_lowercase();
        let wants = |t: u16| question.qtype == t || question.qtype == TYPE_ANY;
        let enum_name = format!("_services.{}.", self.domain);
        let mut records = Vec::new();
        if q == enum_name && wants(TYPE_PTR) {
            let services: BTreeSet<&str> = zone.values().map(|i| i.service.as_str()).collect();
            for service in services {
                let wildcard = format!("{service}._services.{}.", self.domain);
                records.push(Record::new(
                    &enum_name,
                    RECORD_TTL,
                    RData::Ptr(wildcard.clone()),
                ));
                records.extend(wildcard_records(&wildcard, question.qtype));
            }
        }
        if let Some(service) = q.strip_suffix(&format!("._services.{}.", self.domain))
            && zone
                .values()
                .any(|i| i.service.eq_ignore_ascii_case(service))
        {
            records.extend(wildcard_records(&question.name, question.qtype));
        }
        for instance in zone.values() {
            let service_name = format!("{}.{}.", instance.service, self.domain);
            if q == service_name.to_ascii_lowercase() && wants(TYPE_PTR) {
                records.push(Record::new(
                    &service_name,
                    RECORD_TTL,
                    RData::Ptr(instance.name.clone()),
                ));
                records.extend(instance_records(instance, TYPE_ANY, RECORD_TTL));
            } else if q == instance.name.to_ascii_lowercase() {
                records.extend(instance_records(instance, question.qtype, RECORD_TTL));
            }
        }
        records
    }
}

/// SRV, TXT and A/AAAA of one node (those `qtype` asks for). The SRV target is the
/// instance name itself, so several nodes on one host never share a host record.
fn instance_records(instance: &Instance, qtype: u16, ttl: u32) -> Vec<Record> {
    let wants = |t: u16| qtype == t || qtype == TYPE_ANY;
    let mut records = Vec::new();
    if wants(TYPE_SRV) {
        records.push(Record::new(
            &instance.name,
            ttl,
            RData::Srv {
                priority: 10,
                weight: 1,
                port: instance.port,
                target: instance.name.clone(),
            },
        ));
    }
    if wants(TYPE_TXT) {
        records.push(Record::new(
            &instance.name,
            ttl,
            RData::Txt(instance.txt.clone()),
        ));
    }
    match instance.ip {
        IpAddr::V4(ip) if wants(TYPE_A) => {
            records.push(Record::new(&instance.name, ttl, RData::A(ip)));
        }
        IpAddr::V6(ip) if wants(TYPE_AAAA) => {
            records.push(Record::new(&instance.name, ttl, RData::Aaaa(ip)));
        }
        _ => {}
    }
    records
}

/// The list entry go-micro registers per service (port 9999, 0.0.0.0): its clients
/// only report entries with an address, a port and a TXT record.
fn wildcard_records(name: &str, qtype: u16) -> Vec<Record> {
    let wildcard = Instance {
        service: String::new(),
        name: name.to_owned(),
        ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        port: 9999,
        txt: vec![Vec::new()],
        expires: Instant::now(),
    };
    instance_records(&wildcard, qtype, RECORD_TTL)
}

/// Answers queries for this process's nodes and passes heard responses to lookups.
async fn respond(shared: std::sync::Weak<Shared>, socket: Arc<UdpSocket>) {
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(err) => {
                tracing::debug!(error = %err, "mDNS receive failed");
                continue;
            }
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let message = match Message::decode(&buf[..len]) {
            Ok(message) => message,
            Err(err) => {
                tracing::debug!(%from, error = %err, "ignoring a malformed mDNS packet");
                continue;
            }
        };
        if message.is_response() {
            let _ = shared.responses.send(message);
            continue;
        }
        let answers: Vec<Record> = message
            .questions
            .iter()
            .flat_map(|q| shared.answer(q))
            .collect();
        if answers.is_empty() {
            continue;
        }
        // RFC 6762 §6.7: a query from a port other than 5353 (hashicorp/mdns and
        // go-micro query from an ephemeral port), or one asking for a unicast
        // answer, is answered by unicast, echoing its id and questions.
        let unicast = from.port() != PORT
            || message
                .questions
                .iter()
                .any(|q| q.qclass & CLASS_TOP_BIT != 0);
        let reply = Message {
            id: if unicast { message.id } else { 0 },
            flags: FLAG_RESPONSE | FLAG_AUTHORITATIVE,
            questions: if unicast {
                message.questions.clone()
            } else {
                Vec::new()
            },
            answers,
            additionals: Vec::new(),
        };
        let bytes = match reply.encode() {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::warn!(error = %err, "cannot encode an mDNS answer");
                continue;
            }
        };
        let sent = if unicast {
            socket.send_to(&bytes, from).await.map(drop)
        } else {
            send_to_group(&socket, &shared.interfaces, &bytes).await
        };
        if let Err(err) = sent {
            tracing::debug!(%from, error = %err, "cannot send an mDNS answer");
        }
    }
}

impl Registry for MdnsRegistry {
    fn describe(&self) -> String {
        let interfaces: Vec<String> = self
            .shared
            .interfaces
            .iter()
            .map(ToString::to_string)
            .collect();
        format!("mdns://{}@{}", self.shared.domain, interfaces.join(","))
    }

    fn register(
        &self,
        service: &Service,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        let service = service.clone();
        async move {
            self.socket().await?;
            let mut announce = Vec::new();
            for node in &service.nodes {
                let address: SocketAddr = node.address.parse().map_err(|_| {
                    self.error(
                        "register",
                        format!(
                            "node address `{}` is not ip:port; mDNS announces IP addresses",
                            node.address
                        ),
                    )
                })?;
                let instance = Instance {
                    service: service.name.clone(),
                    name: format!("{}.{}", node.id, self.service_name(&service.name)),
                    ip: address.ip(),
                    port: address.port(),
                    txt: encode_txt(&service, node),
                    expires: Instant::now() + ttl,
                };
                let mut zone = lock(&self.shared.zone);
                let changed = zone.get(&instance.name).is_none_or(|old| {
                    (&old.ip, old.port, &old.txt) != (&instance.ip, instance.port, &instance.txt)
                });
                if changed {
                    announce.push(Record::new(
                        &self.service_name(&service.name),
                        RECORD_TTL,
                        RData::Ptr(instance.name.clone()),
                    ));
                    announce.extend(instance_records(&instance, TYPE_ANY, RECORD_TTL));
                }
                zone.insert(instance.name.clone(), instance);
            }
            if !announce.is_empty() {
                // Unsolicited announcement (RFC 6762 §8.3) for passive listeners.
                self.multicast(&Message {
                    flags: FLAG_RESPONSE | FLAG_AUTHORITATIVE,
                    answers: announce,
                    ..Default::default()
                })
                .await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn deregister(&self, service: &Service) -> BoxFuture<'_, Result<(), RegistryError>> {
        let service = service.clone();
        async move {
            let mut goodbye = Vec::new();
            {
                let mut zone = lock(&self.shared.zone);
                for node in &service.nodes {
                    let name = format!("{}.{}", node.id, self.service_name(&service.name));
                    if let Some(instance) = zone.remove(&name) {
                        goodbye.push(Record::new(
                            &self.service_name(&service.name),
                            0,
                            RData::Ptr(instance.name.clone()),
                        ));
                        goodbye.extend(instance_records(&instance, TYPE_ANY, 0));
                    }
                }
            }
            if !goodbye.is_empty() && self.shared.socket.get().is_some() {
                // Goodbye packet (RFC 6762 §10.1): TTL 0 tells listeners it is gone.
                self.multicast(&Message {
                    flags: FLAG_RESPONSE | FLAG_AUTHORITATIVE,
                    answers: goodbye,
                    ..Default::default()
                })
                .await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn get_service(&self, name: &str) -> BoxFuture<'_, Result<Vec<Service>, RegistryError>> {
        let name = name.to_owned();
        async move { Ok(merge_by_version(self.nodes(&name).await?)) }.boxed()
    }

    fn list_services(&self) -> BoxFuture<'_, Result<Vec<Service>, RegistryError>> {
        async move {
            Ok(self
                .service_names()
                .await?
                .into_iter()
                .map(|name| Service {
                    name,
                    ..Default::default()
                })
                .collect())
        }
        .boxed()
    }

    fn watch(&self, service: Option<&str>) -> BoxFuture<'_, Result<Watcher, RegistryError>> {
        let service = service.map(str::to_owned);
        let me = self.clone();
        async move {
            let read = |me: MdnsRegistry, service: Option<String>| async move {
                match service {
                    Some(name) => me.nodes(&name).await,
                    None => me.all_nodes().await,
                }
            };
            let initial = read(me.clone(), service.clone()).await?;
            let polls = futures_util::stream::unfold((), move |()| {
                let (me, service) = (me.clone(), service.clone());
                async move {
                    tokio::time::sleep(me.shared.poll).await;
                    Some((read(me, service).await, ()))
                }
            });
            Ok(watch_snapshots(initial, polls))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmicro::registry::testing::record;

    #[test]
    fn txt_is_go_micros_mdns_txt() {
        let service = record("greeter", "1.0.0", "greeter-1", "127.0.0.1:9000");
        let strings = encode_txt(&service, &service.nodes[0]);
        assert!(strings.iter().all(|s| s.len() <= 255));
        let joined: String = strings.iter().map(|s| String::from_utf8_lossy(s)).collect();
        let json: serde_json::Value =
            serde_json::from_slice(&compact::decode(&joined).unwrap()).unwrap();
        assert_eq!(json["Service"], "greeter");
        assert_eq!(json["Version"], "1.0.0");
        assert_eq!(json["Endpoints"][0]["name"], "Greeter.SayHello");
        assert_eq!(json["Metadata"]["transport"], "grpc");
        // go-micro's nulls read as empty.
        let go = serde_json::json!({"Service": "old", "Version": "1", "Endpoints": null, "Metadata": null});
        let hex = compact::encode(go.to_string().as_bytes());
        let txt = decode_txt(&[hex.into_bytes()]).unwrap();
        assert!(txt.endpoints.unwrap_or_default().is_empty());
    }
}
