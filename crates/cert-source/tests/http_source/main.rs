//! The HTTP certificate source against a real HTTP(S) backend on loopback, and real TLS
//! handshakes through the resolver and `accept_lazy`. This file holds the helpers the test
//! modules share.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

use cert_source::{HttpSource, HttpSourceConfig};

mod caching;
mod fetch;
mod handshakes;

fn source(config: HttpSourceConfig) -> HttpSource {
    HttpSource::new(config).unwrap()
}
