//! One ACME order: placed (or resumed from the record storage keeps of it), its
//! authorizations answered ([`super::authorize`]), validation awaited by a poll loop that
//! uses its whole deadline, the CSR finalized and the chain fetched. Each request is
//! retried at its own step ([`super::step`]).
//!
//! The order's URL is stored under [`keys::acme_order`] as soon as the CA accepts it,
//! with the names and the public key it is for. A later call for the same names and the
//! same key, on any node and after a restart, resumes that order wherever it stands, so a
//! certificate the CA issued is downloaded, never ordered again. The engine asks again
//! with the same key until the certificate is saved
//! ([`Issuer::resumes_issuance`](crate::issuer::Issuer::resumes_issuance)).

use std::time::{Duration, Instant};

use instant_acme::{
    Account, AuthorizationStatus, CertificateIdentifier, Identifier, NewOrder, Order, OrderStatus,
};
use serde::{Deserialize, Serialize};

use super::AcmeIssuer;
use super::error::{OrderError, is_validation_problem, map_acme_error, validation_failure};
use super::step::{Progress, Retry, Step, is_transient};
use crate::challenge::ChallengeType;
use crate::issuer::{IssueError, IssueRequest};
use crate::{StorageExt, keys};

/// The first pause of the poll loop (growing by half each time).
const POLL_FIRST: Duration = Duration::from_millis(250);
/// The longest pause of the poll loop, unless the CA asks for longer with `Retry-After`.
const POLL_MAX: Duration = Duration::from_secs(2);

/// The order last placed for a name, as storage keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct OrderRecord {
    url: String,
    names: Vec<String>,
    /// The PEM public key the order is to certify.
    public_key: String,
}

impl AcmeIssuer {
    /// One order, from placing (or resuming) it to its chain. Every failure carries
    /// where the order stood.
    pub(super) async fn order_once(
        &self,
        account: &Account,
        request: &IssueRequest<'_>,
        excluded: &[ChallengeType],
        replaces: Option<CertificateIdentifier<'static>>,
    ) -> Result<String, OrderError> {
        let mut progress = Progress::new(request.names);
        let deadline = Instant::now() + self.config.order_timeout;
        let result = async {
            let mut order = match self
                .resume(account, request, &mut progress, deadline)
                .await?
            {
                Some(order) => order,
                None => {
                    self.place_order(account, request, replaces, &mut progress, deadline)
                        .await?
                }
            };
            self.drive(&mut order, request, excluded, &mut progress, deadline)
                .await
        }
        .await;
        crate::metrics::acme_order(result.is_ok());
        result.map_err(|err| {
            let err = err.with_context(&progress);
            tracing::warn!(
                names = %progress.names.join(","),
                step = %progress.step,
                order = progress.url.as_deref().unwrap_or("none"),
                error = %err.issue_error(),
                "ACME order failed"
            );
            err
        })
    }

    /// The stored order for these names and this key, when the CA still has it in a
    /// state worth going on from.
    async fn resume(
        &self,
        account: &Account,
        request: &IssueRequest<'_>,
        progress: &mut Progress,
        deadline: Instant,
    ) -> Result<Option<Order>, OrderError> {
        let Some(primary) = request.names.first() else {
            return Ok(None);
        };
        let key = keys::acme_order(&self.config.directory_url, primary);
        let Some(bytes) = self.storage.load_opt(&key).await? else {
            return Ok(None);
        };
        let record: OrderRecord = match serde_json::from_slice(&bytes) {
            Ok(record) => record,
            Err(err) => {
                tracing::warn!(key, error = %err, "unreadable order record; placing a new order");
                return Ok(None);
            }
        };
        if record.names != request.names || record.public_key != request.public_key_pem {
            return Ok(None);
        }
        progress.step = Step::ResumeOrder;
        progress.url = Some(record.url.clone());
        let mut retry = Retry::until(deadline);
        let order = loop {
            match account.order(record.url.clone()).await {
                Ok(order) => break order,
                Err(err) if retry.again(&err, progress).await => {}
                // The CA is unreachable: a new order would fail the same way.
                Err(err) if is_transient(&err) => return Err(err.into()),
                Err(err) => {
                    tracing::info!(order = record.url, error = %err, "the stored order cannot be resumed; placing a new one");
                    progress.url = None;
                    return Ok(None);
                }
            }
        };
        let mut order = order;
        let status = order.state().status;
        if status == OrderStatus::Invalid {
            progress.url = None;
            return Ok(None);
        }
        tracing::info!(names = %request.names.join(","), order = record.url, ?status, "resuming an ACME order");
        Ok(Some(order))
    }

    async fn place_order(
        &self,
        account: &Account,
        request: &IssueRequest<'_>,
        replaces: Option<CertificateIdentifier<'static>>,
        progress: &mut Progress,
        deadline: Instant,
    ) -> Result<Order, OrderError> {
        progress.step = Step::NewOrder;
        let identifiers: Vec<Identifier> = request
            .names
            .iter()
            .map(|name| match name.parse::<std::net::IpAddr>() {
                Ok(ip) => Identifier::Ip(ip),
                Err(_) => Identifier::Dns(name.clone()),
            })
            .collect();
        let plain = || {
            let order = NewOrder::new(&identifiers);
            match &self.config.profile {
                Some(profile) => order.profile(profile),
                None => order,
            }
        };
        let mut replaces = replaces;
        let mut retry = Retry::until(deadline);
        let order = loop {
            let attempt = match &replaces {
                Some(id) => account.new_order(&plain().replaces(id.clone())).await,
                None => account.new_order(&plain()).await,
            };
            match attempt {
                Ok(order) => break order,
                Err(err) if retry.again(&err, progress).await => {}
                Err(err) if replaces.is_some() => {
                    // The CA may not support ARI or refuse this replacement: order plainly.
                    tracing::debug!(error = %err, "ordering with `replaces` failed; ordering without");
                    replaces = None;
                }
                Err(err) => return Err(err.into()),
            }
        };
        progress.url = Some(order.url().to_owned());
        let record = OrderRecord {
            url: order.url().to_owned(),
            names: request.names.to_vec(),
            public_key: request.public_key_pem.to_owned(),
        };
        let key = keys::acme_order(
            &self.config.directory_url,
            request.names.first().map_or("", String::as_str),
        );
        // Without the record the order still goes on; it just cannot be resumed.
        match serde_json::to_vec(&record) {
            Ok(bytes) => {
                if let Err(err) = self.storage.store(&key, &bytes).await {
                    tracing::warn!(key, error = %err, "storing the order record failed");
                }
            }
            Err(err) => tracing::warn!(key, error = %err, "encoding the order record failed"),
        }
        Ok(order)
    }

    /// Takes an order from wherever it stands to its chain.
    async fn drive(
        &self,
        order: &mut Order,
        request: &IssueRequest<'_>,
        excluded: &[ChallengeType],
        progress: &mut Progress,
        deadline: Instant,
    ) -> Result<String, OrderError> {
        if order.state().status == OrderStatus::Pending {
            let mut placed = Vec::new();
            let mut used = Vec::new();
            let mut result = self
                .solve(order, excluded, &mut placed, &mut used, progress, deadline)
                .await;
            if result.is_ok() {
                result = self.wait_ready(order, &used, progress, deadline).await;
            }
            match &result {
                Ok(()) => used
                    .iter()
                    .for_each(|ty| crate::metrics::acme_challenge(ty.as_str(), true)),
                Err(OrderError::Challenge(ty, _)) => {
                    crate::metrics::acme_challenge(ty.as_str(), false);
                }
                Err(_) => {}
            }
            // Challenge data goes only once the CA is done with it: an authorization
            // still pending may be validating right now, and a resumed order uses it.
            if result.is_ok() || !self.authorizations_pending(order).await {
                self.clean(&placed).await;
            }
            result?;
        }
        if order.state().status == OrderStatus::Ready {
            self.finalize(order, request, progress, deadline).await?;
        }
        if order.state().status == OrderStatus::Processing {
            progress.step = Step::Issuance;
            let status = self
                .poll(order, progress, deadline, |s| s != OrderStatus::Processing)
                .await
                .map_err(|err| OrderError::Other(map_acme_error(err)))?;
            if status == OrderStatus::Processing {
                return Err(timeout(progress));
            }
        }
        match order.state().status {
            OrderStatus::Valid => self.download(order, progress, deadline).await,
            status => Err(OrderError::Other(IssueError::temporary(
                order
                    .state()
                    .error
                    .as_ref()
                    .map_or_else(|| format!("the order is {status:?}"), |p| p.to_string()),
            ))),
        }
    }

    async fn finalize(
        &self,
        order: &mut Order,
        request: &IssueRequest<'_>,
        progress: &mut Progress,
        deadline: Instant,
    ) -> Result<(), OrderError> {
        progress.step = Step::Finalize;
        let mut retry = Retry::until(deadline);
        let mut tried = false;
        loop {
            let err = match order.finalize_csr(request.csr_der).await {
                Ok(()) => return Ok(()),
                Err(err) => err,
            };
            if retry.again(&err, progress).await {
                tried = true;
                continue;
            }
            // An earlier try whose answer was lost may have gone through: the order then
            // moved on, and refusing this one says nothing.
            if tried
                && let Ok(state) = order.refresh().await
                && matches!(state.status, OrderStatus::Processing | OrderStatus::Valid)
            {
                return Ok(());
            }
            return Err(err.into());
        }
    }

    async fn download(
        &self,
        order: &mut Order,
        progress: &mut Progress,
        deadline: Instant,
    ) -> Result<String, OrderError> {
        progress.step = Step::Download;
        // The chain is worth more time than the order's deadline left: the CA issued it.
        let mut retry = Retry::until(deadline.max(Instant::now() + Duration::from_secs(30)));
        loop {
            match order.certificate().await {
                Ok(Some(chain)) => return Ok(chain),
                Ok(None) => {
                    return Err(OrderError::Other(IssueError::temporary(
                        "the CA issued no certificate for a valid order",
                    )));
                }
                Err(err) if retry.again(&err, progress).await => {}
                Err(err) => return Err(OrderError::Other(map_acme_error(err))),
            }
        }
    }

    /// Refreshes the order until `done` holds for its status or the deadline has come,
    /// pausing a quarter second at first, then half as long again each time up to
    /// [`POLL_MAX`], or as long as the CA asks with `Retry-After`; the last poll is at the
    /// deadline itself. Returns the last status seen; a problem the order carries is an
    /// error.
    async fn poll(
        &self,
        order: &mut Order,
        progress: &mut Progress,
        deadline: Instant,
        done: impl Fn(OrderStatus) -> bool,
    ) -> Result<OrderStatus, instant_acme::Error> {
        let http = self.http().ok();
        let mut pause = POLL_FIRST;
        loop {
            let mut retry = Retry::until(deadline);
            let state = loop {
                match order.refresh().await {
                    Ok(state) => break state,
                    Err(err) if retry.again(&err, progress).await => {}
                    Err(err) => return Err(err),
                }
            };
            if let Some(problem) = &state.error {
                return Err(instant_acme::Error::Api(problem.clone()));
            }
            let status = state.status;
            if done(status) {
                return Ok(status);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(status);
            }
            let asked = http
                .as_ref()
                .and_then(|http| http.retry_after(order.url()))
                .and_then(|at| at.duration_since(std::time::SystemTime::now()).ok());
            let wait = asked.unwrap_or(pause).min(deadline - now);
            tokio::time::sleep(wait).await;
            pause = pause.mul_f64(1.5).min(POLL_MAX);
        }
    }

    async fn wait_ready(
        &self,
        order: &mut Order,
        used: &[ChallengeType],
        progress: &mut Progress,
        deadline: Instant,
    ) -> Result<(), OrderError> {
        progress.step = Step::Validation;
        let status = self
            .poll(order, progress, deadline, |s| {
                !matches!(s, OrderStatus::Pending)
            })
            .await;
        let failed_type = used.first().copied();
        match status {
            Ok(OrderStatus::Ready | OrderStatus::Processing | OrderStatus::Valid) => Ok(()),
            Ok(OrderStatus::Pending) => {
                progress.authorization = self.first_authorization_status(order).await;
                Err(timeout(progress))
            }
            Ok(status) => {
                let detail = order
                    .state()
                    .error
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| format!("order is {status:?}"));
                Err(validation_failure(failed_type, detail))
            }
            Err(instant_acme::Error::Api(problem)) if is_validation_problem(&problem) => {
                Err(validation_failure(failed_type, problem.to_string()))
            }
            Err(err) => Err(OrderError::Other(map_acme_error(err))),
        }
    }

    /// The status of the first authorization not yet valid, asked afresh.
    async fn first_authorization_status(&self, order: &mut Order) -> Option<String> {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.ok()?;
            let state = authz.refresh().await.ok()?;
            if state.status != AuthorizationStatus::Valid {
                return Some(format!("{:?}", state.status).to_lowercase());
            }
        }
        None
    }
}

/// The order's deadline came while the CA was still working.
fn timeout(progress: &Progress) -> OrderError {
    OrderError::Other(IssueError::temporary(format!(
        "the order timed out after {:.1} s",
        progress.started.elapsed().as_secs_f64()
    )))
}
