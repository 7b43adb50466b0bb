//! The doctor's check of database connections: verified TLS to any server on another
//! machine.

use super::{Check, Status, check};

/// Whether the connection to a PostgreSQL, MySQL or Redis server on another machine is
/// TLS with the server's certificate verified; `None` for other backends.
///
/// Passwords and certificates cross the network in the clear without TLS, and TLS
/// without verification gives way to anyone on the path. Loopback hosts and Unix sockets
/// pass: nothing leaves the machine. Only the URL is read (`sslmode` / `ssl-mode` and the
/// scheme), not driver defaults from the environment.
pub(super) fn database_tls(url: &certstore::StorageUrl) -> Option<Check> {
    use certstore::{Backend, Target};
    const NAME: &str = "database tls";
    let backend = url.backend();
    if !matches!(backend, Backend::Postgres | Backend::MySql | Backend::Redis) {
        return None;
    }
    let hosts = url.hosts();
    let remote: Vec<&String> = hosts.iter().filter(|h| !is_loopback(h)).collect();
    if remote.is_empty() {
        return Some(check(
            NAME,
            Status::Pass,
            "loopback or local socket: nothing crosses the network",
            "",
        ));
    }
    let param = |names: &[&str]| {
        url.driver_params()
            .into_iter()
            .rev()
            .find(|(name, _)| names.contains(&name.to_ascii_lowercase().as_str()))
            .map(|(_, value)| value)
    };
    let (verified, shown, hint) = match backend {
        Backend::Postgres => {
            let mode = param(&["sslmode", "ssl-mode"]);
            let verified = mode.as_deref().is_some_and(|m| {
                m.eq_ignore_ascii_case("verify-full") || m.eq_ignore_ascii_case("verify-ca")
            });
            (
                verified,
                format!("sslmode={}", mode.as_deref().unwrap_or("(not set: prefer)")),
                "add sslmode=verify-full (and sslrootcert=<CA file> if the server's CA is private)",
            )
        }
        Backend::MySql => {
            let mode = param(&["ssl-mode", "sslmode", "ssl_mode"]);
            let verified = mode.as_deref().is_some_and(|m| {
                m.eq_ignore_ascii_case("verify_identity") || m.eq_ignore_ascii_case("verify_ca")
            });
            (
                verified,
                format!(
                    "ssl-mode={}",
                    mode.as_deref().unwrap_or("(not set: preferred)")
                ),
                "add ssl-mode=VERIFY_IDENTITY (and ssl-ca=<CA file> if the server's CA is private)",
            )
        }
        _ => {
            let Target::Redis { url: driver, .. } = url.target() else {
                return None;
            };
            let tls = driver
                .get(..9)
                .is_some_and(|s| s.eq_ignore_ascii_case("rediss://"));
            // `#insecure` makes the Redis client skip certificate verification. The
            // password in the driver URL is percent-encoded, so a `#` is a fragment.
            let insecure = driver
                .split_once('#')
                .is_some_and(|(_, fragment)| fragment.eq_ignore_ascii_case("insecure"));
            let shown = match (tls, insecure) {
                (false, _) => "redis:// (no TLS)",
                (true, true) => "rediss:// with #insecure (certificate not verified)",
                (true, false) => "rediss://",
            };
            (
                tls && !insecure,
                shown.to_owned(),
                "use rediss:// (without #insecure) so the server's certificate is verified",
            )
        }
    };
    let hosts: Vec<&str> = remote.iter().map(|h| h.as_str()).collect();
    Some(if verified {
        check(
            NAME,
            Status::Pass,
            format!("verified TLS to {} ({shown})", hosts.join(", ")),
            "",
        )
    } else {
        check(
            NAME,
            Status::Warn,
            format!(
                "{backend} connection to {} is not verified TLS ({shown})",
                hosts.join(", ")
            ),
            hint,
        )
    })
}

/// Whether `host` names this machine (`localhost`, `127.0.0.0/8`, `::1`).
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        // A Unix socket directory given as the host (`%2Frun%2Fpostgresql`).
        || host.starts_with('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(url: &str) -> Option<(Status, String)> {
        let url = certstore::StorageUrl::parse(url).unwrap();
        database_tls(&url).map(|c| (c.status, c.detail))
    }

    #[test]
    fn unverified_database_connections_are_reported() {
        for url in [
            "postgres://app:pw@db.internal/certs",
            "postgres://app:pw@db.internal/certs?sslmode=require",
            "postgresql://app:pw@10.0.0.5/certs?sslmode=prefer",
            "postgres://app:pw@localhost,db2.internal/certs?sslmode=disable",
            "mysql://root:pw@db.internal/certs",
            "mysql://root:pw@db.internal/certs?ssl-mode=REQUIRED",
            "mariadb://root:pw@db.internal/certs?ssl-mode=preferred",
            "redis://:pw@cache.internal:6379/0",
            "rediss://:pw@cache.internal:6380/0#insecure",
            "encrypted+redis://:p/w#x@cache.internal/0",
        ] {
            let (status, detail) = status(url).unwrap();
            assert_eq!(status, Status::Warn, "{url}: {detail}");
            assert!(detail.contains("not verified TLS"), "{url}: {detail}");
            assert!(!detail.contains("pw"), "{url}: {detail}");
        }
    }

    #[test]
    fn verified_or_local_connections_pass() {
        for url in [
            "postgres://app:pw@db.internal/certs?sslmode=verify-full",
            "postgres://app:pw@db.internal/certs?sslmode=verify-ca&namespace=n",
            "mysql://root:pw@db.internal/certs?ssl-mode=VERIFY_IDENTITY",
            "mysql://root:pw@db.internal/certs?ssl-mode=verify_ca",
            "rediss://:pw@cache.internal:6380/0",
            "redis://:pw@127.0.0.1:6379/0",
            "redis://localhost",
            "postgres://app:pw@[::1]:5432/certs",
            "mysql://root:pw@127.0.0.2/certs",
            "postgres://app@%2Frun%2Fpostgresql/certs",
        ] {
            let (status, detail) = status(url).unwrap();
            assert_eq!(status, Status::Pass, "{url}: {detail}");
        }
        for url in ["sqlite:///tmp/x.db", "/var/lib/certstore", "s3://bucket"] {
            assert!(status(url).is_none(), "{url}");
        }
    }
}
