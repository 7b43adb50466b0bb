//! Redis through `redis-cli`: each value is the string `{ns}:v:<key>` holding its exact
//! bytes, listed in the sorted set `{ns}:index`, its modification time in the hash
//! `{ns}:modified`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use integration_tests::{service_url, unique_name};

use super::native::{Native, client};
use super::record::{certstore_writes_native_reads, cleared, native_writes_certstore_reads, now};

/// A namespace on the test server, and `redis-cli`.
struct Redis {
    cli: PathBuf,
    server: String,
    ns: String,
}

impl Redis {
    /// Runs `redis-cli` with `args` (and `input` on its standard input, for `-x`); its
    /// output, which must come with success.
    fn cli(&self, args: &[&str], input: &[u8]) -> Vec<u8> {
        let mut child = Command::new(&self.cli)
            .args(["-u", &self.server, "--raw"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("redis-cli: {err}"));
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "redis-cli {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn lines(&self, args: &[&str]) -> Vec<String> {
        String::from_utf8(self.cli(args, b""))
            .unwrap()
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn name(&self, suffix: &str) -> String {
        format!("{{{}}}:{suffix}", self.ns)
    }
}

impl Native for Redis {
    fn url(&self) -> String {
        format!(
            "{}?namespace={}",
            self.server.trim_end_matches('/'),
            self.ns
        )
    }

    fn put(&self, values: &[(String, Vec<u8>)]) {
        let nanos = (now() * 1_000_000_000).to_string();
        for (key, value) in values {
            // `-x`: the last argument is read from standard input, byte for byte.
            self.cli(&["-x", "SET", &self.name(&format!("v:{key}"))], value);
            self.cli(&["HSET", &self.name("modified"), key, &nanos], b"");
            self.cli(&["ZADD", &self.name("index"), "0", key], b"");
        }
    }

    /// Also checks what the layout says of the time field: nanoseconds since the Unix
    /// epoch, one per listed value, and nothing listed without its string.
    fn dump(&self) -> BTreeMap<String, Vec<u8>> {
        let keys = self.lines(&["ZRANGE", &self.name("index"), "0", "-1"]);
        let recent = (now() - 3600) * 1_000_000_000..(now() + 60) * 1_000_000_000;
        let mut values = BTreeMap::new();
        for key in keys {
            let mut bytes = self.cli(&["GET", &self.name(&format!("v:{key}"))], b"");
            // `--raw` prints the string's bytes, then a newline of its own.
            assert_eq!(
                bytes.pop(),
                Some(b'\n'),
                "{key}: redis-cli's closing newline"
            );
            let time = self.lines(&["HGET", &self.name("modified"), &key]);
            let time: i64 = time.first().and_then(|t| t.parse().ok()).unwrap_or(0);
            assert!(recent.contains(&time), "{key}: modified {time}");
            values.insert(key, bytes);
        }
        values
    }

    fn clear(&self) {
        let pattern = format!("{{{}}}:*", self.ns);
        for name in self.lines(&["--scan", "--pattern", &pattern]) {
            self.cli(&["DEL", &name], b"");
        }
    }
}

fn redis() -> Option<Redis> {
    let server = service_url("CERTSTORE_TEST_REDIS_URL")?;
    let cli = client("CERTSTORE_TEST_REDIS_CLI", &["redis-cli"])?;
    Some(Redis {
        cli,
        server,
        ns: unique_name("interop"),
    })
}

#[test]
fn redis_cli_reads_what_certstore_imported() {
    if let Some(redis) = redis() {
        certstore_writes_native_reads(&redis);
        cleared(&redis);
    }
}

#[test]
fn certstore_reads_values_written_with_redis_cli() {
    if let Some(redis) = redis() {
        native_writes_certstore_reads(&redis);
        cleared(&redis);
    }
}
