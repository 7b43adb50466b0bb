//! One step of an order retried where it failed, and what an order was doing when it
//! failed.
//!
//! A request the CA refused with `badNonce` or a 5xx, or that met a network error or no
//! answer, is sent again at the step that failed (instant-acme fetches a fresh nonce),
//! after a jittered pause, a bounded number of times and never past the order's deadline.
//! Restarting the whole order instead would throw away authorizations, and, from the
//! finalize step on, a certificate the CA has already issued.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::backoff::{Attempts, Backoff};
use crate::certificate::system_to_unix;
use crate::challenge::ChallengeType;

/// Tries of one step, the first included.
const STEP_ATTEMPTS: u32 = 6;
/// The first pause before a step is tried again (doubling, jittered).
const FIRST_PAUSE: Duration = Duration::from_millis(250);
/// The longest pause between two tries of a step.
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// Step retries are logged at info at most once per this many seconds (the others at
/// debug): a CA in trouble must not flood the log.
const INFO_EVERY_SECS: u64 = 10;

/// The steps of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Account,
    NewOrder,
    ResumeOrder,
    Authorization,
    Challenge,
    Validation,
    Finalize,
    Issuance,
    Download,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Account => "setting up the ACME account",
            Step::NewOrder => "new order",
            Step::ResumeOrder => "resuming the order",
            Step::Authorization => "fetching an authorization",
            Step::Challenge => "answering a challenge",
            Step::Validation => "waiting for validation",
            Step::Finalize => "finalizing",
            Step::Issuance => "waiting for the certificate",
            Step::Download => "downloading the certificate",
        })
    }
}

/// Where an order stands: the step, the identifier and challenge being worked on, the
/// authorization's status, the order URL, the time spent and the step retries so far.
/// Shown in every failure, so that "the CA is slow" can be told from "the challenge is
/// unreachable".
#[derive(Debug, Clone)]
pub(super) struct Progress {
    pub names: Vec<String>,
    pub step: Step,
    pub url: Option<String>,
    pub identifier: Option<String>,
    pub challenge: Option<ChallengeType>,
    pub authorization: Option<String>,
    pub started: Instant,
    pub retries: u32,
}

impl Progress {
    pub(super) fn new(names: &[String]) -> Self {
        Progress {
            names: names.to_vec(),
            step: Step::NewOrder,
            url: None,
            identifier: None,
            challenge: None,
            authorization: None,
            started: Instant::now(),
            retries: 0,
        }
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step: {}", self.step)?;
        if let Some(identifier) = &self.identifier {
            write!(f, ", identifier {identifier}")?;
        }
        if let Some(challenge) = self.challenge {
            write!(f, ", challenge {challenge}")?;
        }
        if let Some(status) = &self.authorization {
            write!(f, ", authorization {status}")?;
        }
        write!(
            f,
            ", {:.1} s into the order",
            self.started.elapsed().as_secs_f64()
        )?;
        if self.retries > 0 {
            write!(f, ", {} step retries", self.retries)?;
        }
        match &self.url {
            Some(url) => write!(f, ", order {url}"),
            None => write!(f, ", no order placed"),
        }
    }
}

/// Whether trying the same request again may succeed: `badNonce`, a server error, a
/// network failure or no answer.
pub(super) fn is_transient(err: &instant_acme::Error) -> bool {
    match err {
        instant_acme::Error::Api(problem) => {
            let kind = problem
                .r#type
                .as_deref()
                .and_then(|t| t.rsplit(':').next())
                .unwrap_or("");
            kind == "badNonce"
                || kind == "serverInternal"
                || problem.status.is_some_and(|status| status >= 500)
        }
        // Transport failures, timeouts, and a body that is not the JSON the CA sends
        // (a proxy's error page).
        instant_acme::Error::Http(_)
        | instant_acme::Error::Hyper(_)
        | instant_acme::Error::Other(_)
        | instant_acme::Error::Json(_) => true,
        _ => false,
    }
}

/// The tries of one step.
pub(super) struct Retry {
    attempts: Attempts,
    deadline: Instant,
}

impl Retry {
    /// Tries ending at `deadline` at the latest.
    pub(super) fn until(deadline: Instant) -> Self {
        Retry {
            attempts: Backoff::new(FIRST_PAUSE, MAX_PAUSE, STEP_ATTEMPTS).attempts(),
            deadline,
        }
    }

    /// After `err`: pauses and returns true when the step should be tried again, returns
    /// false at once when not (a lasting failure, the tries used up, or the deadline too
    /// near).
    pub(super) async fn again(
        &mut self,
        err: &instant_acme::Error,
        progress: &mut Progress,
    ) -> bool {
        if !is_transient(err) {
            return false;
        }
        let attempt = self.attempts.attempt();
        let Some(pause) = self.attempts.next_pause() else {
            return false;
        };
        if Instant::now() + pause >= self.deadline {
            return false;
        }
        progress.retries += 1;
        log_retry(progress, err, attempt, pause);
        tokio::time::sleep(pause).await;
        true
    }
}

fn log_retry(progress: &Progress, err: &instant_acme::Error, attempt: u32, pause: Duration) {
    static LAST_INFO: AtomicU64 = AtomicU64::new(0);
    let now = u64::try_from(system_to_unix(std::time::SystemTime::now())).unwrap_or(0);
    let last = LAST_INFO.load(Ordering::Relaxed);
    let names = progress.names.join(",");
    if now >= last + INFO_EVERY_SECS
        && LAST_INFO
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::info!(names, attempt, ?pause, error = %err, progress = %progress, "ACME request failed; retrying the step");
    } else {
        tracing::debug!(names, attempt, ?pause, error = %err, progress = %progress, "ACME request failed; retrying the step");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(kind: &str, status: u16) -> instant_acme::Error {
        instant_acme::Error::Api(instant_acme::Problem {
            r#type: Some(format!("urn:ietf:params:acme:error:{kind}")),
            detail: None,
            status: Some(status),
            subproblems: Vec::new(),
        })
    }

    #[test]
    fn what_is_retried_at_the_step() {
        assert!(is_transient(&problem("badNonce", 400)));
        assert!(is_transient(&problem("serverInternal", 500)));
        assert!(is_transient(&problem("anything", 503)));
        assert!(!is_transient(&problem("malformed", 400)));
        assert!(!is_transient(&problem("rateLimited", 429)));
        assert!(!is_transient(&problem("unauthorized", 403)));
        assert!(is_transient(&instant_acme::Error::Other("reset".into())));
        assert!(!is_transient(&instant_acme::Error::Str(
            "no certificate URL"
        )));
    }

    #[tokio::test(start_paused = true)]
    async fn tries_are_bounded_by_count_and_deadline() {
        let mut progress = Progress::new(&["a.example".to_owned()]);
        let err = problem("badNonce", 400);
        let mut retry = Retry::until(Instant::now() + Duration::from_secs(3600));
        let mut tries = 1;
        while retry.again(&err, &mut progress).await {
            tries += 1;
        }
        assert_eq!(tries, STEP_ATTEMPTS);
        assert_eq!(progress.retries, STEP_ATTEMPTS - 1);

        let mut near = Retry::until(Instant::now() + Duration::from_millis(100));
        assert!(!near.again(&err, &mut progress).await, "past the deadline");
        let mut lasting = Retry::until(Instant::now() + Duration::from_secs(3600));
        assert!(
            !lasting
                .again(&problem("malformed", 400), &mut progress)
                .await
        );
    }

    #[test]
    fn progress_names_the_step_and_the_order() {
        let mut progress = Progress::new(&["a.example".to_owned()]);
        progress.step = Step::Validation;
        progress.identifier = Some("a.example".into());
        progress.challenge = Some(ChallengeType::Http01);
        progress.authorization = Some("pending".into());
        progress.url = Some("https://ca/order/1".into());
        progress.retries = 2;
        let shown = progress.to_string();
        for part in [
            "waiting for validation",
            "identifier a.example",
            "challenge http-01",
            "authorization pending",
            "2 step retries",
            "order https://ca/order/1",
            "s into the order",
        ] {
            assert!(shown.contains(part), "{shown} lacks {part}");
        }
    }
}
