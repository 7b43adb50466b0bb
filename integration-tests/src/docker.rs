//! The fallback for a missing `CERTSTORE_TEST_*` variable on a machine with a Docker
//! engine: the server is started with `testcontainers` as a named container on a fixed
//! loopback port, so every test process of a run (nextest runs each test in its own
//! process) finds and shares the first one's container instead of starting another.
//!
//! The containers are left running for the next run; remove them with
//! `docker rm -f $(docker ps -aq --filter name=certstore-test-)`.

use std::time::{Duration, Instant};

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};

use crate::probe::{self, Protocol};

/// One server the tests can get from Docker.
struct Service {
    var: &'static str,
    container: &'static str,
    image: (&'static str, &'static str),
    port: u16,
    host_port: u16,
    protocol: Protocol,
    env: &'static [(&'static str, &'static str)],
    cmd: &'static [&'static str],
    url: &'static str,
}

/// The same images and credentials as `docker-compose.yml`, on ports of their own so they
/// never collide with servers started without Docker.
const SERVICES: &[Service] = &[
    Service {
        var: "CERTSTORE_TEST_POSTGRES_URL",
        container: "certstore-test-postgres",
        image: ("postgres", "15"),
        port: 5432,
        host_port: 25432,
        protocol: Protocol::Postgres,
        env: &[
            ("POSTGRES_USER", "certstore"),
            ("POSTGRES_PASSWORD", "certstore"),
            ("POSTGRES_DB", "certstore_test"),
        ],
        cmd: &[],
        url: "postgres://certstore:certstore@127.0.0.1:25432/certstore_test",
    },
    Service {
        var: "CERTSTORE_TEST_MYSQL_URL",
        container: "certstore-test-mariadb",
        image: ("mariadb", "10.11"),
        port: 3306,
        host_port: 23306,
        protocol: Protocol::Mysql,
        env: &[
            ("MARIADB_USER", "certstore"),
            ("MARIADB_PASSWORD", "certstore"),
            ("MARIADB_DATABASE", "certstore_test"),
            ("MARIADB_ALLOW_EMPTY_ROOT_PASSWORD", "1"),
        ],
        cmd: &[],
        url: "mysql://certstore:certstore@127.0.0.1:23306/certstore_test",
    },
    Service {
        var: "CERTSTORE_TEST_REDIS_URL",
        container: "certstore-test-redis",
        image: ("redis", "7.0"),
        port: 6379,
        host_port: 26379,
        protocol: Protocol::Redis,
        env: &[],
        cmd: &["redis-server", "--save", "", "--appendonly", "no"],
        url: "redis://127.0.0.1:26379/",
    },
    Service {
        var: "CERTSTORE_TEST_S3_URL",
        container: "certstore-test-minio",
        image: ("minio/minio", "latest"),
        port: 9000,
        host_port: 29000,
        protocol: Protocol::Http,
        env: &[
            ("MINIO_ROOT_USER", "certstore"),
            ("MINIO_ROOT_PASSWORD", "certstore-secret"),
        ],
        cmd: &["server", "/data", "--address", ":9000"],
        url: "http://127.0.0.1:29000",
    },
    Service {
        var: "CERTSTORE_TEST_AZURE_URL",
        container: "certstore-test-azurite",
        image: ("mcr.microsoft.com/azure-storage/azurite", "latest"),
        port: 10000,
        host_port: 20000,
        protocol: Protocol::Http,
        env: &[],
        cmd: &[
            "azurite-blob",
            "--blobHost",
            "0.0.0.0",
            "--blobPort",
            "10000",
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
        ],
        url: "http://127.0.0.1:20000/devstoreaccount1",
    },
];

/// How long a container may take to answer after it was started (an image pull included).
const STARTUP: Duration = Duration::from_secs(300);

/// The URL of the server for `var`, from a container: `Ok(None)` when Docker cannot help
/// (no such service, or no engine), `Err` when the engine is there but the server did not
/// come up.
pub(crate) fn url_for(var: &str) -> Result<Option<String>, String> {
    let Some(service) = SERVICES.iter().find(|s| s.var == var) else {
        return Ok(None);
    };
    let addr = format!("127.0.0.1:{}", service.host_port);
    if probe::ready(service.protocol, &addr) {
        return Ok(Some(service.url.to_owned()));
    }
    let docker_host = std::env::var("DOCKER_HOST").ok();
    if !probe::docker_engine(docker_host.as_deref()) {
        return Ok(None);
    }
    eprintln!(
        "{var} is not set: starting {} ({}:{}) with Docker on {addr}",
        service.container, service.image.0, service.image.1
    );
    // The runner needs a runtime of its own, which cannot nest in the test's: a thread.
    let started = std::thread::scope(|scope| {
        scope
            .spawn(|| start(service))
            .join()
            .unwrap_or_else(|_| Err("the container start panicked".to_owned()))
    });
    // Another test process may have started it first (a name conflict): either way the
    // server must now come up on its port.
    let deadline = Instant::now() + STARTUP;
    while Instant::now() < deadline {
        if probe::ready(service.protocol, &addr) {
            return Ok(Some(service.url.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(format!(
        "{} did not answer on {addr} (start: {})",
        service.container,
        started.err().unwrap_or_else(|| "ok".to_owned())
    ))
}

/// Publishes every mapped port on 127.0.0.1 only.
fn bind_to_loopback(host_config: &mut testcontainers::bollard::models::HostConfig) {
    for bindings in host_config
        .port_bindings
        .iter_mut()
        .flat_map(|map| map.values_mut())
    {
        for binding in bindings.iter_mut().flatten() {
            binding.host_ip = Some("127.0.0.1".to_owned());
        }
    }
}

fn start(service: &Service) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut request = GenericImage::new(service.image.0, service.image.1)
            .with_exposed_port(service.port.tcp())
            .with_wait_for(WaitFor::Nothing)
            .with_container_name(service.container)
            .with_mapped_port(service.host_port, service.port.tcp())
            // Docker publishes a mapped port on every interface unless told otherwise;
            // these servers have well-known test credentials, so only this machine may
            // reach them (as docker-compose.yml binds them).
            .with_host_config_modifier(bind_to_loopback);
        for (key, value) in service.env {
            request = request.with_env_var(*key, *value);
        }
        if !service.cmd.is_empty() {
            request = request.with_cmd(service.cmd.iter().copied());
        }
        let container = request.start().await.map_err(|e| e.to_string())?;
        // Kept running for the other test processes of this run and later runs.
        std::mem::forget(container);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use testcontainers::bollard::models::{HostConfig, PortBinding};

    use super::bind_to_loopback;

    #[test]
    fn mapped_ports_are_published_on_loopback_only() {
        let mut host_config = HostConfig {
            port_bindings: Some(HashMap::from([(
                "5432/tcp".to_owned(),
                Some(vec![PortBinding {
                    host_ip: None,
                    host_port: Some("25432".to_owned()),
                }]),
            )])),
            ..HostConfig::default()
        };
        bind_to_loopback(&mut host_config);
        let bindings = host_config.port_bindings.unwrap();
        let binding = &bindings["5432/tcp"].as_ref().unwrap()[0];
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(binding.host_port.as_deref(), Some("25432"));
    }
}
