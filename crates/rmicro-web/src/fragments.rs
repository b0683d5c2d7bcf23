//! The live fragments every open page of one kind shares: when the fleet changes,
//! each page's event stream asks for its fragment at about the same moment, and
//! the first to ask renders it for all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a rendered fragment is handed out for its fleet version: long enough
/// to cover the streams waking for one change, short enough that the charts (which
/// move with the clock) a newly opened stream gets are current.
pub(crate) const FRESH: Duration = Duration::from_millis(200);

/// Fragments kept longer than this are dropped at the next render, so names asked
/// for once (any `/events/services/NAME`) do not pile up.
const KEPT: Duration = Duration::from_secs(2);

struct Rendered {
    version: u64,
    at: Instant,
    html: Arc<str>,
}

/// Rendered fragments by page (`services`, `service/NAME`, …).
#[derive(Default)]
pub(crate) struct Fragments {
    cache: Mutex<HashMap<String, Rendered>>,
}

impl Fragments {
    /// `key`'s fragment for fleet `version` as of `now`: the one already rendered
    /// for that version less than [`FRESH`] ago, else `render`'s (kept for the next).
    pub(crate) fn get_or_render(
        &self,
        key: &str,
        version: u64,
        now: Instant,
        render: impl FnOnce() -> String,
    ) -> Arc<str> {
        if let Some(done) = rmicro::sync::lock(&self.cache).get(key)
            && done.version == version
            && now.saturating_duration_since(done.at) < FRESH
        {
            return done.html.clone();
        }
        // Rendered outside the lock: other pages' streams need not wait for this one.
        let html: Arc<str> = render().replace('\r', "").into();
        let mut cache = rmicro::sync::lock(&self.cache);
        cache.retain(|_, done| now.saturating_duration_since(done.at) < KEPT);
        cache.insert(
            key.to_owned(),
            Rendered {
                version,
                at: now,
                html: html.clone(),
            },
        );
        html
    }

    /// How many fragments are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        rmicro::sync::lock(&self.cache).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn one_render_serves_every_stream_of_a_version_while_fresh() {
        let fragments = Fragments::default();
        let renders = Cell::new(0);
        let render = || {
            renders.set(renders.get() + 1);
            format!("<p>render {}</p>\r", renders.get())
        };
        let t0 = Instant::now();
        let a = fragments.get_or_render("services", 7, t0, render);
        let b = fragments.get_or_render("services", 7, t0 + FRESH / 2, render);
        assert!(
            Arc::ptr_eq(&a, &b),
            "the second stream shares the first render"
        );
        assert_eq!(renders.get(), 1);
        assert_eq!(&*a, "<p>render 1</p>", "carriage returns are taken out");
        // A new version, a stale render, or another page: rendered again.
        let c = fragments.get_or_render("services", 8, t0 + FRESH / 2, render);
        assert_eq!(&*c, "<p>render 2</p>");
        let d = fragments.get_or_render("services", 8, t0 + FRESH * 2, render);
        assert_eq!(&*d, "<p>render 3</p>");
        fragments.get_or_render("topics", 8, t0 + FRESH * 2, render);
        assert_eq!(renders.get(), 4);
        assert_eq!(fragments.len(), 2);
    }

    #[test]
    fn fragments_nobody_asks_for_are_dropped() {
        let fragments = Fragments::default();
        let t0 = Instant::now();
        for i in 0..100 {
            fragments.get_or_render(&format!("service/n{i}"), 1, t0, String::new);
        }
        assert_eq!(fragments.len(), 100);
        fragments.get_or_render("services", 1, t0 + KEPT, String::new);
        assert_eq!(
            fragments.len(),
            1,
            "only the fragment just rendered is kept"
        );
    }
}
