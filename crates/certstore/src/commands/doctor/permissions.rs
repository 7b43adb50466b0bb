//! The doctor's checks of what can read the storage's files: the directory of a file
//! storage, and an SQLite database with its companions.

use super::{Check, Status, check};

pub(super) fn file_permissions(root: &std::path::Path) -> Check {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(root) {
        Ok(meta) if !meta.is_dir() => check(
            "permissions",
            Status::Fail,
            format!("{} is not a directory", root.display()),
            "point the storage URL at a directory",
        ),
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 == 0 {
                check(
                    "permissions",
                    Status::Pass,
                    format!("{} is mode {mode:o}", root.display()),
                    "",
                )
            } else {
                check(
                    "permissions",
                    Status::Warn,
                    format!(
                        "{} is mode {mode:o}: others can read private keys",
                        root.display()
                    ),
                    format!("chmod 700 {}", root.display()),
                )
            }
        }
        Err(_) => check(
            "permissions",
            Status::Pass,
            format!(
                "{} does not exist yet; it is created with mode 700 on first write",
                root.display()
            ),
            "",
        ),
    }
}

/// The SQLite database file and its `-wal` and `-shm` companions (those that exist) must
/// not be open to group or others: they hold private keys, and the `-wal` file holds
/// recent writes in full.
#[cfg(feature = "sqlite")]
pub(super) fn sqlite_permissions(files: &[std::path::PathBuf]) -> Check {
    use std::os::unix::fs::PermissionsExt;
    let mut open = Vec::new();
    let mut seen = Vec::new();
    for file in files {
        let Ok(meta) = std::fs::metadata(file) else {
            continue; // a companion exists only while the database is in use
        };
        let mode = meta.permissions().mode() & 0o777;
        seen.push(format!("{} is mode {mode:o}", file.display()));
        if mode & 0o077 != 0 {
            open.push((file, mode));
        }
    }
    if open.is_empty() {
        return check("permissions", Status::Pass, seen.join(", "), "");
    }
    let detail: Vec<String> = open
        .iter()
        .map(|(file, mode)| format!("{} is mode {mode:o}", file.display()))
        .collect();
    let paths: Vec<String> = open
        .iter()
        .map(|(file, _)| file.display().to_string())
        .collect();
    check(
        "permissions",
        Status::Warn,
        format!("{}: others can read private keys", detail.join(", ")),
        format!("chmod 600 {}", paths.join(" ")),
    )
}

#[cfg(test)]
#[cfg(feature = "sqlite")]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &std::path::Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn sqlite_files_open_to_others_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let files = cert_sql::sqlite_database_files(&url).unwrap();
        std::fs::write(&files[0], b"").unwrap();
        chmod(&files[0], 0o600);
        let private = sqlite_permissions(&files);
        assert_eq!(private.status, Status::Pass, "{}", private.detail);
        assert!(
            private.detail.ends_with("c.db is mode 600"),
            "{}",
            private.detail
        );

        // SQLite left a -wal file readable by everyone.
        std::fs::write(&files[1], b"").unwrap();
        chmod(&files[1], 0o644);
        let open = sqlite_permissions(&files);
        assert_eq!(open.status, Status::Warn, "{}", open.detail);
        assert!(
            open.detail.contains("c.db-wal is mode 644"),
            "{}",
            open.detail
        );
        assert!(!open.detail.contains("c.db is mode"), "{}", open.detail);
        assert_eq!(open.hint, format!("chmod 600 {}", files[1].display()));

        chmod(&files[0], 0o640);
        assert!(sqlite_permissions(&files).hint.contains("c.db "));
    }
}
