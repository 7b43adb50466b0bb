//! `certstore export`: a certificate's chain and key written to private files, never
//! through a symbolic link.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use certstore::inventory::Found;

use super::records::{find, unreadable};
use crate::output::{CliError, CliResult, printable, random_suffix};
use crate::{Global, StorageArg};

/// Arguments of `certstore export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    storage: StorageArg,
    /// The server name.
    name: String,
    /// The directory to write `<name>.crt` and `<name>.key` to. A missing directory is
    /// created with mode 0700; an existing one is used as it is.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The issuer segment, when several issuers hold a certificate for the name (default:
    /// the one valid longest).
    #[arg(long)]
    issuer: Option<String>,
    /// Overwrite files that already exist (never a symbolic link).
    #[arg(long)]
    force: bool,
}

pub async fn run(global: &Global, args: ExportArgs) -> CliResult {
    let (_opened, found) = find(
        global,
        &args.storage.storage,
        &args.name,
        args.issuer.as_deref(),
    )
    .await?;
    // Chain and key come from one record (the bundle, when there is one), so the files
    // written always belong together.
    let Some((certificate, _)) = found.first().and_then(Found::valid) else {
        return Err(unreadable(&args.name, &found));
    };
    let base = &found[0].entry.id.name;
    let chain_path = args.out.join(format!("{base}.crt"));
    let key_path = args.out.join(format!("{base}.key"));
    for path in [&chain_path, &key_path] {
        check_target(path, args.force)?;
    }
    make_private_dir(&args.out)?;
    write_private(&key_path, certificate.stored.key_pem.as_bytes())?;
    write_private(&chain_path, certificate.stored.chain_pem.as_bytes())?;
    println!("{}", printable(&chain_path.display().to_string()));
    println!("{}", printable(&key_path.display().to_string()));
    Ok(())
}

/// Refuses a target file that is a symbolic link (whoever planted it chose where a private
/// key would land), that is not a regular file, or that exists without `force`.
pub(super) fn check_target(path: &Path, force: bool) -> CliResult {
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(CliError::usage(format!(
            "{shown} is a symbolic link; refusing to write a certificate or key through it"
        ))),
        Ok(meta) if !meta.is_file() => Err(CliError::usage(format!(
            "{shown} exists and is not a regular file"
        ))),
        Ok(_) if !force => Err(CliError::usage(format!(
            "{shown} already exists; pass --force to overwrite it"
        ))),
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(CliError::failed(format!("cannot read {shown}: {err}"))),
    }
}

/// Creates `dir` with mode 0700 when it is missing. An existing directory keeps its mode:
/// it may be shared on purpose (a sticky 1777 directory, a group's drop box), and the
/// files written into it are 0600 whatever the directory allows.
fn make_private_dir(dir: &Path) -> CliResult {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(CliError::usage(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(CliError::failed(format!(
                "cannot read {}: {err}",
                dir.display()
            )));
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|err| CliError::failed(format!("cannot create {}: {err}", dir.display())))
}

/// Writes `bytes` to `path` with mode 0600, as [`write_file`] does.
fn write_private(path: &Path, bytes: &[u8]) -> CliResult {
    write_file(path, bytes, 0o600)
}

/// Writes `bytes` to `path` with `mode`, through a temporary file renamed into place.
///
/// The temporary file is created with `create_new` (`O_CREAT | O_EXCL`), which fails on
/// anything already at that name, a symbolic link included, so nothing is ever written
/// through a link; its name is random, so nobody can plant one there in advance. The
/// rename replaces a link that appeared at `path` since [`check_target`] instead of
/// following it, and a reader never sees a half-written key.
pub(super) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> CliResult {
    let fail =
        |err: std::io::Error| CliError::failed(format!("cannot write {}: {err}", path.display()));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", random_suffix()));
    let tmp = path.with_file_name(tmp_name);
    let mut created = false;
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        created = true;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(err) = result {
        // Only a file this call created is removed: never something another user put there.
        if created {
            let _ = std::fs::remove_file(&tmp);
        }
        return Err(fail(err));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_targets_that_are_links_are_refused_even_with_force() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.path().join("a.key");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = check_target(&link, true).unwrap_err();
        assert!(err.message.contains("symbolic link"), "{err}");
        let dangling = dir.path().join("b.key");
        std::os::unix::fs::symlink(dir.path().join("missing"), &dangling).unwrap();
        assert!(check_target(&dangling, true).is_err());
        check_target(&dir.path().join("new.key"), false).unwrap();
        assert!(check_target(&target, false).is_err());
        check_target(&target, true).unwrap();
        // Writing replaces the file at the path, never what a link there points to.
        write_private(&link, b"secret").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "secret");
        assert!(
            !std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
