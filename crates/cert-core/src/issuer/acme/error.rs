//! How ACME failures become [`IssueError`]s: problem documents classified as refused or
//! temporary, rate-limit pauses, and [`OrderError`], which tells the issuer whether another
//! challenge type or a new account may help.

use std::time::{Duration, SystemTime};

use super::step::Progress;
use crate::certificate::system_to_unix;
use crate::challenge::ChallengeType;
use crate::issuer::IssueError;

/// Why one order failed, inside the issuer.
pub(super) enum OrderError {
    /// Validation of a challenge of this type failed: another type may succeed.
    Challenge(ChallengeType, IssueError),
    /// The CA does not know the account (any more).
    AccountGone(IssueError),
    Other(IssueError),
}

impl OrderError {
    /// The failure as the engine sees it.
    pub(super) fn issue_error(&self) -> &IssueError {
        match self {
            OrderError::Challenge(_, err)
            | OrderError::AccountGone(err)
            | OrderError::Other(err) => err,
        }
    }

    /// The same failure, its message saying where the order stood.
    pub(super) fn with_context(self, progress: &Progress) -> Self {
        let add = |err: IssueError| match err {
            IssueError::Temporary {
                source,
                retry_after,
            } => IssueError::Temporary {
                source: Box::new(InOrder {
                    context: progress.to_string(),
                    source,
                }),
                retry_after,
            },
            IssueError::Rejected { reason } => IssueError::Rejected {
                reason: format!("{reason} ({progress})"),
            },
            other => other,
        };
        match self {
            OrderError::Challenge(ty, err) => OrderError::Challenge(ty, add(err)),
            OrderError::AccountGone(err) => OrderError::AccountGone(add(err)),
            OrderError::Other(err) => OrderError::Other(add(err)),
        }
    }
}

/// A failure and where its order stood; the failure stays reachable as the source.
#[derive(Debug)]
struct InOrder {
    context: String,
    source: crate::BoxError,
}

impl std::fmt::Display for InOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.source, self.context)
    }
}

impl std::error::Error for InOrder {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl From<IssueError> for OrderError {
    fn from(err: IssueError) -> Self {
        OrderError::Other(err)
    }
}

impl From<crate::Error> for OrderError {
    fn from(err: crate::Error) -> Self {
        OrderError::Other(IssueError::Storage(err))
    }
}

impl From<instant_acme::Error> for OrderError {
    fn from(err: instant_acme::Error) -> Self {
        let gone =
            matches!(&err, instant_acme::Error::Api(p) if problem_kind(p) == "accountDoesNotExist");
        let mapped = map_acme_error(err);
        if gone {
            OrderError::AccountGone(mapped)
        } else {
            OrderError::Other(mapped)
        }
    }
}

pub(super) fn validation_failure(ty: Option<ChallengeType>, detail: String) -> OrderError {
    let err = IssueError::Temporary {
        source: format!("validation failed: {detail}").into(),
        retry_after: None,
    };
    match ty {
        Some(ty) => OrderError::Challenge(ty, err),
        None => OrderError::Other(err),
    }
}

fn problem_kind(problem: &instant_acme::Problem) -> &str {
    problem
        .r#type
        .as_deref()
        .and_then(|t| t.rsplit(':').next())
        .unwrap_or("")
}

pub(super) fn is_validation_problem(problem: &instant_acme::Problem) -> bool {
    matches!(
        problem_kind(problem),
        "connection" | "dns" | "incorrectResponse" | "tls" | "unauthorized" | "caa"
    ) || problem.subproblems.iter().any(|s| {
        s.r#type.as_deref().is_some_and(|t| {
            t.ends_with(":connection")
                || t.ends_with(":incorrectResponse")
                || t.ends_with(":dns")
                || t.ends_with(":tls")
        })
    })
}

/// Maps an ACME failure to what the engine does with it.
pub(super) fn map_acme_error(err: instant_acme::Error) -> IssueError {
    match err {
        instant_acme::Error::Api(problem) => {
            let kind = problem_kind(&problem).to_owned();
            match kind.as_str() {
                "rejectedIdentifier"
                | "unauthorized"
                | "malformed"
                | "unsupportedIdentifier"
                | "caa"
                | "invalidContact"
                | "unsupportedContact"
                | "externalAccountRequired"
                | "userActionRequired"
                | "badCSR"
                | "badSignatureAlgorithm"
                | "accountDoesNotExist"
                | "badRevocationReason"
                | "alreadyRevoked" => IssueError::Rejected {
                    reason: problem.to_string(),
                },
                "rateLimited" => IssueError::Temporary {
                    retry_after: Some(rate_limit_delay(problem.detail.as_deref())),
                    source: Box::new(problem),
                },
                _ => IssueError::temporary(problem),
            }
        }
        instant_acme::Error::Unsupported(what) => IssueError::Rejected {
            reason: format!("the CA does not support {what}"),
        },
        instant_acme::Error::KeyRejected | instant_acme::Error::Crypto => IssueError::Rejected {
            reason: err.to_string(),
        },
        other => IssueError::temporary(other),
    }
}

/// The pause a rate-limit problem asks for: "retry after 2025-01-02 03:04:05 UTC" when
/// the CA says so, else an hour.
fn rate_limit_delay(detail: Option<&str>) -> Duration {
    const DEFAULT: Duration = Duration::from_secs(3600);
    let Some(detail) = detail else { return DEFAULT };
    let Some(pos) = detail.find("retry after ") else {
        return DEFAULT;
    };
    let text = &detail[pos + "retry after ".len()..];
    let stamp: String = text.chars().take(19).collect();
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    match time::PrimitiveDateTime::parse(&stamp, &format) {
        Ok(at) => {
            let at = at.assume_utc().unix_timestamp();
            let now = system_to_unix(SystemTime::now());
            Duration::from_secs(u64::try_from(at.saturating_sub(now)).unwrap_or(0).max(1))
        }
        Err(_) => DEFAULT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_classified() {
        let problem = |kind: &str| instant_acme::Problem {
            r#type: Some(format!("urn:ietf:params:acme:error:{kind}")),
            detail: Some("retry after 2999-01-01 00:00:00 UTC: too many".into()),
            status: Some(400),
            subproblems: Vec::new(),
        };
        for kind in ["rejectedIdentifier", "unauthorized", "malformed"] {
            let err = map_acme_error(instant_acme::Error::Api(problem(kind)));
            assert!(!err.is_retryable(), "{kind}");
        }
        match map_acme_error(instant_acme::Error::Api(problem("rateLimited"))) {
            IssueError::Temporary {
                retry_after: Some(after),
                ..
            } => assert!(after > Duration::from_secs(86_400)),
            other => panic!("{other:?}"),
        }
        assert!(map_acme_error(instant_acme::Error::Api(problem("serverInternal"))).is_retryable());
        assert_eq!(rate_limit_delay(None), Duration::from_secs(3600));
    }
}
