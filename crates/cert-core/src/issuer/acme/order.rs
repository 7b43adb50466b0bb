//! One ACME order: challenges chosen by preference, published through storage (or DNS)
//! before the CA is told, validation awaited, the CSR finalized and the chain fetched,
//! and the challenge data removed afterwards.

use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, CertificateIdentifier, Identifier, NewOrder, OrderStatus,
    RetryPolicy as AcmeRetry,
};

use super::AcmeIssuer;
use super::error::{OrderError, is_validation_problem, map_acme_error, validation_failure};
use crate::challenge::{ChallengeType, dns01_record_name};
use crate::issuer::{IssueError, IssueRequest};

/// What one challenge placed, to clean up afterwards.
enum Placed {
    Http01(String),
    TlsAlpn01(String),
    Dns01 { record: String, value: String },
}

impl AcmeIssuer {
    pub(super) fn challenge_order(
        &self,
        wildcard: bool,
        excluded: &[ChallengeType],
    ) -> Vec<ChallengeType> {
        self.config
            .challenge_types
            .iter()
            .copied()
            .filter(|t| !excluded.contains(t))
            .filter(|t| *t != ChallengeType::Dns01 || self.dns.is_some())
            .filter(|t| !wildcard || *t == ChallengeType::Dns01)
            .collect()
    }

    async fn place(
        &self,
        ty: ChallengeType,
        domain: &str,
        token: &str,
        key_authorization: &instant_acme::KeyAuthorization,
    ) -> Result<Placed, IssueError> {
        match ty {
            ChallengeType::Http01 => {
                self.challenges
                    .present_http01(token, key_authorization.as_str())
                    .await?;
                Ok(Placed::Http01(token.to_owned()))
            }
            ChallengeType::TlsAlpn01 => {
                self.challenges
                    .present_tls_alpn01(domain, key_authorization.digest().as_ref())
                    .await?;
                Ok(Placed::TlsAlpn01(domain.to_owned()))
            }
            ChallengeType::Dns01 => {
                let dns = self.dns.as_ref().ok_or_else(|| IssueError::Rejected {
                    reason: "DNS-01 needs a DNS provider".into(),
                })?;
                let record = dns01_record_name(domain);
                let value = key_authorization.dns_value();
                dns.set_txt(&record, &value)
                    .await
                    .map_err(IssueError::temporary)?;
                let placed = Placed::Dns01 { record, value };
                if let Placed::Dns01 { record, value } = &placed
                    && let Err(err) = dns.wait_for_propagation(record, value).await
                {
                    self.clean(std::slice::from_ref(&placed)).await;
                    return Err(IssueError::temporary(err));
                }
                Ok(placed)
            }
        }
    }

    async fn clean(&self, placed: &[Placed]) {
        for item in placed {
            let result = match item {
                Placed::Http01(token) => self
                    .challenges
                    .clear_http01(token)
                    .await
                    .map_err(Into::into),
                Placed::TlsAlpn01(name) => self
                    .challenges
                    .clear_tls_alpn01(name)
                    .await
                    .map_err(Into::into),
                Placed::Dns01 { record, value } => match &self.dns {
                    Some(dns) => dns.clear_txt(record, value).await,
                    None => Ok(()),
                },
            };
            if let Err(err) = result {
                tracing::warn!(error = %err, "removing challenge data failed");
            }
        }
    }

    pub(super) async fn order_once(
        &self,
        account: &Account,
        request: &IssueRequest<'_>,
        excluded: &[ChallengeType],
        replaces: Option<CertificateIdentifier<'static>>,
    ) -> Result<String, OrderError> {
        let identifiers: Vec<Identifier> = request
            .names
            .iter()
            .map(|name| match name.parse::<std::net::IpAddr>() {
                Ok(ip) => Identifier::Ip(ip),
                Err(_) => Identifier::Dns(name.clone()),
            })
            .collect();
        let mut new_order = NewOrder::new(&identifiers);
        if let Some(profile) = &self.config.profile {
            new_order = new_order.profile(profile);
        }
        let mut order = match replaces {
            Some(id) => match account.new_order(&new_order.replaces(id)).await {
                Ok(order) => order,
                Err(err) => {
                    // The CA may not support ARI or refuse this replacement: order plainly.
                    tracing::debug!(error = %err, "ordering with `replaces` failed; ordering without");
                    let mut plain = NewOrder::new(&identifiers);
                    if let Some(profile) = &self.config.profile {
                        plain = plain.profile(profile);
                    }
                    account.new_order(&plain).await?
                }
            },
            None => account.new_order(&new_order).await?,
        };

        let mut placed = Vec::new();
        let mut used = Vec::new();
        let result = self
            .solve(&mut order, excluded, &mut placed, &mut used)
            .await;
        let result = match result {
            Ok(()) => self.wait_ready(&mut order, &used).await,
            Err(err) => Err(err),
        };
        self.clean(&placed).await;
        result?;
        order.finalize_csr(request.csr_der).await?;
        let chain = order
            .poll_certificate(&self.poll_policy())
            .await
            .map_err(map_acme_error)?;
        Ok(chain)
    }

    fn poll_policy(&self) -> AcmeRetry {
        AcmeRetry::new()
            .initial_delay(Duration::from_millis(100))
            .backoff(1.5)
            .timeout(self.config.order_timeout)
    }

    async fn solve(
        &self,
        order: &mut instant_acme::Order,
        excluded: &[ChallengeType],
        placed: &mut Vec<Placed>,
        used: &mut Vec<ChallengeType>,
    ) -> Result<(), OrderError> {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(OrderError::Other(IssueError::Rejected {
                        reason: format!("authorization is {other:?}"),
                    }));
                }
            }
            let identifier = authz.identifier();
            let wildcard = identifier.wildcard;
            let domain = match identifier.identifier {
                Identifier::Dns(d) => d.clone(),
                Identifier::Ip(ip) => ip.to_string(),
                other => {
                    return Err(OrderError::Other(IssueError::Rejected {
                        reason: format!("unsupported identifier {other:?}"),
                    }));
                }
            };
            let offered: Vec<ChallengeType> = authz
                .challenges
                .iter()
                .filter_map(|c| from_acme_type(&c.r#type))
                .collect();
            let Some(ty) = self
                .challenge_order(wildcard, excluded)
                .into_iter()
                .find(|t| offered.contains(t))
            else {
                return Err(OrderError::Other(IssueError::Rejected {
                    reason: format!("no usable challenge type for {domain} (offered {offered:?})"),
                }));
            };
            let Some(mut challenge) = authz.challenge(to_acme_type(ty)) else {
                continue;
            };
            let key_authorization = challenge.key_authorization();
            let token = challenge.token.clone();
            // Stored before the CA is told, so any node can answer.
            let item = self
                .place(ty, &domain, &token, &key_authorization)
                .await
                .map_err(|err| OrderError::Challenge(ty, err))?;
            placed.push(item);
            used.push(ty);
            challenge.set_ready().await?;
        }
        Ok(())
    }

    async fn wait_ready(
        &self,
        order: &mut instant_acme::Order,
        used: &[ChallengeType],
    ) -> Result<(), OrderError> {
        let status = order.poll_ready(&self.poll_policy()).await;
        let failed_type = used.first().copied();
        match status {
            Ok(OrderStatus::Ready) => Ok(()),
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
}

fn from_acme_type(ty: &instant_acme::ChallengeType) -> Option<ChallengeType> {
    match ty {
        instant_acme::ChallengeType::Http01 => Some(ChallengeType::Http01),
        instant_acme::ChallengeType::TlsAlpn01 => Some(ChallengeType::TlsAlpn01),
        instant_acme::ChallengeType::Dns01 => Some(ChallengeType::Dns01),
        _ => None,
    }
}

fn to_acme_type(ty: ChallengeType) -> instant_acme::ChallengeType {
    match ty {
        ChallengeType::Http01 => instant_acme::ChallengeType::Http01,
        ChallengeType::TlsAlpn01 => instant_acme::ChallengeType::TlsAlpn01,
        ChallengeType::Dns01 => instant_acme::ChallengeType::Dns01,
    }
}
