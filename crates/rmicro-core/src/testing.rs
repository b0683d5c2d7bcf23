//! Test support shared by rmicro's crates: a server process (etcd, nats-server,
//! redis-server, …) started for a test on free loopback ports, in its own data
//! directory, that can be killed and started again on the same ports and data, and
//! is stopped and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether missing servers must fail the test (`CI=true`) rather than skip it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The rmicro checkout these tests run in (interop scripts live under it).
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// `tool` when present; otherwise fails the test under `CI=true`, or prints that
/// the test is skipped and why (`what` is missing; `fix` says how to get it).
pub fn require<T>(tool: Option<T>, what: &str, fix: &str) -> Option<T> {
    match tool {
        Some(tool) => Some(tool),
        None if in_ci() => panic!("{what} is missing and CI=true: {fix}"),
        None => {
            eprintln!("SKIPPED: {what} is missing ({fix})");
            None
        }
    }
}

/// The Python with grpcio, httpx and the rest of `interop/requirements.txt`
/// that the test command makes: `$RMICRO_PYTHON`, else
/// `~/.cache/rmicro-venv/bin/python`.
pub fn python() -> Option<PathBuf> {
    let path = std::env::var_os("RMICRO_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/rmicro-venv/bin/python"))
        });
    require(
        path.filter(|p| p.exists()),
        "the Python venv with grpcio (RMICRO_PYTHON)",
        "run scripts/test, which makes it",
    )
}

/// `curl` with HTTP/2 support.
pub fn curl() -> Option<PathBuf> {
    let found = Command::new("curl")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("HTTP2"))
        .map(|_| PathBuf::from("curl"));
    require(found, "curl with HTTP/2", "apt-get install -y curl")
}

/// Reads the child's `stream` line by line until `pick` finds what it wants.
pub fn read_until<R: std::io::Read + Send + 'static, T: Send + 'static>(
    stream: R,
    limit: Duration,
    pick: impl Fn(&str) -> Option<T> + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stream)).map_while(Result::ok) {
            if let Some(found) = pick(&line) {
                let _ = tx.send(Ok(found));
                // Keep draining so the child never blocks on a full pipe.
                continue;
            }
            seen.push(line);
        }
        let _ = tx.send(Err(seen.join("\n")));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(found)) => found,
        Ok(Err(seen)) => panic!("the process ended without the expected line; it printed:\n{seen}"),
        Err(_) => panic!("no expected line within {limit:?}"),
    }
}

/// The address a service process logged as `Listening on HOST:PORT` on `stderr`.
pub fn listening_address<R: std::io::Read + Send + 'static>(stderr: R) -> String {
    read_until(stderr, Duration::from_secs(30), |line| {
        line.split("Listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(|a| a.trim_end_matches(|c: char| !c.is_ascii_digit()).to_owned())
    })
}

/// Finds `name`: `$override_var` if set, else on `PATH`, else in `/usr/sbin`.
pub fn find_binary(name: &str, override_var: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(override_var) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A server process for a test.
pub struct ServerProcess {
    name: String,
    binary: PathBuf,
    dir: PathBuf,
    ports: Vec<u16>,
    args: Vec<std::ffi::OsString>,
    envs: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    child: Option<Child>,
}

impl ServerProcess {
    /// Prepares `binary` with `ports` free loopback ports and a fresh directory;
    /// `args` builds its command line from the directory and the ports. Nothing
    /// runs until [`start`](Self::start).
    pub fn new(
        name: &str,
        binary: PathBuf,
        ports: usize,
        args: impl FnOnce(&Path, &[u16]) -> Vec<std::ffi::OsString>,
    ) -> std::io::Result<ServerProcess> {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rmicro-{name}-{}-{n}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        // Hold every listener until all ports are chosen, so they differ.
        let listeners = (0..ports)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()?;
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<std::io::Result<Vec<_>>>()?;
        let args = args(&dir, &ports);
        Ok(ServerProcess {
            name: name.to_owned(),
            binary,
            dir,
            ports,
            args,
            envs: Vec::new(),
            child: None,
        })
    }

    /// Like [`ServerProcess::new`] for a server configured by a file: `config(dir,
    /// ports)` gives the text of `dir/<file>`, written before the process starts,
    /// and `args(path)` the command line that points the server at it.
    pub fn with_config_file(
        name: &str,
        binary: PathBuf,
        ports: usize,
        file: &str,
        config: impl FnOnce(&Path, &[u16]) -> String,
        args: impl FnOnce(&Path) -> Vec<std::ffi::OsString>,
    ) -> std::io::Result<ServerProcess> {
        let mut written = None;
        let process = ServerProcess::new(name, binary, ports, |dir, ports| {
            let path = dir.join(file);
            let argv = args(&path);
            written = Some((path, config(dir, ports)));
            argv
        })?;
        if let Some((path, text)) = written {
            std::fs::write(path, text)?;
        }
        Ok(process)
    }

    /// Sets an environment variable for the process.
    pub fn env(
        mut self,
        key: impl Into<std::ffi::OsString>,
        value: impl Into<std::ffi::OsString>,
    ) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// The ports, in the order asked for.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The data directory (the server's output goes to `<name>.log` in it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the process (SIGKILL, as a crash); its data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts (or restarts) the process and waits until its first port accepts
    /// TCP connections.
    pub async fn start_listening(&mut self) -> std::io::Result<()> {
        let port = self.ports[0];
        self.start(|| async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await
    }

    /// Stops the process with SIGTERM (a clean shutdown: servers that save their
    /// state on exit, like Mosquitto, do so) and waits up to 20 s, then kills it.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts (or restarts) the process and waits up to 30 s until `ready` says it
    /// serves; fails early, pointing at the log, if the process exits.
    pub async fn start<F, Fut>(&mut self, mut ready: F) -> std::io::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        self.stop();
        let log_path = self.dir.join(format!("{}.log", self.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = Command::new(&self.binary)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ready().await {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(std::io::Error::other(format!(
                    "{} exited with {status}; see {}",
                    self.name,
                    log_path.display()
                )));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "{} did not serve within 30 s; see {}",
                    self.name,
                    log_path.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An OTLP trace receiver built on OpenTelemetry's published protocol types, not
/// on rmicro's code: `interop/otlp_receiver.py` (Python's `opentelemetry-proto`
/// with grpcio) on two free loopback ports, OTLP/gRPC and OTLP/HTTP, each span it
/// receives kept as a JSON value (ids in hex, kind by name, attributes, events,
/// status, resource). Stops when dropped.
pub struct OtlpReceiver {
    child: Child,
    /// The OTLP/gRPC port (the collector's 4317).
    pub grpc: u16,
    /// The OTLP/HTTP port (the collector's 4318).
    pub http: u16,
    spans: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl OtlpReceiver {
    /// Starts `script` (the path of `interop/otlp_receiver.py`) with `python`;
    /// `None` when it does not print its ports within a minute.
    pub fn start(python: &Path, script: &Path) -> Option<OtlpReceiver> {
        use std::io::BufRead as _;
        let mut child = Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .ok()?;
        let stdout = child.stdout.take()?;
        let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (ports_tx, ports_rx) = std::sync::mpsc::channel();
        let kept = spans.clone();
        std::thread::spawn(move || {
            let mut first = true;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if first {
                    first = false;
                    let _ = ports_tx.send(value);
                } else {
                    crate::sync::lock(&kept).push(value);
                }
            }
        });
        let port = |ports: &serde_json::Value, key: &str| {
            ports[key].as_u64().and_then(|p| u16::try_from(p).ok())
        };
        let ports = match ports_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(ports) => ports,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        };
        Some(OtlpReceiver {
            grpc: port(&ports, "grpc")?,
            http: port(&ports, "http")?,
            child,
            spans,
        })
    }

    /// The spans received so far.
    pub fn spans(&self) -> Vec<serde_json::Value> {
        crate::sync::lock(&self.spans).clone()
    }

    /// Waits until at least `n` spans arrived (panics naming what is missing
    /// after `limit`), then returns them all.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<serde_json::Value> {
        self.wait_until(&format!("{n} spans"), limit, |spans| spans.len() >= n)
            .await
    }

    /// Waits until the spans received satisfy `done` (they come in batches, from
    /// each process on its own schedule), then returns them all; panics naming
    /// `what` after `limit`.
    pub async fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + limit;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not arrive within {limit:?}; got {}: {spans:#?}",
                spans.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A certificate authority for tests (rcgen): issues server and client
/// certificates, valid or expired, whose PEM files tests hand to servers and
/// clients. Each certificate is written to a temporary directory that lives as long
/// as the CA.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
    dir: PathBuf,
    issued: std::sync::atomic::AtomicUsize,
}

/// A certificate issued by a [`TestCa`], as PEM and as files.
#[derive(Debug, Clone)]
pub struct TestCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
    /// The certificate's file.
    pub cert_file: PathBuf,
    /// The key's file.
    pub key_file: PathBuf,
}

// Test support: a CA that cannot be made is the test's failure, said at once.
#[allow(clippy::expect_used)]
impl TestCa {
    /// A new CA called `name`; its certificate is also written to
    /// [`TestCa::cert_file`].
    pub fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().expect("a CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("a self-signed CA");
        let dir = std::env::temp_dir().join(format!("rmicro-test-ca-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a directory for the CA's files");
        let cert_pem = cert.pem();
        std::fs::write(dir.join("ca.pem"), &cert_pem).expect("writes the CA certificate");
        TestCa {
            issuer: rcgen::Issuer::new(params, key),
            cert_pem,
            dir,
            issued: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The CA certificate's file.
    pub fn cert_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server certificate for `localhost`, `127.0.0.1` and `::1`.
    pub fn server(&self) -> TestCert {
        self.issue("localhost", &["localhost", "127.0.0.1", "::1"], false, true)
    }

    /// A client certificate with subject `CN=<name>` and the given SANs (DNS names,
    /// or `spiffe://…` URIs).
    pub fn client(&self, name: &str, sans: &[&str]) -> TestCert {
        self.issue(name, sans, false, false)
    }

    /// The address options of a link that trusts this CA and presents `client`:
    /// `tls_ca=FILE[&tls_cert=FILE&tls_key=FILE]` (see `transport::LinkTls`).
    pub fn link_options(&self, client: Option<&TestCert>) -> String {
        link_options(&self.cert_file(), client)
    }

    /// A server certificate for `localhost`, `127.0.0.1` and `::1` that expired in 2020.
    pub fn expired_server(&self) -> TestCert {
        self.issue("localhost", &["localhost", "127.0.0.1", "::1"], true, true)
    }

    /// A client certificate that expired in 2020.
    pub fn expired_client(&self, name: &str) -> TestCert {
        self.issue(name, &[], true, false)
    }

    fn issue(&self, name: &str, sans: &[&str], expired: bool, server: bool) -> TestCert {
        let key = rcgen::KeyPair::generate().expect("a key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        for san in sans {
            let san = if let Ok(ip) = san.parse::<std::net::IpAddr>() {
                rcgen::SanType::IpAddress(ip)
            } else if san.contains("://") {
                rcgen::SanType::URI((*san).try_into().expect("an ASCII URI"))
            } else {
                rcgen::SanType::DnsName((*san).try_into().expect("an ASCII DNS name"))
            };
            params.subject_alt_names.push(san);
        }
        params.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signed by the CA");
        let n = self
            .issued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cert_file = self.dir.join(format!("{n}-{name}.pem"));
        let key_file = self.dir.join(format!("{n}-{name}.key"));
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        std::fs::write(&cert_file, &cert_pem).expect("writes the certificate");
        std::fs::write(&key_file, &key_pem).expect("writes the key");
        TestCert {
            cert_pem,
            key_pem,
            cert_file,
            key_file,
        }
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `tls_ca=<ca>[&tls_cert=…&tls_key=…]`: the address options of a link that trusts
/// the CA in `ca` and presents `client` (see `transport::LinkTls`).
pub fn link_options(ca: &Path, client: Option<&TestCert>) -> String {
    let mut options = format!("tls_ca={}", ca.display());
    if let Some(client) = client {
        options.push_str(&format!(
            "&tls_cert={}&tls_key={}",
            client.cert_file.display(),
            client.key_file.display()
        ));
    }
    options
}
