//! Storage behaviour of the file backend: memory-equivalent semantics, permissions,
//! symbolic-link refusal and invisible temporary files.
#![allow(clippy::unwrap_used)]

mod permissions;
mod semantics;
mod symlinks;
mod temporary_files;
