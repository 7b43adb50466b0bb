//! [`RefusalLog`]: one log line per server name whose handshake was refused, within a
//! bounded budget, so that clients sending random names can flood neither the logs nor
//! memory.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long a window of the budget lasts: a name is logged at most once in it.
pub(crate) const WINDOW: Duration = Duration::from_secs(300);

/// How many refusals are logged in one window; the others are only counted, and the
/// count is logged when the next window starts.
pub(crate) const LINES_PER_WINDOW: usize = 20;

/// What to log for one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admission {
    /// Whether this refusal gets its own line.
    pub(crate) log: bool,
    /// Refusals left unlogged in the window that just ended (logged as one line now).
    pub(crate) unlogged_before: u64,
}

/// The state of the current window.
#[derive(Debug)]
struct Window {
    started: Instant,
    /// The names logged in this window: at most `lines` of them, so memory is bounded
    /// whatever clients send.
    logged: HashSet<String>,
    /// Refusals of names not logged in this window because its budget was spent.
    unlogged: u64,
}

/// Decides which refused handshakes are logged: the first refusal of each name in a
/// window, up to a fixed number of lines per window. Cheap, and only taken on the refusal
/// path of a handshake.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    window: Duration,
    lines: usize,
    state: Mutex<Window>,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self::new(WINDOW, LINES_PER_WINDOW)
    }
}

impl RefusalLog {
    /// A log of at most `lines` lines per `window`.
    pub(crate) fn new(window: Duration, lines: usize) -> Self {
        RefusalLog {
            window,
            lines,
            state: Mutex::new(Window {
                started: Instant::now(),
                logged: HashSet::new(),
                unlogged: 0,
            }),
        }
    }

    /// Records a refused handshake for `name` (`""`: no server name) at `now`.
    pub(crate) fn admit(&self, name: &str, now: Instant) -> Admission {
        let mut state = self.state.lock();
        let mut unlogged_before = 0;
        if now.saturating_duration_since(state.started) >= self.window {
            unlogged_before = state.unlogged;
            state.started = now;
            state.logged.clear();
            state.unlogged = 0;
        }
        let log = if state.logged.contains(name) {
            false
        } else if state.logged.len() < self.lines {
            state.logged.insert(name.to_owned());
            true
        } else {
            state.unlogged += 1;
            false
        };
        Admission {
            log,
            unlogged_before,
        }
    }

    /// Logs (at info) that a handshake for `name` was refused because of `reason`, if the
    /// budget allows (see [`admit`](RefusalLog::admit)).
    pub(crate) fn refused(&self, name: Option<&str>, reason: &dyn fmt::Display) {
        if !self.admit_now(name.unwrap_or("")) {
            return;
        }
        match name {
            Some(name) => tracing::info!(
                server_name = name,
                reason = %reason,
                "TLS handshake refused: no certificate for this server name"
            ),
            None => tracing::info!(
                reason = %reason,
                "TLS handshake refused: the client sent no server name"
            ),
        }
    }

    /// Logs (at warn) that no certificate could be obtained for `name` in time for its
    /// handshake, if the budget allows (see [`admit`](RefusalLog::admit)).
    pub(crate) fn failed(&self, name: &str, error: &dyn fmt::Display) {
        if self.admit_now(name) {
            tracing::warn!(
                server_name = name,
                error = %error,
                "TLS handshake refused: the on-demand certificate failed"
            );
        }
    }

    /// [`admit`](RefusalLog::admit) now; logs the count of a past window's unlogged
    /// refusals. Returns whether this refusal gets its own line.
    fn admit_now(&self, name: &str) -> bool {
        let admission = self.admit(name, Instant::now());
        if admission.unlogged_before > 0 {
            tracing::info!(
                refusals = admission.unlogged_before,
                window_secs = self.window.as_secs(),
                "more TLS handshakes were refused than are logged: these were counted only"
            );
        }
        admission.log
    }

    /// How many names the current window remembers.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.state.lock().logged.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_is_logged_once_per_window() {
        let log = RefusalLog::new(Duration::from_secs(60), 5);
        let start = Instant::now();
        assert!(log.admit("a.example", start).log);
        assert!(!log.admit("a.example", start).log);
        assert!(log.admit("b.example", start).log);
        assert!(
            log.admit("", start).log,
            "no server name counts as one name"
        );
        assert!(!log.admit("", start).log);
        // A new window logs the name again.
        let later = start + Duration::from_secs(61);
        assert_eq!(
            log.admit("a.example", later),
            Admission {
                log: true,
                unlogged_before: 0
            }
        );
    }

    #[test]
    fn random_names_cannot_flood_logs_or_memory() {
        let log = RefusalLog::new(Duration::from_secs(60), 3);
        let start = Instant::now();
        let logged = (0..10_000)
            .filter(|i| log.admit(&format!("n{i}.example"), start).log)
            .count();
        assert_eq!(logged, 3, "the window's budget");
        assert_eq!(log.remembered(), 3, "only logged names are remembered");
        // The next window reports how many went unlogged, then logs again.
        let next = log.admit("n0.example", start + Duration::from_secs(60));
        assert_eq!(
            next,
            Admission {
                log: true,
                unlogged_before: 9_997
            }
        );
        assert_eq!(log.remembered(), 1);
        let after = log.admit("other.example", start + Duration::from_secs(61));
        assert_eq!(after.unlogged_before, 0, "the count is reported once");
    }

    #[test]
    fn a_repeated_name_spends_no_budget() {
        let log = RefusalLog::new(Duration::from_secs(60), 2);
        let start = Instant::now();
        for _ in 0..100 {
            log.admit("same.example", start);
        }
        assert!(log.admit("second.example", start).log);
        assert!(!log.admit("third.example", start).log);
        let next = log.admit("x.example", start + Duration::from_secs(60));
        assert_eq!(
            next.unlogged_before, 1,
            "repeats of logged names are not counted"
        );
    }
}
