//! The README's conformance snippet ("Running the conformance suite on your own backend"):
//! compiled and run here against an in-process store, and checked to be exactly the
//! README's text, so the two cannot drift apart.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use cert_core::MemoryStorage;

/// The store the snippet names: every namespace's data, kept in this process.
struct MyStorage;

static STORES: LazyLock<Mutex<HashMap<String, MemoryStorage>>> = LazyLock::new(Default::default);

impl MyStorage {
    /// A new instance over the data of `ns` (the same data for the same namespace).
    fn open_namespace(ns: &str) -> MemoryStorage {
        STORES
            .lock()
            .unwrap()
            .entry(ns.to_owned())
            .or_default()
            .clone()
    }
}

include!("readme/conformance.rs");

/// The snippet this file compiles.
const SNIPPET: &str = include_str!("readme/conformance.rs");

/// The README's section on the conformance suite.
const SECTION: &str = "## Running the conformance suite on your own backend";

/// The first Rust code block of the README's conformance section.
fn readme_snippet(readme: &str) -> Option<&str> {
    let section = &readme[readme.find(SECTION)?..];
    let fence = section.find("```rust")?;
    let code = &section[fence..];
    let start = code.find('\n')? + 1;
    let end = code[start..].find("```")?;
    Some(&code[start..start + end])
}

#[test]
fn the_readme_shows_the_compiled_snippet() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let shown =
        readme_snippet(&readme).expect("a ```rust block in the README's conformance section");
    assert_eq!(
        shown, SNIPPET,
        "the README's conformance snippet differs from tests/readme/conformance.rs: \
         change both together"
    );
    assert!(shown.contains("without_cross_process()"));
}
