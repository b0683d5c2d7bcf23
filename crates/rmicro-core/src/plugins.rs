//! A process-wide table of named factories: how `--registry NAME`, `--broker NAME`
//! and `--config-source SCHEME://…` find the implementation adapter crates added.
//!
//! Adapter crates add their entries to a slice the linker collects
//! ([`linkme::distributed_slice`]), so depending on an adapter (directly, or through a
//! feature of the `rmicro` facade) is all it takes: the core cannot depend on its
//! adapters, and no `install()` call has to run before flags are parsed. The table
//! is built on first use from the core's own entries, then the linked ones, then
//! whatever [`Plugins::install`] adds at run time (each later one replacing an
//! earlier one of the same name).

use std::collections::BTreeMap;
use std::sync::{OnceLock, RwLock};

/// Named factories of type `F` (a `fn` pointer), filled on first use with the
/// built-in ones and the linked ones, and extended by [`Plugins::install`].
pub(crate) struct Plugins<F: Copy + 'static> {
    table: OnceLock<RwLock<BTreeMap<String, F>>>,
    builtin: fn() -> Vec<(&'static str, F)>,
    linked: fn() -> &'static [(&'static str, F)],
}

impl<F: Copy + 'static> Plugins<F> {
    /// A table that starts with `builtin`'s entries, then `linked`'s (the slice
    /// adapter crates add to).
    pub(crate) const fn new(
        builtin: fn() -> Vec<(&'static str, F)>,
        linked: fn() -> &'static [(&'static str, F)],
    ) -> Self {
        Plugins {
            table: OnceLock::new(),
            builtin,
            linked,
        }
    }

    fn table(&self) -> &RwLock<BTreeMap<String, F>> {
        self.table.get_or_init(|| {
            RwLock::new(
                (self.builtin)()
                    .into_iter()
                    .chain((self.linked)().iter().copied())
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
