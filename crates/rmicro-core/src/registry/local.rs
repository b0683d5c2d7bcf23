//! The embedded default registry: files in a directory shared by every process on the
//! host. No daemon, no multicast, so it works on a laptop and inside a container,
//! where go-micro's mDNS default does not.
//!
//! Each node is one JSON file, `<dir>/<service>/<node-id>.json`, holding the service
//! record (with just that node), when it expires, and the owning process's id. A file
//! is written to a temporary name and renamed into place, so readers never see half a
//! record. Heartbeats rewrite it; deregistering deletes it. A record is live until it
//! expires, or until its process is gone (checked through `/proc` when the reader
//! shares the writer's PID namespace), so a node killed with `kill -9` vanishes at
//! once on Linux and within its TTL elsewhere. Watching polls the directory.
//!
//! Limits: one host (or a directory shared by containers on one host); watch latency
//! is the poll interval (250 ms by default); thousands of nodes would make polling
//! costly — use etcd or Consul beyond a single machine.

use super::{Registry, RegistryError, Service, Watcher, merge_by_version};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What one node's file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    service: Service,
    /// Milliseconds since the Unix epoch after which the node is gone.
    expires_unix_ms: u64,
    pid: u32,
    /// The writer's PID namespace (`pid:[4026531836]`), so readers elsewhere skip the pid check.
    #[serde(default)]
    pid_namespace: String,
}

/// Files expired for longer than this are removed by readers.
const REMOVE_AFTER: Duration = Duration::from_secs(10);

/// Registry in a directory shared by the processes of one host (the default).
#[derive(Debug, Clone)]
pub struct LocalRegistry {
    dir: PathBuf,
    poll: Duration,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Escapes a service or node name into a safe file name.
fn file_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.') && !(out.is_empty() && b == b'.')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl LocalRegistry {
    /// A registry in `dir` (created on first register).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LocalRegistry {
            dir: dir.into(),
            poll: Duration::from_millis(250),
        }
    }

    /// The default directory: `$RMICRO_REGISTRY_DIR`, else
    /// `$XDG_RUNTIME_DIR/rmicro-registry`, else `<tmp>/rmicro-registry-<user>`.
    pub fn default_location() -> Self {
        if let Some(dir) = std::env::var_os("RMICRO_REGISTRY_DIR") {
            return Self::new(dir);
        }
        if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
            return Self::new(PathBuf::from(dir).join("rmicro-registry"));
        }
        let user = std::env::var("USER").unwrap_or_else(|_| "default".into());
        Self::new(std::env::temp_dir().join(format!("rmicro-registry-{}", file_name(&user))))
    }

    /// How often `watch` looks for changes.
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// The directory holding the records.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn error(&self, operation: &'static str, detail: impl std::fmt::Display) -> RegistryError {
        RegistryError::Backend {
            registry: self.describe(),
            operation,
            detail: detail.to_string(),
        }
    }

    fn node_path(&self, service: &str, node: &str) -> PathBuf {
        self.dir
            .join(file_name(service))
            .join(format!("{}.json", file_name(node)))
    }

    /// Whether the record's process is known to be gone: only knowable when the
    /// reader shares the writer's PID namespace.
    fn process_gone(record: &Record, namespace: &str) -> bool {
        !namespace.is_empty()
            && record.pid_namespace == namespace
            && record.pid != 0
            && !Path::new(&format!("/proc/{}", record.pid)).exists()
    }

    /// Whether a record is live now; `false` also for records whose process is gone.
    fn is_live(record: &Record, now: u64, namespace: &str) -> bool {
        record.expires_unix_ms > now && !Self::process_gone(record, namespace)
    }

    /// Reads the live records of one service directory, removing long-dead files.
    fn read_service_dir(&self, dir: &Path, namespace: &str) -> Vec<Service> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let now = now_ms();
        let mut live = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let record = match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<Record>(&bytes).map_err(|e| e.to_string())
                }) {
                Ok(record) => record,
                Err(err) => {
                    // Vanished between listing and reading: a deregistration.
                    if path.exists() {
                        tracing::warn!(path = %path.display(), error = %err, "skipping unreadable registry record");
                    }
                    continue;
                }
            };
            if Self::is_live(&record, now, namespace) {
                live.push(record.service);
            } else if record.expires_unix_ms + REMOVE_AFTER.as_millis() as u64 <= now
                || !Path::new(&format!("/proc/{}", record.pid)).exists()
                    && record.pid_namespace == namespace
            {
                let _ = std::fs::remove_file(&path);
            }
        }
        live
    }

    /// Every live node record: one `Service` per node.
    fn scan(&self, service: Option<&str>) -> Vec<Service> {
        let namespace = pid_namespace();
        match service {
            Some(name) => self.read_service_dir(&self.dir.join(file_name(name)), &namespace),
            None => std::fs::read_dir(&self.dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .filter(|e| e.path().is_dir())
                        .flat_map(|e| self.read_service_dir(&e.path(), &namespace))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        operation: &'static str,
        f: impl FnOnce(LocalRegistry) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, RegistryError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(me))
            .await
            .map_err(|e| self.error(operation, e))?
    }
}

/// Writes `bytes` to `path` atomically (temporary file, then rename).
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

impl Registry for LocalRegistry {
    fn describe(&self) -> String {
        format!("local:{}", self.dir.display())
    }

    fn register(
        &self,
        service: &Service,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        let service = service.clone();
        Box::pin(self.blocking("register", move |me| {
            let dir = me.dir.join(file_name(&service.name));
            std::fs::create_dir_all(&dir)
                .map_err(|e| me.error("register", format!("{}: {e}", dir.display())))?;
            let namespace = pid_namespace();
            for record in super::memory::per_node(&service) {
                let path = me.node_path(&service.name, &record.nodes[0].id);
                let record = Record {
                    service: record,
                    expires_unix_ms: now_ms() + ttl.as_millis() as u64,
                    pid: std::process::id(),
                    pid_namespace: namespace.clone(),
                };
                let bytes =
                    serde_json::to_vec_pretty(&record).map_err(|e| me.error("register", e))?;
                write_atomic(&path, &bytes)
                    .map_err(|e| me.error("register", format!("{}: {e}", path.display())))?;
            }
            Ok(())
        }))
    }

    fn deregister(&self, service: &Service) -> BoxFuture<'_, Result<(), RegistryError>> {
        let service = service.clone();
        Box::pin(self.blocking("deregister", move |me| {
            for node in &service.nodes {
                let path = me.node_path(&service.name, &node.id);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(me.error("deregister", format!("{}: {e}", path.display())));
                    }
                }
            }
            Ok(())
        }))
    }

    fn get_service(&self, name: &str) -> BoxFuture<'_, Result<Vec<Service>, RegistryError>> {
        let name = name.to_owned();
        Box::pin(self.blocking("get_service", move |me| {
            Ok(merge_by_version(me.scan(Some(&name))))
        }))
    }

    fn list_services(&self) -> BoxFuture<'_, Result<Vec<Service>, RegistryError>> {
        Box::pin(self.blocking("list_services", move |me| {
            let mut by_name: HashMap<String, Vec<Service>> = HashMap::new();
            for record in me.scan(None) {
                by_name.entry(record.name.clone()).or_default().push(record);
            }
            let mut all: Vec<Service> = by_name.into_values().flat_map(merge_by_version).collect();
            all.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
            Ok(all)
        }))
    }

    fn watch(&self, service: Option<&str>) -> BoxFuture<'_, Result<Watcher, RegistryError>> {
        let service = service.map(str::to_owned);
        let me = self.clone();
        Box::pin(async move {
            let snapshot = {
                let (me, service) = (me.clone(), service.clone());
                me.clone()
                    .blocking("watch", move |_| Ok(me.scan(service.as_deref())))
                    .await?
            };
            let scans = futures_util::stream::unfold((), move |()| {
                let (me, service) = (me.clone(), service.clone());
                async move {
                    loop {
                        tokio::time::sleep(me.poll).await;
                        let (me, service) = (me.clone(), service.clone());
                        let scan =
                            tokio::task::spawn_blocking(move || me.scan(service.as_deref())).await;
                        // A scan that panicked is skipped; the next one runs as usual.
                        if let Ok(scan) = scan {
                            return Some((Ok(scan), ()));
                        }
                    }
                }
            });
            Ok(super::watch_snapshots(snapshot, scans))
        })
    }
}
