//! Checks that run before limactl does: the effective user, Lima's SSH key permissions, and the
//! scratch working directory.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Returns the effective user id of this process.
pub(crate) fn current_effective_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Fails with [`Error::RunningAsRoot`] when `effective_uid` is 0, because limactl exits with
/// "must not run as the root user" (<https://github.com/lima-vm/lima/issues/3978>).
pub(crate) fn reject_root(effective_uid: u32) -> Result<()> {
    if effective_uid == 0 {
        return Err(Error::RunningAsRoot);
    }
    Ok(())
}

/// Returns the path of Lima's SSH private key in `lima_home`.
pub(crate) fn ssh_key_path(lima_home: &Path) -> PathBuf {
    lima_home.join("_config").join("user")
}

/// Fails with [`Error::InsecureSshKey`] when `<LIMA_HOME>/_config/user` exists and group or
/// others have any access to it.
///
/// OpenSSH ignores such a key, and Lima then retries its "ssh" boot requirement until
/// `limactl start` times out, with no hint at the cause. This happens after restoring
/// LIMA_HOME from a CI cache or copying it with a permissive umask. A missing key passes,
/// because Lima creates it.
pub(crate) fn check_ssh_key(lima_home: &Path) -> Result<()> {
    let path = ssh_key_path(lima_home);
    let metadata = match fs::metadata(&path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(Error::Io {
                action: "read the permissions of",
                path,
                error,
            });
        }
    };
    let mode = metadata.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::InsecureSshKey { path, mode });
    }
    Ok(())
}

/// Returns the default scratch working directory for limactl: `<temp dir>/lima-provisioner-<euid>`.
///
/// limactl writes `lima.REJECTED.yaml` into its working directory when a `--set` edit of an
/// existing instance fails validation, so it must not run in the caller's project directory.
pub(crate) fn default_work_dir(effective_uid: u32) -> PathBuf {
    std::env::temp_dir().join(format!("lima-provisioner-{effective_uid}"))
}

/// Creates `dir` (mode 0700) unless it exists, and checks that it is a real directory owned
/// by `effective_uid`, so that another user cannot plant it (or a symlink) in a shared
/// temporary directory.
pub(crate) fn ensure_work_dir(dir: &Path, effective_uid: u32) -> Result<()> {
    match fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
    {
        Ok(()) => {}
        Err(error) => {
            return Err(Error::Io {
                action: "create limactl's working directory",
                path: dir.to_path_buf(),
                error,
            });
        }
    }
    let metadata = fs::symlink_metadata(dir).map_err(|error| Error::Io {
        action: "inspect limactl's working directory",
        path: dir.to_path_buf(),
        error,
    })?;
    if !metadata.is_dir() || metadata.uid() != effective_uid {
        return Err(Error::Io {
            action: "use limactl's working directory",
            path: dir.to_path_buf(),
            error: io::Error::other(format!(
                "it is not a directory owned by uid {effective_uid}; remove it or choose \
                 another one with `Limactl::with_work_dir`"
            )),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn write_key(lima_home: &Path, mode: u32) -> PathBuf {
        let path = ssh_key_path(lima_home);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "not a real key").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn root_rejected() {
        assert!(matches!(reject_root(0), Err(Error::RunningAsRoot)));
        assert!(reject_root(1000).is_ok());
    }

    #[test]
    fn ssh_key_missing_is_fine() {
        let home = tempfile::tempdir().unwrap();
        assert!(check_ssh_key(home.path()).is_ok());
    }

    #[test]
    fn ssh_key_private_modes_accepted() {
        let home = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o400] {
            write_key(home.path(), mode);
            assert!(check_ssh_key(home.path()).is_ok(), "{mode:o}");
        }
    }

    #[test]
    fn ssh_key_readable_by_others_rejected() {
        let home = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o601] {
            let path = write_key(home.path(), mode);
            match check_ssh_key(home.path()) {
                Err(Error::InsecureSshKey {
                    path: reported,
                    mode: reported_mode,
                }) => {
                    assert_eq!(reported, path);
                    assert_eq!(reported_mode, mode);
                }
                other => panic!("mode {mode:o}: expected InsecureSshKey, got {other:?}"),
            }
        }
    }

    #[test]
    fn work_dir_created_private() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("scratch");
        let uid = current_effective_uid();

        ensure_work_dir(&dir, uid).unwrap();
        ensure_work_dir(&dir, uid).unwrap();

        let mode = fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn work_dir_symlink_rejected() {
        let temp = tempfile::tempdir().unwrap();
        let target = temp.path().join("target");
        fs::create_dir(&target).unwrap();
        let link = temp.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();

        let error = ensure_work_dir(&link, current_effective_uid()).unwrap_err();

        assert!(
            error
                .to_string()
                .contains("is not a directory owned by uid"),
            "{error}"
        );
    }

    #[test]
    fn work_dir_of_other_owner_rejected() {
        let temp = tempfile::tempdir().unwrap();
        let other_uid = current_effective_uid() + 1;
        assert!(ensure_work_dir(temp.path(), other_uid).is_err());
    }
}
