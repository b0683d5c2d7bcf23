//! One circuit: Hystrix's state machine over a rolling window of one-second buckets.
//!
//! Closed: calls run and their results fill the window. When, within the window,
//! at least `request_volume_threshold` calls were made and at least
//! `error_percent_threshold` % of them failed, the circuit opens. Open: calls fail at
//! once until the sleep window has passed; then exactly one call goes through as a
//! trial (half-open). The trial's success closes the circuit and clears the window;
//! its failure opens it for another sleep window.

use super::Settings;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// How many one-second buckets the rolling window holds (Hystrix: 10 s of 1 s).
pub(crate) const WINDOW_BUCKETS: u64 = 10;

/// Latencies kept per bucket for the percentiles; calls beyond it are counted but
/// their latency is not sampled.
const LATENCY_SAMPLES_PER_BUCKET: usize = 1024;

/// What happened to one call, as the window counts it (Hystrix's event types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// The call succeeded, or failed with a code that does not count.
    Success,
    /// The call failed with a code that counts as the callee's fault.
    Failure,
    /// The breaker's timeout (or the call's deadline) passed first.
    Timeout,
    /// Refused: the circuit's concurrency limit was reached.
    Rejected,
    /// Refused: the circuit was open.
    ShortCircuited,
}

/// The counts of one bucket, or of the whole window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) success: u64,
    pub(crate) failure: u64,
    pub(crate) timeout: u64,
    pub(crate) rejected: u64,
    pub(crate) short_circuited: u64,
    /// Failed calls the fallback answered (not events: they do not count as calls).
    pub(crate) fallback_success: u64,
    /// Failed calls the fallback declined.
    pub(crate) fallback_failure: u64,
}

impl Counts {
    fn add(&mut self, event: Event) {
        match event {
            Event::Success => self.success += 1,
            Event::Failure => self.failure += 1,
            Event::Timeout => self.timeout += 1,
            Event::Rejected => self.rejected += 1,
            Event::ShortCircuited => self.short_circuited += 1,
        }
    }

    fn merge(&mut self, other: &Counts) {
        self.success += other.success;
        self.failure += other.failure;
        self.timeout += other.timeout;
        self.rejected += other.rejected;
        self.short_circuited += other.short_circuited;
        self.fallback_success += other.fallback_success;
        self.fallback_failure += other.fallback_failure;
    }

    /// Calls counted (Hystrix's request count: every event).
    pub(crate) fn requests(&self) -> u64 {
        self.success + self.errors()
    }

    /// Calls that count against the circuit: all but the successes.
    pub(crate) fn errors(&self) -> u64 {
        self.failure + self.timeout + self.rejected + self.short_circuited
    }

    /// Errors as a whole percentage of requests (0 with no requests).
    pub(crate) fn error_percentage(&self) -> u64 {
        (self.errors() * 100)
            .checked_div(self.requests())
            .unwrap_or(0)
    }
}

#[derive(Debug)]
struct Bucket {
    /// Seconds since the circuit was created.
    second: u64,
    counts: Counts,
    /// Latencies of calls that ran, in milliseconds.
    latencies_ms: Vec<u32>,
    /// Most calls in flight at once during the bucket.
    max_in_flight: u32,
}

/// The state of a circuit (Hystrix: closed, open, half-open).
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Closed,
    /// Calls fail fast until `trial_at`; `failed` of `requests` is what opened it.
    Open {
        trial_at: Instant,
        failed: u64,
        requests: u64,
    },
    /// One trial call is in flight since `since`.
    HalfOpen {
        since: Instant,
        failed: u64,
        requests: u64,
    },
}

/// Whether a call may run, and why not.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Admission {
    /// Run it; `trial` when it is the half-open circuit's single trial.
    Run { trial: bool },
    /// The circuit is open: fail fast with this detail.
    Open { detail: String },
    /// The concurrency limit is reached.
    Full { detail: String },
}

/// A circuit's figures at one moment, for the Hystrix stream.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) open: bool,
    pub(crate) window: Counts,
    pub(crate) in_flight: u32,
    /// Most calls in flight at once within the window.
    pub(crate) max_in_flight: u32,
    /// Latencies in the window, sorted, in milliseconds.
    pub(crate) latencies_ms: Vec<u32>,
    /// Every event since the circuit was made.
    pub(crate) totals: Counts,
}

impl Snapshot {
    /// The latency at percentile `p` (0–100), in milliseconds; 0 with no calls.
    pub(crate) fn latency_percentile(&self, p: f64) -> u32 {
        let sorted = &self.latencies_ms;
        if sorted.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        sorted[rank.min(sorted.len() - 1)]
    }

    /// The mean latency, in milliseconds; 0 with no calls.
    pub(crate) fn latency_mean(&self) -> u32 {
        let total: u64 = self.latencies_ms.iter().map(|&ms| u64::from(ms)).sum();
        total
            .checked_div(self.latencies_ms.len() as u64)
            .map_or(0, |mean| u32::try_from(mean).unwrap_or(u32::MAX))
    }
}

/// One circuit's state; callers hold it behind a lock.
#[derive(Debug)]
pub(crate) struct Circuit {
    name: String,
    settings: Settings,
    created: Instant,
    phase: Phase,
    buckets: VecDeque<Bucket>,
    /// Every event since the circuit was made (for Prometheus's counters).
    totals: Counts,
    in_flight: u32,
}

impl Circuit {
    /// A closed circuit named `name` (`service.endpoint`).
    pub(crate) fn new(name: String, settings: Settings, now: Instant) -> Self {
        Circuit {
            name,
            settings,
            created: now,
            phase: Phase::Closed,
            buckets: VecDeque::with_capacity(WINDOW_BUCKETS as usize + 1),
            totals: Counts::default(),
            in_flight: 0,
        }
    }

    /// The command's name (`service.endpoint`).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The settings this circuit runs with.
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Decides whether a call starting `now` may run; a call that may holds one of
    /// the concurrency slots until [`finish`](Self::finish).
    pub(crate) fn admit(&mut self, now: Instant) -> Admission {
        match self.phase.clone() {
            Phase::Closed => {}
            Phase::Open {
                trial_at,
                failed,
                requests,
            } => {
                if now < trial_at {
                    self.record(now, Event::ShortCircuited, None);
                    let wait = trial_at - now;
                    return Admission::Open {
                        detail: self.open_detail(
                            failed,
                            requests,
                            &format!("next trial in {}", seconds(wait)),
                        ),
                    };
                }
                return self.start_trial(now, failed, requests);
            }
            Phase::HalfOpen {
                since,
                failed,
                requests,
            } => {
                // A trial that never reported (its caller vanished without a
                // result) gives way to a new one after a sleep window.
                if now >= since + self.settings.sleep_window {
                    return self.start_trial(now, failed, requests);
                }
                self.record(now, Event::ShortCircuited, None);
                return Admission::Open {
                    detail: self.open_detail(failed, requests, "a trial call is in flight"),
                };
            }
        }
        // As Hystrix asks on every call: the window may have turned unhealthy
        // through rejections and successes alone.
        self.expire(now);
        if self.open_if_unhealthy(now) {
            return self.admit(now);
        }
        if self.in_flight >= self.settings.max_concurrent_requests {
            self.record(now, Event::Rejected, None);
            return Admission::Full {
                detail: format!(
                    "{} calls to {} are in flight already, the breaker's limit \
                     (max concurrent requests {})",
                    self.in_flight, self.name, self.settings.max_concurrent_requests
                ),
            };
        }
        self.in_flight += 1;
        self.note_in_flight(now);
        Admission::Run { trial: false }
    }

    /// Lets one call through as the half-open circuit's trial.
    fn start_trial(&mut self, now: Instant, failed: u64, requests: u64) -> Admission {
        self.phase = Phase::HalfOpen {
            since: now,
            failed,
            requests,
        };
        self.in_flight += 1;
        self.note_in_flight(now);
        Admission::Run { trial: true }
    }

    /// Records how an admitted call ended: `Some(event)` with its latency, or
    /// `None` when its caller went away before it did (counted neither way).
    pub(crate) fn finish(
        &mut self,
        now: Instant,
        trial: bool,
        event: Option<Event>,
        latency: Duration,
    ) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(event) = event {
            self.record(now, event, Some(latency));
        }
        if trial
            && let Phase::HalfOpen {
                failed, requests, ..
            } = self.phase
        {
            self.phase = match event {
                Some(Event::Success) => {
                    self.buckets.clear();
                    Phase::Closed
                }
                Some(_) => Phase::Open {
                    trial_at: now + self.settings.sleep_window,
                    failed,
                    requests,
                },
                // An abandoned trial: the next call may try at once.
                None => Phase::Open {
                    trial_at: now,
                    failed,
                    requests,
                },
            };
            return;
        }
        if matches!(event, Some(Event::Failure | Event::Timeout)) {
            self.open_if_unhealthy(now);
        }
    }

    /// Whether calls fail fast now.
    pub(crate) fn is_open(&self) -> bool {
        !matches!(self.phase, Phase::Closed)
    }

    /// The window's figures now.
    pub(crate) fn snapshot(&mut self, now: Instant) -> Snapshot {
        self.expire(now);
        let mut latencies_ms: Vec<u32> = self
            .buckets
            .iter()
            .flat_map(|b| b.latencies_ms.iter().copied())
            .collect();
        latencies_ms.sort_unstable();
        Snapshot {
            open: self.is_open(),
            window: self.window(),
            in_flight: self.in_flight,
            max_in_flight: self
                .buckets
                .iter()
                .map(|b| b.max_in_flight)
                .max()
                .unwrap_or(0),
            latencies_ms,
            totals: self.totals.clone(),
        }
    }

    /// Counts a fallback's answer to a failed call: a reply, or none.
    pub(crate) fn record_fallback(&mut self, now: Instant, answered: bool) {
        if let Some(bucket) = self.bucket(now) {
            if answered {
                bucket.counts.fallback_success += 1;
            } else {
                bucket.counts.fallback_failure += 1;
            }
        }
    }

    /// Opens a closed circuit whose window is past both thresholds; says whether
    /// it did.
    fn open_if_unhealthy(&mut self, now: Instant) -> bool {
        if !matches!(self.phase, Phase::Closed) {
            return false;
        }
        let window = self.window();
        let requests = window.requests();
        if requests >= u64::from(self.settings.request_volume_threshold)
            && window.error_percentage() >= u64::from(self.settings.error_percent_threshold)
        {
            self.phase = Phase::Open {
                trial_at: now + self.settings.sleep_window,
                failed: window.errors(),
                requests,
            };
            return true;
        }
        false
    }

    fn open_detail(&self, failed: u64, requests: u64, next: &str) -> String {
        format!(
            "circuit open for {}: {failed} of {requests} calls failed in the last {} s; {next}",
            self.name, WINDOW_BUCKETS
        )
    }

    fn window(&self) -> Counts {
        let mut total = Counts::default();
        for bucket in &self.buckets {
            total.merge(&bucket.counts);
        }
        total
    }

    /// Drops buckets older than the window.
    fn expire(&mut self, now: Instant) {
        let second = self.second(now);
        while let Some(oldest) = self.buckets.front() {
            if oldest.second + WINDOW_BUCKETS > second {
                break;
            }
            self.buckets.pop_front();
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.created).as_secs()
    }

    /// The bucket of `now`, started if it is new.
    fn bucket(&mut self, now: Instant) -> Option<&mut Bucket> {
        self.expire(now);
        let second = self.second(now);
        if self.buckets.back().is_none_or(|b| b.second != second) {
            self.buckets.push_back(Bucket {
                second,
                counts: Counts::default(),
                latencies_ms: Vec::new(),
                max_in_flight: 0,
            });
        }
        self.buckets.back_mut()
    }

    /// Notes the calls in flight now in the current bucket's peak.
    fn note_in_flight(&mut self, now: Instant) {
        let in_flight = self.in_flight;
        if let Some(bucket) = self.bucket(now) {
            bucket.max_in_flight = bucket.max_in_flight.max(in_flight);
        }
    }

    fn record(&mut self, now: Instant, event: Event, latency: Option<Duration>) {
        self.totals.add(event);
        if let Some(bucket) = self.bucket(now) {
            bucket.counts.add(event);
            if let Some(latency) = latency
                && bucket.latencies_ms.len() < LATENCY_SAMPLES_PER_BUCKET
            {
                bucket
                    .latencies_ms
                    .push(u32::try_from(latency.as_millis()).unwrap_or(u32::MAX));
            }
        }
    }
}

/// `3.2 s`: a wait as a caller reads it.
fn seconds(wait: Duration) -> String {
    format!("{:.1} s", wait.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::default()
    }

    fn circuit(now: Instant) -> Circuit {
        Circuit::new("greeter.Greeter.SayHello".into(), settings(), now)
    }

    /// A circuit that saw `n` failed calls at `t0`.
    fn failed(t0: Instant, n: usize) -> Circuit {
        let mut c = circuit(t0);
        for _ in 0..n {
            call(&mut c, t0, Event::Failure);
        }
        c
    }

    /// Runs one call to its end with `event`.
    fn call(c: &mut Circuit, now: Instant, event: Event) -> Admission {
        let admission = c.admit(now);
        if let Admission::Run { trial } = admission {
            c.finish(now, trial, Some(event), Duration::from_millis(3));
        }
        admission
    }

    #[test]
    fn opens_only_once_volume_and_error_percentage_are_both_reached() {
        let t0 = Instant::now();
        let mut c = circuit(t0);
        // 19 failures: under the volume threshold of 20, stays closed.
        for _ in 0..19 {
            call(&mut c, t0, Event::Failure);
        }
        assert!(!c.is_open());
        // The 20th call, a failure: 20 of 20 failed, opens.
        call(&mut c, t0, Event::Failure);
        assert!(c.is_open());

        // 12 successes and 8 failures (40 %): closed; 2 more failures (10 of 22 =
        // 45 %): closed; 2 more (12 of 24 = 50 %): open.
        let mut c = circuit(t0);
        for _ in 0..12 {
            call(&mut c, t0, Event::Success);
        }
        for _ in 0..10 {
            call(&mut c, t0, Event::Failure);
        }
        assert!(!c.is_open(), "10 of 22 failed");
        call(&mut c, t0, Event::Timeout);
        assert!(!c.is_open(), "11 of 23 failed");
        call(&mut c, t0, Event::Failure);
        assert!(c.is_open(), "12 of 24 failed");
    }

    #[test]
    fn old_buckets_leave_the_window() {
        let t0 = Instant::now();
        let mut c = failed(t0, 19);
        // Ten seconds later the 19 failures are out of the window.
        let later = t0 + Duration::from_secs(10);
        call(&mut c, later, Event::Failure);
        assert!(!c.is_open());
        assert_eq!(c.snapshot(later).window.requests(), 1);
        // Nine seconds later they would still count.
        let mut c = failed(t0, 19);
        call(&mut c, t0 + Duration::from_millis(9_999), Event::Failure);
        assert!(c.is_open());
    }

    #[test]
    fn open_fails_fast_then_lets_one_trial_through() {
        let t0 = Instant::now();
        let mut c = failed(t0, 20);
        let at = t0 + Duration::from_millis(1_800);
        match c.admit(at) {
            Admission::Open { detail } => assert_eq!(
                detail,
                "circuit open for greeter.Greeter.SayHello: 20 of 20 calls failed in the \
                 last 10 s; next trial in 3.2 s"
            ),
            other => panic!("expected open, got {other:?}"),
        }
        let trial_time = t0 + Duration::from_secs(5);
        assert_eq!(c.admit(trial_time), Admission::Run { trial: true });
        // While the trial runs, everyone else fails fast.
        for _ in 0..5 {
            match c.admit(trial_time) {
                Admission::Open { detail } => {
                    assert!(detail.ends_with("a trial call is in flight"), "{detail}")
                }
                other => panic!("expected open, got {other:?}"),
            }
        }
        // The trial fails: open for another sleep window from now.
        let failed_at = trial_time + Duration::from_millis(100);
        c.finish(
            failed_at,
            true,
            Some(Event::Failure),
            Duration::from_millis(100),
        );
        assert!(c.is_open());
        assert!(matches!(
            c.admit(failed_at + Duration::from_millis(4_999)),
            Admission::Open { .. }
        ));
        let second_trial = failed_at + Duration::from_secs(5);
        assert_eq!(c.admit(second_trial), Admission::Run { trial: true });
        // It succeeds: closed, and the window starts empty.
        c.finish(
            second_trial,
            true,
            Some(Event::Success),
            Duration::from_millis(2),
        );
        assert!(!c.is_open());
        assert_eq!(c.snapshot(second_trial).window, Counts::default());
        assert_eq!(
            call(&mut c, second_trial, Event::Success),
            Admission::Run { trial: false }
        );
    }

    #[test]
    fn an_abandoned_trial_lets_the_next_call_try() {
        let t0 = Instant::now();
        let mut c = failed(t0, 20);
        let t = t0 + Duration::from_secs(5);
        assert_eq!(c.admit(t), Admission::Run { trial: true });
        c.finish(t, true, None, Duration::ZERO);
        assert_eq!(c.admit(t), Admission::Run { trial: true });
        // A trial that never reports gives way after a sleep window.
        assert!(matches!(
            c.admit(t + Duration::from_secs(1)),
            Admission::Open { .. }
        ));
        assert_eq!(
            c.admit(t + Duration::from_secs(5)),
            Admission::Run { trial: true }
        );
    }

    #[test]
    fn the_concurrency_limit_rejects_and_counts_as_failures() {
        let t0 = Instant::now();
        let mut c = circuit(t0);
        for _ in 0..10 {
            assert_eq!(c.admit(t0), Admission::Run { trial: false });
        }
        match c.admit(t0) {
            Admission::Full { detail } => assert_eq!(
                detail,
                "10 calls to greeter.Greeter.SayHello are in flight already, the breaker's \
                 limit (max concurrent requests 10)"
            ),
            other => panic!("expected full, got {other:?}"),
        }
        for _ in 0..9 {
            assert!(matches!(c.admit(t0), Admission::Full { .. }));
        }
        // The 10 in flight succeed: 10 of 20 calls failed (rejections count as
        // errors, as in Hystrix), so the next call finds the circuit open.
        for _ in 0..10 {
            c.finish(t0, false, Some(Event::Success), Duration::from_millis(1));
        }
        let window = c.snapshot(t0).window;
        assert_eq!((window.rejected, window.success), (10, 10));
        assert!(!c.is_open());
        assert!(matches!(c.admit(t0), Admission::Open { .. }));
    }

    #[test]
    fn a_free_slot_is_used_again() {
        let t0 = Instant::now();
        let mut c = circuit(t0);
        for _ in 0..10 {
            assert_eq!(c.admit(t0), Admission::Run { trial: false });
        }
        assert!(matches!(c.admit(t0), Admission::Full { .. }));
        c.finish(t0, false, Some(Event::Success), Duration::from_millis(1));
        assert_eq!(c.admit(t0), Admission::Run { trial: false });
    }

    #[test]
    fn results_of_calls_admitted_before_opening_do_not_close_it() {
        let t0 = Instant::now();
        let mut c = circuit(t0);
        assert_eq!(c.admit(t0), Admission::Run { trial: false });
        for _ in 0..20 {
            call(&mut c, t0, Event::Failure);
        }
        assert!(c.is_open());
        c.finish(t0, false, Some(Event::Success), Duration::from_millis(1));
        assert!(c.is_open(), "only the trial's success closes");
    }
}
