//! The ACME test harness: Pebble and pebble-challtestsrv started per test on free ports,
//! engine nodes sharing one storage, and the HTTP-01 and TLS front ends that answer
//! Pebble's validations round robin across the nodes.
#![allow(dead_code)]

mod frontends;
pub mod metrics;
mod nodes;
mod recorder;
mod server;

#[allow(unused_imports)]
pub use frontends::{bind, connector, handshake, serve_http, serve_tls};
#[allow(unused_imports)]
pub use nodes::{Node, acme_config, count_obtained, manager_config, node, node_with};
#[allow(unused_imports)]
pub use recorder::Recorder;
#[allow(unused_imports)]
pub use server::{Pebble, free_port, run};
