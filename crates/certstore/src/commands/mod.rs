//! The subcommands of `certstore`, one module per command or family of commands.
//!
//! Certificates: `ls`, `show`, `export`, `import` and `rm`, sharing `records`. Operating a
//! storage: `migrate`, `rekey`, `locks` (with `unlock`), `clean` and `doctor`. And `serve`,
//! the HTTPS demo, with `ca-root` for the root its clients trust.

pub mod ca_root;
pub mod clean;
pub mod doctor;
pub mod export;
pub mod import;
pub mod locks;
pub mod ls;
pub mod migrate;
mod records;
pub mod rekey;
pub mod rm;
pub mod serve;
pub mod show;
