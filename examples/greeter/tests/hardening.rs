//! Connection hardening against hostile clients written here in raw HTTP/2 frames:
//! slowloris connections that never send the preface, headers that never end,
//! idle connections, the connection limit, the stream limit, oversized header
//! lists and rapid resets (CVE-2023-44487). Under each attack a well-behaved
//! client on another connection keeps getting answers, and the test prints how
//! many and how fast.

mod common;

use common::{client_for, start_with};
use greeter::proto::HelloRequest;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Raw HTTP/2, just enough to play a hostile client.
mod h2raw {
    use super::*;

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const CANCEL: u32 = 0x8;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = Vec::with_capacity(9 + payload.len());
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
    fn int(out: &mut Vec<u8>, mut value: usize, n: u32, first: u8) {
        let max = (1usize << n) - 1;
        if value < max {
            out.push(first | value as u8);
            return;
        }
        out.push(first | max as u8);
        value -= max;
        while value >= 128 {
            out.push((value % 128) as u8 | 0x80);
            value /= 128;
        }
        out.push(value as u8);
    }

    /// A header block of literal fields without indexing, no Huffman coding.
    pub fn block(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in fields {
            out.push(0x00);
            int(&mut out, name.len(), 7, 0);
            out.extend_from_slice(name.as_bytes());
            int(&mut out, value.len(), 7, 0);
            out.extend_from_slice(value.as_bytes());
        }
        out
    }

    /// The request headers of a greeter call, plus `extra` metadata.
    pub fn call(method: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        let path = format!("/greeter.v1.Greeter/{method}");
        let mut fields = vec![
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path.as_str()),
            (":authority", "greeter"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ];
        fields.extend_from_slice(extra);
        block(&fields)
    }

    /// `HelloRequest { name }` in a gRPC length-prefixed message.
    pub fn hello(name: &str) -> Vec<u8> {
        let mut message = vec![0x0a, name.len() as u8];
        message.extend_from_slice(name.as_bytes());
        let mut out = vec![0];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(&message);
        out
    }

    /// HEADERS (and CONTINUATION frames when the block is larger than a frame).
    pub fn headers(stream: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let chunks: Vec<&[u8]> = block.chunks(16_384).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let (kind, mut flags) = if i == 0 {
                (HEADERS, if end_stream { END_STREAM } else { 0 })
            } else {
                (CONTINUATION, 0)
            };
            if last {
                flags |= END_HEADERS;
            }
            out.extend(frame(kind, flags, stream, chunk));
        }
        out
    }

    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    /// A raw connection to the server.
    pub struct Conn(pub TcpStream);

    impl Conn {
        /// Connects and sends the preface and an empty SETTINGS frame.
        pub async fn open(address: std::net::SocketAddr) -> Conn {
            let mut stream = TcpStream::connect(address).await.expect("connects");
            let mut hello = PREFACE.to_vec();
            hello.extend(frame(SETTINGS, 0, 0, &[]));
            stream.write_all(&hello).await.expect("writes the preface");
            Conn(stream)
        }

        pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            self.0.write_all(bytes).await
        }

        /// The next frame; `None` once the server has closed the connection.
        pub async fn next(&mut self) -> Option<Frame> {
            let mut head = [0u8; 9];
            self.0.read_exact(&mut head).await.ok()?;
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0; len];
            self.0.read_exact(&mut payload).await.ok()?;
            Some(Frame {
                kind: head[3],
                flags: head[4],
                stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
                payload,
            })
        }

        /// The first frame matching `want`, within `limit`.
        pub async fn until(&mut self, limit: Duration, want: impl Fn(&Frame) -> bool) -> Frame {
            tokio::time::timeout(limit, async {
                loop {
                    match self.next().await {
                        Some(f) if want(&f) => return f,
                        Some(_) => {}
                        None => panic!("the server closed the connection first"),
                    }
                }
            })
            .await
            .expect("the frame arrives in time")
        }

        /// The server's SETTINGS as (id, value) pairs.
        pub async fn settings(&mut self) -> Vec<(u16, u32)> {
            let f = self
                .until(Duration::from_secs(5), |f| {
                    f.kind == SETTINGS && f.flags & 0x1 == 0
                })
                .await;
            f.payload
                .chunks_exact(6)
                .map(|c| {
                    (
                        u16::from_be_bytes([c[0], c[1]]),
                        u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                    )
                })
                .collect()
        }
    }

    /// Reads until the server closes `stream`, within `limit`; returns whether it did
    /// and the frame kinds seen before.
    pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> (bool, Vec<u8>) {
        let mut kinds = Vec::new();
        let closed = tokio::time::timeout(limit, async {
            let mut buf = [0u8; 4096];
            let mut pending = Vec::new();
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        pending.extend_from_slice(&buf[..n]);
                        while pending.len() >= 9 {
                            let len = u32::from_be_bytes([0, pending[0], pending[1], pending[2]])
                                as usize;
                            if pending.len() < 9 + len {
                                break;
                            }
                            kinds.push(pending[3]);
                            pending.drain(..9 + len);
                        }
                    }
                }
            }
        })
        .await
        .is_ok();
        (closed, kinds)
    }
}

use h2raw::Conn;

/// Well-behaved calls on their own connection while an attack runs: how many
/// succeeded, failed, and the slowest.
struct Bystander {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>, Duration)>,
}

impl Bystander {
    fn start(server: &rmicro::server::RunningServer) -> Bystander {
        let client = client_for(server);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (mut ok, mut errors, mut slowest) = (0, Vec::new(), Duration::ZERO);
            while !flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                let request = HelloRequest {
                    name: "bystander".into(),
                    count: 0,
                };
                match client.say_hello(request).await {
                    Ok(reply) if reply.message == "Hello bystander" => ok += 1,
                    Ok(reply) => errors.push(format!("wrong reply {:?}", reply.message)),
                    Err(err) => errors.push(err.to_string()),
                }
                slowest = slowest.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, errors, slowest)
        });
        Bystander { stop, task }
    }

    /// Stops and checks that every call was answered right; prints the figures.
    async fn finish(self, attack: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let (ok, errors, slowest) = self.task.await.expect("the bystander runs");
        println!(
            "under {attack}: bystander calls answered {ok}, failed {}, slowest {slowest:?}",
            errors.len()
        );
        assert!(
            errors.is_empty(),
            "bystander calls failed under {attack}: {errors:?}"
        );
        assert!(ok > 0, "no bystander call was answered under {attack}");
    }
}

async fn server_with(
    limits: rmicro::transport::ConnectionLimits,
) -> (rmicro::Service, rmicro::server::RunningServer) {
    start_with(greeter::Greeter, |b| b.connection_limits(limits)).await
}

#[tokio::test]
async fn slowloris_connections_are_closed_after_the_handshake_timeout() {
    let (_service, server) = server_with(rmicro::transport::ConnectionLimits {
        handshake_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let address = server.local_addr();
    let bystander = Bystander::start(&server);
    // 500 connections: half send nothing, half a third of the preface.
    let mut hostile = Vec::new();
    for i in 0..500 {
        let mut stream = TcpStream::connect(address).await.expect("connects");
        if i % 2 == 1 {
            stream
                .write_all(&h2raw::PREFACE[..8])
                .await
                .expect("writes");
        }
        hostile.push(stream);
    }
    let opened = Instant::now();
    let mut still_open = 0;
    for stream in &mut hostile {
        let (closed, _) = h2raw::closed_within(stream, Duration::from_secs(15)).await;
        still_open += usize::from(!closed);
    }
    println!(
        "500 slowloris connections closed within {:?}",
        opened.elapsed()
    );
    assert_eq!(
        still_open, 0,
        "connections that never sent the preface stayed open"
    );
    bystander.finish("500 slowloris connections").await;
    assert!(server.stop().await);
}

#[tokio::test]
async fn an_http1_request_is_told_this_is_a_grpc_server() {
    let (_service, server) = server_with(Default::default()).await;
    let mut stream = TcpStream::connect(server.local_addr())
        .await
        .expect("connects");
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: greeter\r\n\r\n")
        .await
        .expect("writes");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("reads");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 505 "), "{answer}");
    assert!(answer.contains("speaks HTTP/2 only"), "{answer}");
}

#[tokio::test]
async fn idle_connections_and_unfinished_headers_are_closed() {
    let (_service, server) = server_with(rmicro::transport::ConnectionLimits {
        idle_timeout: Some(Duration::from_secs(1)),
        ..Default::default()
    })
    .await;
    let address = server.local_addr();
    // A connection that does nothing after its SETTINGS.
    let mut idle = Conn::open(address).await;
    // One whose first request's header block never ends (no END_HEADERS, no
    // CONTINUATION).
    let mut unfinished = Conn::open(address).await;
    let block = h2raw::call("SayHello", &[]);
    unfinished
        .send(&h2raw::frame(
            h2raw::HEADERS,
            0,
            1,
            &block[..block.len() / 2],
        ))
        .await
        .expect("writes");
    // And a chat that stays open (no message for several idle periods) on a third:
    // it is not idle, so it must not be cut.
    let client = rmicro::Client::new(rmicro::client::ClientOptions {
        request_timeout: Duration::from_secs(60),
        ..Default::default()
    })
    .with_route("greeter", server.local_addr().to_string());
    let client = greeter::proto::GreeterClient::new("greeter", client);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut chat = client
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("the chat opens");

    // Neither answers the PING of the server's graceful GOAWAY, so each is cut
    // after the 5 s linger: about 6 s in all.
    let (closed, kinds) = h2raw::closed_within(&mut idle.0, Duration::from_secs(15)).await;
    assert!(closed, "an idle connection stayed open");
    assert!(
        kinds.contains(&h2raw::GOAWAY),
        "closed without GOAWAY: {kinds:?}"
    );
    let (closed, _) = h2raw::closed_within(&mut unfinished.0, Duration::from_secs(15)).await;
    assert!(
        closed,
        "a connection with a header block that never ends stayed open"
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    tx.send(HelloRequest {
        name: "still here".into(),
        count: 0,
    })
    .await
    .expect("sends");
    let reply = chat
        .message()
        .await
        .expect("the chat survived")
        .expect("a reply");
    assert_eq!(reply.message, "Hello still here");
    drop(tx);
    assert!(chat.message().await.expect("ends cleanly").is_none());
    // The client's connection is idle now: past twice the timeout (and the
    // GOAWAY's linger) the server has closed it, and a new call just works.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let reply = client
        .say_hello(HelloRequest {
            name: "again".into(),
            count: 0,
        })
        .await
        .expect("a new call after idle closes");
    assert_eq!(reply.message, "Hello again");
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let (_service, server) = server_with(rmicro::transport::ConnectionLimits {
        max_connections: 20,
        ..Default::default()
    })
    .await;
    let address = server.local_addr();
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut conn = Conn::open(address).await;
        conn.settings().await; // served
        held.push(conn);
    }
    let mut extra = TcpStream::connect(address)
        .await
        .expect("the kernel accepts");
    let started = Instant::now();
    let (closed, kinds) = h2raw::closed_within(&mut extra, Duration::from_secs(5)).await;
    assert!(closed, "the 21st connection was kept");
    assert!(
        kinds.is_empty(),
        "the 21st connection was served: {kinds:?}"
    );
    println!(
        "the 21st connection was closed after {:?}",
        started.elapsed()
    );
    // A freed slot is taken by the next connection.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut conn = Conn::open(address).await;
        let served = tokio::time::timeout(Duration::from_secs(2), conn.next()).await;
        if matches!(served, Ok(Some(f)) if f.kind == h2raw::SETTINGS) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection was served after one closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn streams_beyond_the_limit_are_refused_and_announced() {
    let (_service, server) = server_with(rmicro::transport::ConnectionLimits {
        max_concurrent_streams: 4,
        max_header_list_size: 8 * 1024,
        ..Default::default()
    })
    .await;
    let mut conn = Conn::open(server.local_addr()).await;
    let settings = conn.settings().await;
    assert!(
        settings.contains(&(0x3, 4)),
        "MAX_CONCURRENT_STREAMS: {settings:?}"
    );
    assert!(
        settings.contains(&(0x6, 8 * 1024)),
        "MAX_HEADER_LIST_SIZE: {settings:?}"
    );
    conn.send(&h2raw::frame(h2raw::SETTINGS, 0x1, 0, &[]))
        .await
        .expect("acks");
    // Four calls whose request never ends hold the four streams; the fifth is refused.
    let block = h2raw::call("SayHello", &[]);
    for id in [1, 3, 5, 7, 9] {
        conn.send(&h2raw::headers(id, &block, false))
            .await
            .expect("writes");
    }
    let reset = conn
        .until(Duration::from_secs(5), |f| f.kind == h2raw::RST_STREAM)
        .await;
    assert_eq!(reset.stream, 9);
    let code = u32::from_be_bytes([
        reset.payload[0],
        reset.payload[1],
        reset.payload[2],
        reset.payload[3],
    ]);
    assert_eq!(code, h2raw::REFUSED_STREAM);
    // Finishing one of the four answers it; the connection is fine.
    conn.send(&h2raw::frame(
        h2raw::DATA,
        h2raw::END_STREAM,
        1,
        &h2raw::hello("one"),
    ))
    .await
    .expect("writes");
    let data = conn
        .until(Duration::from_secs(5), |f| {
            f.kind == h2raw::DATA && f.stream == 1
        })
        .await;
    assert!(data.payload.windows(9).any(|w| w == b"Hello one"));
}

#[tokio::test]
async fn oversized_header_lists_are_refused_and_others_served() {
    let (_service, server) = server_with(Default::default()).await;
    let bystander = Bystander::start(&server);
    let mut conn = Conn::open(server.local_addr()).await;
    conn.settings().await;
    // Over the 16 KiB limit: the call is refused (431 or a reset) without reaching
    // the handler...
    let big = "x".repeat(24 * 1024);
    let block = h2raw::call("SayHello", &[("x-big", big.as_str())]);
    conn.send(&h2raw::headers(1, &block, true))
        .await
        .expect("writes");
    let end = conn
        .until(Duration::from_secs(5), |f| {
            f.stream == 1
                && (f.kind == h2raw::RST_STREAM
                    || (f.kind == h2raw::HEADERS && f.flags & h2raw::END_STREAM != 0)
                    || f.kind == h2raw::DATA)
        })
        .await;
    assert_ne!(
        end.kind,
        h2raw::DATA,
        "the oversized call reached the handler"
    );
    // ...and the same connection still answers a normal call.
    conn.send(&h2raw::headers(3, &h2raw::call("SayHello", &[]), false))
        .await
        .expect("writes");
    conn.send(&h2raw::frame(
        h2raw::DATA,
        h2raw::END_STREAM,
        3,
        &h2raw::hello("small"),
    ))
    .await
    .expect("writes");
    let data = conn
        .until(Duration::from_secs(5), |f| {
            f.kind == h2raw::DATA && f.stream == 3
        })
        .await;
    assert!(data.payload.windows(11).any(|w| w == b"Hello small"));

    // Four times the limit is abuse: that connection is closed with GOAWAY.
    let huge = "x".repeat(128 * 1024);
    let block = h2raw::call("SayHello", &[("x-huge", huge.as_str())]);
    let _ = conn.send(&h2raw::headers(5, &block, true)).await;
    let (closed, kinds) = h2raw::closed_within(&mut conn.0, Duration::from_secs(5)).await;
    assert!(closed, "a 128 KiB header list left its connection open");
    assert!(
        kinds.contains(&h2raw::GOAWAY),
        "closed without GOAWAY: {kinds:?}"
    );
    bystander.finish("oversized header lists").await;
}

#[tokio::test]
async fn rapid_resets_close_the_attacker_and_spare_everyone_else() {
    let (_service, server) = server_with(Default::default()).await;
    let bystander = Bystander::start(&server);
    let block = h2raw::call("SayHello", &[]);
    let cancel = h2raw::CANCEL.to_be_bytes();
    // For 3 s: connect, then batches of 100 HEADERS + RST_STREAM pairs as fast as
    // the socket takes them until the server closes the connection; reconnect. A
    // connection keeps attacking until it is cut, however long that takes, within
    // 20 s in all (under load the server may take up streams fast enough that a
    // short attack stays below the limit: that one is not cut, and needs none).
    let started = Instant::now();
    let (mut sent, mut connections, mut calmed) = (0usize, 0usize, 0usize);
    while started.elapsed() < Duration::from_secs(3) {
        let mut attacker = Conn::open(server.local_addr()).await;
        connections += 1;
        let mut id = 1u32;
        let mut kept = true;
        while kept {
            assert!(
                started.elapsed() < Duration::from_secs(20) && id < 0x7fff_0000,
                "an attacking connection was kept open after {sent} resets"
            );
            let mut batch = Vec::new();
            for _ in 0..100 {
                batch.extend(h2raw::headers(id, &block, true));
                batch.extend(h2raw::frame(h2raw::RST_STREAM, 0, id, &cancel));
                id += 2;
            }
            kept = attacker.send(&batch).await.is_ok();
            sent += 100 * usize::from(kept);
            if kept {
                // Cut while the batch was read: the socket says so on the next read.
                let probe =
                    tokio::time::timeout(Duration::from_millis(1), attacker.0.peek(&mut [0u8; 1]))
                        .await;
                if let Ok(Ok(0) | Err(_)) = probe {
                    kept = false;
                }
            }
        }
        let (closed, kinds) = h2raw::closed_within(&mut attacker.0, Duration::from_secs(10)).await;
        assert!(
            closed,
            "an attacking connection was cut for writes but not closed"
        );
        calmed += usize::from(kinds.contains(&h2raw::GOAWAY) || closed);
    }
    println!(
        "rapid reset: {sent} streams opened and reset over {connections} connection(s) in {:?}; each closed by the server ({calmed} with GOAWAY seen or the socket cut)",
        started.elapsed(),
    );
    assert_eq!(
        calmed, connections,
        "every attacking connection is closed by the server"
    );
    bystander.finish("a rapid-reset flood").await;
}
