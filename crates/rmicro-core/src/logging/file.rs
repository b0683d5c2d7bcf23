//! `--log-file PATH`: log lines to a file rotated the way lumberjack (the seed's
//! `gopkg.in/natefinch/lumberjack.v2`) rotates it, written off the calls' path.
//!
//! When a write would take the file past `--log-max-size` megabytes, the file is
//! renamed to `<name>-<time>.<ext>` (`greeter-2006-01-02T15-04-05.000.log`, UTC
//! unless `--log-local-time`), gzipped to `….log.gz` with `--log-compress`, and a new
//! file is started; backups beyond `--log-max-backups` (0: keep all) or older than
//! `--log-max-age` days (0: keep) are removed, oldest first. Written by hand because
//! the maintained rotation crates name their backups differently (`name.log.1`,
//! `name.log.20060102T150405`), and tools set up for lumberjack's names would miss
//! them.
//!
//! A service's log calls never wait for the disk: lines go to a bounded queue that
//! one thread writes out; when the queue is full a line is dropped and counted
//! ([`dropped_lines`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// How a log file is rotated: lumberjack's options and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Megabytes a file may reach before it is rotated (lumberjack: 100).
    pub max_size_mb: u64,
    /// Backups kept, the newest; 0 keeps all (lumberjack's default).
    pub max_backups: usize,
    /// Days a backup is kept; 0 keeps them (lumberjack's default).
    pub max_age_days: u64,
    /// Gzip backups (`….log.gz`).
    pub compress: bool,
    /// Name backups by local time instead of UTC.
    pub local_time: bool,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_size_mb: 100,
            max_backups: 0,
            max_age_days: 0,
            compress: false,
            local_time: false,
        }
    }
}

/// A log file that rotates itself as lumberjack's does (size, backups, age, gzip).
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    rotation: Rotation,
    file: File,
    size: u64,
    /// Bytes per file, from `max_size_mb` (kept apart so tests can rotate small).
    limit: u64,
    /// The last write ended a line: a rotation never splits one.
    at_line_start: bool,
    /// The time in the newest backup's name: the next one is later, so names keep
    /// sorting in the order the backups were made.
    last_backup: Option<SystemTime>,
}

impl RotatingFile {
    /// Opens (appends to) `path`, creating it and its directory as needed.
    pub fn open(path: impl Into<PathBuf>, rotation: Rotation) -> std::io::Result<Self> {
        let limit = rotation.max_size_mb.max(1).saturating_mul(1024 * 1024);
        Self::with_limit(path.into(), rotation, limit)
    }

    fn with_limit(path: PathBuf, rotation: Rotation, limit: u64) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path,
            rotation,
            file,
            size,
            limit,
            at_line_start: true,
            last_backup: None,
        })
    }

    /// `greeter` and `.log` of `greeter.log`: what backups are named from.
    fn stem_and_extension(&self) -> (String, String) {
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "log".into());
        let ext = self
            .path
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        (stem, ext)
    }

    /// The backup name for a rotation at `now`: later than the previous backup's and
    /// free of any existing one.
    fn backup_name(&mut self, now: SystemTime) -> PathBuf {
        let dir = self.path.parent().unwrap_or(Path::new(""));
        let (stem, ext) = self.stem_and_extension();
        // Two rotations in one millisecond: the later one takes the next one.
        let mut at = match self.last_backup {
            Some(last) => now.max(last + Duration::from_millis(1)),
            None => now,
        };
        loop {
            let name = dir.join(format!(
                "{stem}-{}{ext}",
                stamp(at, self.rotation.local_time)
            ));
            let mut gz = name.clone().into_os_string();
            gz.push(".gz");
            if !name.exists() && !Path::new(&gz).exists() {
                self.last_backup = Some(at);
                return name;
            }
            at += Duration::from_millis(1);
        }
    }

    /// Moves the file aside (compressed if asked), starts a new one, and prunes.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let backup = self.backup_name(SystemTime::now());
        std::fs::rename(&self.path, &backup)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        if self.rotation.compress {
            compress(&backup)?;
        }
        self.prune()
    }

    /// This file's backups, oldest first (their names sort by time).
    fn backups(&self) -> std::io::Result<Vec<PathBuf>> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let stem = format!("{}-", self.stem_and_extension().0);
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|p| p != &self.path)
            .filter(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy())
                    .is_some_and(|n| n.starts_with(&stem) && n.len() > stem.len() + 10)
            })
            .collect();
        found.sort();
        Ok(found)
    }

    /// Removes backups beyond the count and age limits, oldest first.
    fn prune(&self) -> std::io::Result<()> {
        let mut backups = self.backups()?;
        if self.rotation.max_age_days > 0 {
            let max_age = Duration::from_secs(self.rotation.max_age_days * 86_400);
            let now = SystemTime::now();
            backups.retain(|path| {
                let old = std::fs::metadata(path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > max_age);
                if old {
                    let _ = std::fs::remove_file(path);
                }
                !old
            });
        }
        if self.rotation.max_backups > 0 && backups.len() > self.rotation.max_backups {
            let excess = backups.len() - self.rotation.max_backups;
            for path in &backups[..excess] {
                std::fs::remove_file(path)?;
            }
        }
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.at_line_start && self.size > 0 && self.size + buf.len() as u64 > self.limit {
            self.rotate()?;
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        if let Some(last) = buf.last() {
            self.at_line_start = *last == b'\n';
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Gzips `path` to `path.gz` (written to a temporary name first, so a crash never
/// leaves half an archive under the real name) and removes `path`.
fn compress(path: &Path) -> std::io::Result<()> {
    let mut gz = path.as_os_str().to_owned();
    gz.push(".gz");
    let mut partial = gz.clone();
    partial.push(".partial");
    {
        let mut input = File::open(path)?;
        let output = File::create(&partial)?;
        let mut encoder = flate2::write::GzEncoder::new(output, flate2::Compression::default());
        std::io::copy(&mut input, &mut encoder)?;
        encoder.finish()?.sync_all()?;
    }
    std::fs::rename(&partial, &gz)?;
    std::fs::remove_file(path)
}

/// `2006-01-02T15-04-05.000`: lumberjack's backup time format.
fn stamp(at: SystemTime, local: bool) -> String {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let offset = if local {
        local_offset(since.as_secs())
    } else {
        0
    };
    let shifted = SystemTime::UNIX_EPOCH
        + Duration::from_secs(since.as_secs().saturating_add_signed(offset))
        + Duration::from_nanos(u64::from(since.subsec_nanos()));
    // `2006-01-02T15:04:05.000Z` → `2006-01-02T15-04-05.000`
    crate::broker::typed::rfc3339(shifted)
        .trim_end_matches('Z')
        .replace(':', "-")
}

/// The local time zone's offset from UTC at `secs` after the epoch, in seconds.
fn local_offset(secs: u64) -> i64 {
    let Ok(time) = libc::time_t::try_from(secs) else {
        return 0;
    };
    // SAFETY: `localtime_r` only writes the `tm` we own; both pointers are valid for
    // the call, and it is the thread-safe variant.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let filled = unsafe { libc::localtime_r(&time, &mut tm) };
    if filled.is_null() { 0 } else { tm.tm_gmtoff }
}

/// Lines queued for the log file that were dropped because the queue was full.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many log lines were dropped because the file's writer fell behind.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// The lines one queue holds before new ones are dropped.
const QUEUE_LINES: usize = 65_536;

/// How often the file's thread takes the queued lines while lines come; it is
/// woken sooner only when a batch's worth is waiting or a sync is asked for, so
/// that a line logged never wakes it.
const TICK: Duration = Duration::from_millis(5);

/// How long the file's thread waits when nothing was queued in its last tick.
const IDLE_TICK: Duration = Duration::from_millis(50);

/// A writer that hands lines to the file's thread without waiting; clones share it.
///
/// Lines are copied into one shared buffer under a short lock (no allocation per
/// line, and no block made on a service's thread and freed on the file's, which
/// costs allocators a lock of their own); the file's thread swaps the buffer out
/// every few milliseconds and writes it.
#[derive(Clone)]
pub struct NonBlocking {
    shared: std::sync::Arc<Shared>,
    /// Dropped with the last clone: the file's thread then writes what is left
    /// and ends.
    _open: std::sync::Arc<Open>,
}

/// What the writers and the file's thread share.
struct Shared {
    queued: std::sync::Mutex<Queued>,
    /// The file's thread waits on it between ticks.
    wake: std::sync::Condvar,
    /// Lines the queue holds at most.
    capacity: usize,
}

/// Lines waiting for the file's thread.
#[derive(Default)]
struct Queued {
    /// The lines, one after another.
    bytes: Vec<u8>,
    /// Where each line ends in `bytes`.
    ends: Vec<usize>,
    /// Answered once everything queued before them is written and flushed.
    syncs: Vec<std::sync::mpsc::Sender<()>>,
    /// The file's thread was woken for a full batch and has not run since.
    woken: bool,
    /// Every writer is gone.
    closed: bool,
}

/// Marks the queue closed when the last writer goes.
struct Open {
    shared: std::sync::Arc<Shared>,
}

impl Drop for Open {
    fn drop(&mut self) {
        crate::sync::lock(&self.shared.queued).closed = true;
        self.shared.wake.notify_one();
    }
}

impl std::fmt::Debug for NonBlocking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonBlocking").finish_non_exhaustive()
    }
}

/// Lines gathered for one write: whole lines, never more than the file may take
/// before its next rotation, so rotating happens exactly where writing line by
/// line would.
struct Batch {
    bytes: Vec<u8>,
}

/// A write of at most this many bytes at once.
const BATCH_BYTES: usize = 64 * 1024;

impl Batch {
    fn write_out(&mut self, file: &mut RotatingFile) {
        if !self.bytes.is_empty() {
            if let Err(err) = file.write_all(&self.bytes) {
                eprintln!("warning: cannot write the log file: {err}");
            }
            self.bytes.clear();
        }
    }

    fn line(&mut self, file: &mut RotatingFile, line: &[u8]) {
        let pending = self.bytes.len() as u64;
        // This line would rotate the file: what came before goes first.
        if pending > 0 && file.size + pending + line.len() as u64 > file.limit {
            self.write_out(file);
        }
        self.bytes.extend_from_slice(line);
        if self.bytes.len() >= BATCH_BYTES {
            self.write_out(file);
        }
    }
}

impl NonBlocking {
    /// Starts the thread that writes `file`; it ends when every writer is dropped.
    pub fn new(file: RotatingFile) -> Self {
        Self::with_capacity(file, QUEUE_LINES)
    }

    fn with_capacity(mut file: RotatingFile, lines: usize) -> Self {
        let shared = std::sync::Arc::new(Shared {
            queued: std::sync::Mutex::new(Queued::default()),
            wake: std::sync::Condvar::new(),
            capacity: lines.max(1),
        });
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("rmicro-log-file".into())
            .spawn(move || {
                let shared = thread_shared;
                let mut batch = Batch {
                    bytes: Vec::with_capacity(BATCH_BYTES),
                };
                // Swapped with the queue's on each turn, so both keep their room.
                let mut taken = Queued::default();
                let mut tick = TICK;
                loop {
                    let closed = {
                        let mut queued = crate::sync::lock(&shared.queued);
                        // A tick, unless a sync, the last writer's going or a
                        // batch's worth of lines wakes it first.
                        if queued.syncs.is_empty() && !queued.closed && !queued.woken {
                            queued = match shared.wake.wait_timeout(queued, tick) {
                                Ok((queued, _)) => queued,
                                Err(poisoned) => poisoned.into_inner().0,
                            };
                        }
                        std::mem::swap(&mut queued.bytes, &mut taken.bytes);
                        std::mem::swap(&mut queued.ends, &mut taken.ends);
                        std::mem::swap(&mut queued.syncs, &mut taken.syncs);
                        queued.woken = false;
                        queued.closed
                    };
                    tick = if taken.ends.is_empty() {
                        IDLE_TICK
                    } else {
                        TICK
                    };
                    let mut start = 0;
                    for &end in &taken.ends {
                        batch.line(&mut file, &taken.bytes[start..end]);
                        start = end;
                    }
                    batch.write_out(&mut file);
                    if !taken.syncs.is_empty() || closed {
                        let _ = file.flush();
                    }
                    for done in taken.syncs.drain(..) {
                        let _ = done.send(());
                    }
                    taken.bytes.clear();
                    taken.ends.clear();
                    if closed {
                        let queued = crate::sync::lock(&shared.queued);
                        if queued.ends.is_empty() && queued.syncs.is_empty() {
                            break;
                        }
                    }
                }
            });
        if let Err(err) = spawned {
            eprintln!("warning: no log file writer ({err}); lines will be dropped");
        }
        NonBlocking {
            _open: std::sync::Arc::new(Open {
                shared: shared.clone(),
            }),
            shared,
        }
    }

    /// Waits (up to `limit`) until every line written before is in the file.
    pub fn sync(&self, limit: Duration) -> bool {
        let (done, wait) = std::sync::mpsc::channel();
        crate::sync::lock(&self.shared.queued).syncs.push(done);
        self.shared.wake.notify_one();
        wait.recv_timeout(limit).is_ok()
    }

    /// Queues `buf` (a line) for the file (or drops and counts it when the queue is full).
    pub(crate) fn push(&self, buf: &[u8]) {
        let wake = {
            let mut queued = crate::sync::lock(&self.shared.queued);
            if queued.ends.len() >= self.shared.capacity {
                drop(queued);
                DROPPED.fetch_add(1, Ordering::Relaxed);
                return;
            }
            queued.bytes.extend_from_slice(buf);
            let end = queued.bytes.len();
            queued.ends.push(end);
            // A batch's worth waits: worth a wake-up before the tick.
            let wake = !queued.woken && end >= BATCH_BYTES * 4;
            queued.woken |= wake;
            wake
        };
        if wake {
            self.shared.wake.notify_one();
        }
    }
}

impl Write for NonBlocking {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "rmicro-logfile-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// Every line of the live file and the backups (gunzipped), and the backups.
    fn read_all(dir: &Path) -> (Vec<String>, Vec<String>) {
        let mut lines = Vec::new();
        let mut backups = Vec::new();
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .collect();
        names.sort();
        for path in names {
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let mut text = String::new();
            if name.ends_with(".gz") {
                flate2::read::GzDecoder::new(File::open(&path).expect("open"))
                    .read_to_string(&mut text)
                    .expect("a whole gzip stream");
                backups.push(name);
            } else {
                File::open(&path)
                    .expect("open")
                    .read_to_string(&mut text)
                    .expect("read");
                if name != "app.log" {
                    backups.push(name);
                }
            }
            lines.extend(text.lines().map(str::to_owned));
        }
        (lines, backups)
    }

    /// `app-2006-01-02T15-04-05.000.log[.gz]`.
    fn lumberjack_name(name: &str) -> bool {
        let Some(rest) = name.strip_prefix("app-") else {
            return false;
        };
        let stamp = rest.trim_end_matches(".gz").trim_end_matches(".log");
        let shape: String = stamp
            .chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect();
        shape == "9999-99-99T99-99-99.999"
    }

    #[test]
    fn a_million_ecs_lines_across_rotations_each_land_exactly_once() {
        const LINES: u64 = 1_000_000;
        let dir = temp_dir("million");
        let rotation = Rotation {
            compress: true,
            ..Rotation::default()
        };
        // Rotate every 4 MB: about 60 rotations.
        let file = RotatingFile::with_limit(dir.join("app.log"), rotation, 4 << 20).expect("opens");
        let file = std::sync::Mutex::new(file);
        let subscriber = tracing_subscriber::fmt()
            .with_writer(file)
            .event_format(crate::logging::Ecs::for_service("app", "1.0.0", "app-1"))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for n in 0..LINES {
                tracing::info!(n, "line");
            }
        });
        let (lines, backups) = read_all(&dir);
        assert!(backups.len() >= 40, "{} rotations", backups.len());
        assert!(
            backups
                .iter()
                .all(|b| lumberjack_name(b) && b.ends_with(".log.gz")),
            "{backups:?}"
        );
        let mut seen = vec![false; LINES as usize];
        for line in &lines {
            let event: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(event["ecs.version"], crate::logging::ECS_VERSION);
            assert_eq!(event["service.name"], "app");
            assert_eq!(event["message"], "line");
            let n = event["n"].as_u64().expect("n") as usize;
            assert!(!seen[n], "line {n} twice");
            seen[n] = true;
        }
        assert_eq!(lines.len() as u64, LINES, "every line, once");
        assert!(seen.iter().all(|s| *s));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn backups_beyond_the_count_or_the_age_are_removed_oldest_first() {
        let dir = temp_dir("limits");
        let rotation = Rotation {
            max_backups: 3,
            ..Rotation::default()
        };
        let mut file = RotatingFile::with_limit(dir.join("app.log"), rotation, 100).expect("opens");
        for n in 0..20 {
            file.write_all(format!("{n:0>90}\n").as_bytes())
                .expect("writes");
        }
        file.flush().expect("flush");
        let (lines, backups) = read_all(&dir);
        assert_eq!(backups.len(), 3, "{backups:?}");
        assert!(
            backups.iter().all(|b| lumberjack_name(b)),
            "{backups:?}: {lines:?}"
        );
        // The newest lines are kept: the last three backups and the live file.
        let kept: Vec<u64> = lines.iter().map(|l| l.parse().expect("number")).collect();
        assert_eq!(kept, (16..20).collect::<Vec<_>>(), "{backups:?}");

        // A backup older than the age limit goes at the next rotation.
        let old = dir.join(&backups[0]);
        File::options()
            .write(true)
            .open(&old)
            .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(3 * 86_400)))
            .expect("age a backup");
        let rotation = Rotation {
            max_age_days: 2,
            ..Rotation::default()
        };
        let mut file = RotatingFile::with_limit(dir.join("app.log"), rotation, 100).expect("opens");
        for n in 20..22 {
            file.write_all(format!("{n:0>90}\n").as_bytes())
                .expect("writes");
        }
        assert!(!old.exists(), "the old backup is gone");
        // Two more rotations, no count limit: the two younger ones stay.
        let (_, backups) = read_all(&dir);
        assert_eq!(backups.len(), 4, "{backups:?}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn dropping_the_last_writer_writes_what_is_queued() {
        let dir = temp_dir("close");
        let file = RotatingFile::open(dir.join("app.log"), Rotation::default()).expect("opens");
        let writer = NonBlocking::new(file);
        let mut clone = writer.clone();
        drop(writer);
        for n in 0..1000 {
            clone
                .write_all(format!("{n}\n").as_bytes())
                .expect("never fails");
        }
        drop(clone);
        // No sync: the file's thread writes the rest when the last writer goes.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let lines = loop {
            let (lines, _) = read_all(&dir);
            if lines.len() >= 1000 || std::time::Instant::now() > deadline {
                break lines;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let expected: Vec<String> = (0..1000).map(|n| n.to_string()).collect();
        assert_eq!(lines, expected);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let dir = temp_dir("queue");
        let file = RotatingFile::open(dir.join("app.log"), Rotation::default()).expect("opens");
        let before = dropped_lines();
        let mut writer = NonBlocking::with_capacity(file, 4);
        let total = 20_000u64;
        for n in 0..total {
            writer
                .write_all(format!("{n}\n").as_bytes())
                .expect("never fails");
        }
        assert!(writer.sync(Duration::from_secs(10)), "the writer caught up");
        let dropped = dropped_lines() - before;
        let (lines, _) = read_all(&dir);
        assert_eq!(lines.len() as u64 + dropped, total, "written or counted");
        let mut numbers: Vec<u64> = lines
            .iter()
            .map(|l| l.parse().expect("whole line"))
            .collect();
        let written = numbers.len();
        numbers.dedup();
        assert_eq!(numbers.len(), written, "no line twice");
        println!("{dropped} of {total} dropped at a queue of 4");
        let _ = std::fs::remove_dir_all(dir);
    }
}
