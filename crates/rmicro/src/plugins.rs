//! A process-wide table of named factories: how `--registry NAME`, `--broker NAME`
//! and `--config-source SCHEME://…` find the implementation adapter crates added.

use std::collections::BTreeMap;
use std::sync::{OnceLock, RwLock};

/// Named factories of type `F` (a `fn` pointer), filled on first use with the
/// built-in ones and extended by [`Plugins::install`].
pub(crate) struct Plugins<F: Copy + 'static> {
    table: OnceLock<RwLock<BTreeMap<String, F>>>,
    builtin: fn() -> Vec<(&'static str, F)>,
}

impl<F: Copy + 'static> Plugins<F> {
    /// A table that starts with `builtin`'s entries.
    pub(crate) const fn new(builtin: fn() -> Vec<(&'static str, F)>) -> Self {
        Plugins {
            table: OnceLock::new(),
            builtin,
        }
    }

    fn table(&self) -> &RwLock<BTreeMap<String, F>> {
        self.table.get_or_init(|| {
            RwLock::new(
                (self.builtin)()
                    .into_iter()
                    .map(|(name, factory)| (name.to_owned(), factory))
                    .collect(),
            )
        })
    }

    /// Adds (or replaces) `name`.
    pub(crate) fn install(&self, name: &str, factory: F) {
        let mut table = crate::sync::write(self.table());
        table.insert(name.to_owned(), factory);
    }

    /// The factory called `name`.
    pub(crate) fn get(&self, name: &str) -> Option<F> {
        crate::sync::read(self.table()).get(name).copied()
    }

    /// Every name, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        crate::sync::read(self.table()).keys().cloned().collect()
    }
}
