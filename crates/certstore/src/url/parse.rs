//! Parsing storage URLs: the scheme picks the backend, certstore's own query parameters
//! are taken out, and the rest is handed to the backend's driver.

use std::path::PathBuf;

use super::{StorageUrl, Target, UrlError};
use crate::redact::{Parts, encode_userinfo, percent_decode, redact};

pub(super) fn invalid(raw: &str, reason: impl Into<String>) -> UrlError {
    UrlError::Invalid {
        url: redact(raw),
        reason: reason.into(),
    }
}

/// A query string split into decoded `(name, value)` pairs, in order.
pub(super) fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn parse_bool(raw: &str, name: &str, value: &str) -> Result<bool, UrlError> {
    match value.to_ascii_lowercase().as_str() {
        "" | "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(invalid(
            raw,
            format!("{name} must be true or false, not {value:?}"),
        )),
    }
}

/// Removes certstore's own parameters (`names`) from `url`'s query; returns the URL
/// without them and their values.
///
/// The user-info part ends at the last `@` (see [`redact`]) and is handed on with `/`,
/// `?`, `#` and `@` percent-encoded, so the driver reads an unencoded password as it was
/// meant; the query starts at the first `?` after it. A URL that a strict parser reads
/// the same way comes out unchanged.
fn take_params(url: &str, names: &[&str]) -> (String, Vec<(String, String)>) {
    let (head, rest) = match Parts::split(url) {
        Some(Parts {
            scheme,
            userinfo: Some(userinfo),
            rest,
        }) => (format!("{scheme}://{}@", encode_userinfo(userinfo)), rest),
        Some(Parts { scheme, rest, .. }) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let (base, query) = match rest.split_once('?') {
        Some((base, query)) => (base, query),
        None => return (format!("{head}{rest}"), Vec::new()),
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let name = percent_decode(part.split_once('=').map_or(part, |(k, _)| k));
        if names.contains(&name.as_str()) {
            let value = part.split_once('=').map_or("", |(_, v)| v);
            taken.push((name, percent_decode(value)));
        } else {
            kept.push(part);
        }
    }
    let url = if kept.is_empty() {
        format!("{head}{base}")
    } else {
        format!("{head}{base}?{}", kept.join("&"))
    };
    (url, taken)
}

fn check_prefix(raw: &str, prefix: &str) -> Result<(), UrlError> {
    cert_core::validate_prefix(prefix)
        .map_err(|err| invalid(raw, format!("prefix {prefix:?}: {err}")))
}

fn cert_sql_identifier(raw: &str, prefix: &str) -> Result<(), UrlError> {
    let mut chars = prefix.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') || prefix.len() > 40 {
        return Err(invalid(
            raw,
            format!(
                "table_prefix {prefix:?} must be an identifier ([A-Za-z_][A-Za-z0-9_]*, at most 40 bytes)"
            ),
        ));
    }
    Ok(())
}

impl StorageUrl {
    /// Parses `url` (see the type docs for the forms accepted). Sends nothing anywhere.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let trimmed = url.trim();
        if trimmed.is_empty() {
            return Err(invalid(url, "it is empty"));
        }
        if let Some(inner) = trimmed.strip_prefix("encrypted+") {
            let mut parsed = Self::parse(inner)?;
            if parsed.encrypted {
                return Err(invalid(url, "encrypted+ appears twice"));
            }
            parsed.encrypted = true;
            parsed.raw = trimmed.to_owned();
            return Ok(parsed);
        }
        let target = Self::parse_target(trimmed)?;
        Ok(StorageUrl {
            raw: trimmed.to_owned(),
            encrypted: false,
            target,
        })
    }

    fn parse_target(raw: &str) -> Result<Target, UrlError> {
        let Some((scheme, rest)) = raw.split_once("://") else {
            if raw.starts_with("sqlite:") {
                return Self::parse_sql(raw);
            }
            return Ok(Target::File {
                path: PathBuf::from(raw),
            });
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                let path = percent_decode(rest.split(['?', '#']).next().unwrap_or_default());
                if path.is_empty() {
                    return Err(invalid(raw, "no path after file://"));
                }
                Ok(Target::File {
                    path: PathBuf::from(path),
                })
            }
            "redis" | "rediss" => {
                let (url, params) = take_params(raw, &["namespace"]);
                let namespace = params
                    .into_iter()
                    .find(|(k, _)| k == "namespace")
                    .map_or_else(|| "certstore".to_owned(), |(_, v)| v);
                if namespace.is_empty() || namespace.contains(['{', '}']) {
                    return Err(invalid(
                        raw,
                        "namespace must be non-empty and without braces",
                    ));
                }
                Ok(Target::Redis { url, namespace })
            }
            "postgres" | "postgresql" | "mysql" | "mariadb" | "sqlite" => Self::parse_sql(raw),
            "s3" => Self::parse_s3(raw, rest),
            "azblob" => Self::parse_azure(raw, rest),
            other => Err(UrlError::UnknownScheme {
                scheme: other.to_owned(),
                url: redact(raw),
            }),
        }
    }

    fn parse_sql(raw: &str) -> Result<Target, UrlError> {
        let (url, params) = take_params(raw, &["namespace", "table_prefix"]);
        let mut namespace = String::new();
        let mut table_prefix = None;
        for (name, value) in params {
            match name.as_str() {
                "namespace" => namespace = value,
                _ => {
                    cert_sql_identifier(raw, &value)?;
                    table_prefix = Some(value);
                }
            }
        }
        Ok(Target::Sql {
            url,
            namespace,
            table_prefix,
        })
    }

    fn parse_s3(raw: &str, rest: &str) -> Result<Target, UrlError> {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let path = path.trim_end_matches('/');
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err(invalid(raw, "no bucket: use s3://bucket/prefix"));
        }
        let prefix = percent_decode(prefix);
        check_prefix(raw, &prefix)?;
        let (mut endpoint, mut region, mut path_style) = (None, None, false);
        for (name, value) in query_pairs(query) {
            match name.as_str() {
                "endpoint" => endpoint = Some(value),
                "region" => region = Some(value),
                "path_style" => path_style = parse_bool(raw, &name, &value)?,
                other => {
                    return Err(invalid(
                        raw,
                        format!(
                            "unknown parameter {other:?} (known: endpoint, region, path_style; credentials come from the AWS environment)"
                        ),
                    ));
                }
            }
        }
        Ok(Target::S3 {
            bucket: bucket.to_owned(),
            prefix,
            endpoint,
            region,
            path_style,
        })
    }

    fn parse_azure(raw: &str, rest: &str) -> Result<Target, UrlError> {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut parts = path.trim_end_matches('/').splitn(3, '/');
        let account = parts.next().unwrap_or_default();
        let container = parts.next().unwrap_or_default();
        let prefix = percent_decode(parts.next().unwrap_or_default());
        if account.is_empty() || container.is_empty() {
            return Err(invalid(raw, "use azblob://account/container[/prefix]"));
        }
        check_prefix(raw, &prefix)?;
        let mut endpoint = None;
        for (name, value) in query_pairs(query) {
            match name.as_str() {
                "endpoint" => endpoint = Some(value),
                other => {
                    return Err(invalid(
                        raw,
                        format!(
                            "unknown parameter {other:?} (known: endpoint; credentials come from AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_KEY)"
                        ),
                    ));
                }
            }
        }
        Ok(Target::Azure {
            account: account.to_owned(),
            container: container.to_owned(),
            prefix,
            endpoint,
        })
    }
}
