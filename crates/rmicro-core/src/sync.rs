//! Locks that outlive a panic elsewhere.
//!
//! rmicro's shared state behind a `std` lock is changed in single steps that leave
//! it consistent, so a handler or task that panicked while holding a lock must not
//! take every later caller down with it: these take the data over from a poisoned
//! lock instead of panicking.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, taking the data over if a panic poisoned it.
///
/// ```
/// # extern crate rmicro_core as rmicro;
/// let counter = std::sync::Mutex::new(1);
/// *rmicro::sync::lock(&counter) += 1;
/// assert_eq!(*rmicro::sync::lock(&counter), 2);
/// ```
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Read-locks `lock`, taking the data over if a panic poisoned it.
pub fn read<T: ?Sized>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Write-locks `lock`, taking the data over if a panic poisoned it.
pub fn write<T: ?Sized>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The values of a kind alive in the process (every breaker, every rate limit), for
/// the readers that show them all (the Hystrix stream, `/metrics`); holds them
/// weakly, so a dropped one leaves the list.
pub(crate) struct Live<T>(Mutex<Vec<std::sync::Weak<T>>>);

impl<T> Live<T> {
    /// An empty list, for a `static`.
    pub(crate) const fn new() -> Self {
        Live(Mutex::new(Vec::new()))
    }

    /// Shares `value` and lists it.
    pub(crate) fn add(&self, value: T) -> std::sync::Arc<T> {
        let value = std::sync::Arc::new(value);
        let mut live = lock(&self.0);
        live.retain(|weak| weak.strong_count() > 0);
        live.push(std::sync::Arc::downgrade(&value));
        value
    }

    /// Those alive now, in the order they were made.
    pub(crate) fn alive(&self) -> Vec<std::sync::Arc<T>> {
        let mut live = lock(&self.0);
        live.retain(|weak| weak.strong_count() > 0);
        live.iter().filter_map(std::sync::Weak::upgrade).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, RwLock};

    #[test]
    fn a_poisoned_lock_still_gives_its_data() {
        let shared = Arc::new(Mutex::new(vec![1]));
        let rw = Arc::new(RwLock::new(5));
        let (s, r) = (shared.clone(), rw.clone());
        let panicked = std::thread::spawn(move || {
            let _held = s.lock();
            let _written = r.write();
            panic!("poison both");
        })
        .join();
        assert!(panicked.is_err());
        assert!(shared.is_poisoned() && rw.is_poisoned());
        super::lock(&shared).push(2);
        assert_eq!(*super::lock(&shared), vec![1, 2]);
        *super::write(&rw) += 1;
        assert_eq!(*super::read(&rw), 6);
    }
}
