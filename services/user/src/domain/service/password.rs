//! Password hashing: argon2id with the crate's defaults (OWASP's minimum: 19 MiB,
//! 2 passes), off the async threads, a few at a time.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use rmicro::Error;
use std::sync::{Arc, OnceLock};
use tokio::sync::Semaphore;

/// Hashes and checks passwords. At most two hashes per core run at once (each
/// takes 19 MiB): a burst of registrations waits rather than exhausting memory.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    checks: Arc<std::sync::atomic::AtomicU64>,
}

impl Default for Passwords {
    fn default() -> Self {
        Self::new()
    }
}

/// A hash of no one's password: an unknown user's login checks against it, so
/// it takes as long as a known user's.
fn decoy() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        Argon2::default()
            .hash_password(b"no one's password: only timed, never matched")
            .map(|hash| hash.to_string())
            .unwrap_or_default()
    })
}

impl Passwords {
    /// Room for two hashes per core.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        // The decoy is made now, so the first unknown user's login is not the
        // one slower login that tells them apart.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn_blocking(|| {
                decoy();
            });
        }
        Passwords {
            permits: Arc::new(Semaphore::new(cores * 2)),
            checks: Arc::default(),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::unavailable(crate::NAME, "shutting down"))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| Error::internal(crate::NAME, "password hashing failed"))
    }

    /// The PHC string of `password` with a fresh salt.
    pub async fn hash(&self, password: &str) -> Result<String, Error> {
        let password = password.to_owned();
        self.run(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
        })
        .await?
        .map_err(|_| Error::internal(crate::NAME, "password hashing failed"))
    }

    /// How many passwords were checked against a hash (a real one or the
    /// decoy): every login checks exactly one, known user or not.
    pub fn checks(&self) -> u64 {
        self.checks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether `password` matches `hash`; with no hash (an unknown user) the
    /// same work is done against a decoy and the answer is no.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, Error> {
        let password = password.to_owned();
        let known = hash.is_some();
        let hash = hash.map_or_else(|| decoy().to_owned(), str::to_owned);
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let matched = self
            .run(move || {
                PasswordHash::new(&hash).is_ok_and(|parsed| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
            })
            .await?;
        Ok(known && matched)
    }
}
