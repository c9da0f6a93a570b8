//! Finding the Jetpack binary: `JETP`, else `jetpack` on `PATH`, else `jetp` on `PATH`.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::error::ConvergeError;

/// Environment variable that names the Jetpack binary by path.
pub const JETP_ENV: &str = "JETP";

/// Binary names looked up on `PATH`, in order: the Jetpack fork installs `jetpack` (with a
/// `jetp` link), jetporch from crates.io installs `jetp`.
const PATH_NAMES: [&str; 2] = ["jetpack", "jetp"];

/// Returns the Jetpack binary to run, from the values of `JETP` and `PATH`.
///
/// A non-empty `JETP` is used as a path and must name an executable file. `PATH` is then not
/// searched, so a wrong `JETP` is reported instead of silently running another binary.
pub(crate) fn find(jetp: Option<&OsStr>, path: Option<&OsStr>) -> Result<PathBuf, ConvergeError> {
    if let Some(jetp) = jetp.filter(|value| !value.is_empty()) {
        let candidate = PathBuf::from(jetp);
        return if is_executable(&candidate) {
            Ok(candidate)
        } else {
            Err(ConvergeError::JetpNotExecutable { path: candidate })
        };
    }

    let dirs: Vec<PathBuf> = path
        .map(std::env::split_paths)
        .into_iter()
        .flatten()
        .collect();
    for name in PATH_NAMES {
        let found = dirs
            .iter()
            .filter(|dir| !dir.as_os_str().is_empty())
            .map(|dir| dir.join(name))
            .find(|candidate| is_executable(candidate));
        if let Some(found) = found {
            return Ok(found);
        }
    }
    Err(ConvergeError::JetpNotFound {
        path: path
            .map(|value| value.to_string_lossy().into_owned())
            .unwrap_or_default(),
    })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::fs;

    use super::*;

    fn script(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn join(dirs: &[&Path]) -> OsString {
        std::env::join_paths(dirs).unwrap()
    }

    #[test]
    fn jetp_env_wins_over_path() {
        let dir = tempfile::tempdir().unwrap();
        let chosen = script(dir.path(), "my-jetp");
        script(dir.path(), "jetpack");

        let found = find(Some(chosen.as_os_str()), Some(&join(&[dir.path()]))).unwrap();

        assert_eq!(found, chosen);
    }

    #[test]
    fn jetpack_before_jetp_on_path() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        script(first.path(), "jetp");
        let jetpack = script(second.path(), "jetpack");

        let found = find(None, Some(&join(&[first.path(), second.path()]))).unwrap();

        assert_eq!(found, jetpack);
    }

    #[test]
    fn jetp_found_when_jetpack_absent() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let jetp = script(second.path(), "jetp");

        let found = find(None, Some(&join(&[first.path(), second.path()]))).unwrap();

        assert_eq!(found, jetp);
    }

    #[test]
    fn empty_jetp_env_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let jetp = script(dir.path(), "jetp");

        let found = find(Some(OsStr::new("")), Some(&join(&[dir.path()]))).unwrap();

        assert_eq!(found, jetp);
    }

    #[test]
    fn non_executable_file_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("jetpack"), "not a program").unwrap();
        let jetp = script(dir.path(), "jetp");

        let found = find(None, Some(&join(&[dir.path()]))).unwrap();

        assert_eq!(found, jetp);
    }

    #[test]
    fn missing_jetp_env_path_is_error() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "jetp");

        let error = find(
            Some(OsStr::new("/nonexistent/jetp")),
            Some(&join(&[dir.path()])),
        )
        .unwrap_err();

        assert!(
            matches!(&error, ConvergeError::JetpNotExecutable { path } if path == Path::new("/nonexistent/jetp")),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("JETP=/nonexistent/jetp"), "{message}");
        assert!(message.contains("cargo install jetp --locked"), "{message}");
    }

    #[test]
    fn nothing_on_path_is_error() {
        let dir = tempfile::tempdir().unwrap();

        for path in [None, Some(OsString::new()), Some(join(&[dir.path()]))] {
            let error = find(None, path.as_deref()).unwrap_err();

            assert!(
                matches!(error, ConvergeError::JetpNotFound { .. }),
                "{error:?}"
            );
            let message = error.to_string();
            assert!(message.contains("cargo install jetp --locked"), "{message}");
            assert!(message.contains("riffcc/jetpack"), "{message}");
            assert!(message.contains("JETP"), "{message}");
        }
    }
}
