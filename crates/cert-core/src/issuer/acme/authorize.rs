//! The authorizations of an order: for each, a challenge type chosen by preference among
//! those offered, its data published through storage (or DNS) before the CA is told, so
//! any node can answer, and removed again once the CA is done with it.

use std::time::Instant;

use instant_acme::{AuthorizationStatus, Identifier, Order};

use super::AcmeIssuer;
use super::error::OrderError;
use super::step::{Progress, Retry, Step};
use crate::challenge::{ChallengeType, dns01_record_name};
use crate::issuer::IssueError;

/// What one challenge placed, to clean up afterwards.
pub(super) enum Placed {
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

    pub(super) async fn clean(&self, placed: &[Placed]) {
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

    /// Whether any authorization of the order is still pending at the CA (asked afresh;
    /// an authorization that cannot be fetched counts as pending).
    pub(super) async fn authorizations_pending(&self, order: &mut Order) -> bool {
        let mut pending = false;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let Ok(mut authz) = authz else {
                return true;
            };
            match authz.refresh().await {
                Ok(state) => pending |= state.status == AuthorizationStatus::Pending,
                Err(_) => return true,
            }
        }
        pending
    }

    pub(super) async fn solve(
        &self,
        order: &mut Order,
        excluded: &[ChallengeType],
        placed: &mut Vec<Placed>,
        used: &mut Vec<ChallengeType>,
        progress: &mut Progress,
        deadline: Instant,
    ) -> Result<(), OrderError> {
        let mut retry = Retry::until(deadline);
        // Authorizations already handled, by URL: a failed fetch restarts the walk.
        let mut handled: Vec<String> = Vec::new();
        'walk: loop {
            progress.step = Step::Authorization;
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = match authz {
                    Ok(authz) => authz,
                    Err(err) => {
                        if retry.again(&err, progress).await {
                            continue 'walk;
                        }
                        return Err(err.into());
                    }
                };
                if handled.iter().any(|url| url == authz.url()) {
                    continue;
                }
                handled.push(authz.url().to_owned());
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
                progress.identifier = Some(domain.clone());
                progress.authorization = Some(format!("{:?}", authz.status).to_lowercase());
                match authz.status {
                    AuthorizationStatus::Valid => continue,
                    AuthorizationStatus::Pending => {}
                    other => {
                        return Err(OrderError::Other(IssueError::Rejected {
                            reason: format!("authorization is {other:?}"),
                        }));
                    }
                }
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
                        reason: format!(
                            "no usable challenge type for {domain} (offered {offered:?})"
                        ),
                    }));
                };
                progress.challenge = Some(ty);
                let Some(mut challenge) = authz.challenge(to_acme_type(ty)) else {
                    continue;
                };
                // A challenge the CA is already validating (a resumed order) needs
                // its data in place, not another request.
                let already = challenge.status != instant_acme::ChallengeStatus::Pending;
                let key_authorization = challenge.key_authorization();
                let token = challenge.token.clone();
                progress.step = Step::Challenge;
                // Stored before the CA is told, so any node can answer.
                let item = self
                    .place(ty, &domain, &token, &key_authorization)
                    .await
                    .map_err(|err| OrderError::Challenge(ty, err))?;
                placed.push(item);
                used.push(ty);
                if already {
                    continue;
                }
                let mut tried = false;
                loop {
                    match challenge.set_ready().await {
                        Ok(()) => break,
                        Err(err) if retry.again(&err, progress).await => tried = true,
                        // An earlier try whose answer was lost went through: the
                        // challenge is no longer pending, and the poll tells the rest.
                        Err(_) if tried => break,
                        Err(err) => return Err(err.into()),
                    }
                }
            }
            return Ok(());
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
