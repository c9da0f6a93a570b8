//! Lima instance names, validated before any limactl call.
//!
//! Lima's rules (`pkg/identifiers/validate.go` and `pkg/limatype/dirnames/dirnames.go` in
//! <https://github.com/lima-vm/lima>): groups of ASCII letters and digits joined by single `.`,
//! `_` or `-`, at most 76 characters, and no `.yml`/`.yaml` suffix in any letter case. On top
//! of those, the instance's SSH control socket path must fit the platform's `sun_path`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Maximum length of an instance name (`maxLength` in Lima's `pkg/identifiers`).
pub(crate) const MAX_NAME_LEN: usize = 76;

/// Size of `sockaddr_un.sun_path`, including the terminating NUL: 108 bytes on Linux, 104 on
/// macOS and the BSDs.
#[cfg(target_os = "linux")]
pub(crate) const SUN_PATH_LEN: usize = 108;
/// Size of `sockaddr_un.sun_path`, including the terminating NUL: 108 bytes on Linux, 104 on
/// macOS and the BSDs.
#[cfg(not(target_os = "linux"))]
pub(crate) const SUN_PATH_LEN: usize = 104;

/// The socket with the longest path that Lima creates in an instance directory: OpenSSH's ControlMaster socket
/// `ssh.sock`, which ssh creates under a temporary name with a 16-character random suffix.
const SSH_SOCKET_SUFFIX: &str = "/ssh.sock.";
const SSH_SOCKET_RANDOM_LEN: usize = 16;

/// A validated Lima instance name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceName(String);

impl InstanceName {
    /// Validates `name` against Lima's rules and the socket path budget under `lima_home`.
    ///
    /// `lima_home` is resolved through symlinks when it exists, as Lima does, because the
    /// resolved path is the one that ends up in socket paths (on macOS `/tmp` is a symlink
    /// to `/private/tmp`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInstanceName`], naming the broken rule and the fix.
    pub fn new(name: impl Into<String>, lima_home: &Path) -> Result<Self> {
        let name = name.into();
        Self::check(&name, lima_home)
            .map_err(move |problem| Error::InvalidInstanceName { name, problem })
    }

    /// Works like [`InstanceName::new`], returning only the broken rule on failure.
    pub(crate) fn check(name: &str, lima_home: &Path) -> Result<Self, NameError> {
        check_identifier(name)?;
        check_socket_budget(name, lima_home)?;
        Ok(Self(name.to_owned()))
    }

    /// Returns the name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks the socket path budget again for another `LIMA_HOME`, for example the one of
    /// the `Limactl` that is about to create the instance.
    pub(crate) fn check_lima_home(&self, lima_home: &Path) -> Result<()> {
        check_socket_budget(&self.0, lima_home).map_err(|problem| Error::InvalidInstanceName {
            name: self.0.clone(),
            problem,
        })
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for InstanceName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The naming rule an instance name breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name starts with `-`, so limactl would parse it as a flag.
    LeadingHyphen,
    /// The name is longer than Lima allows.
    TooLong {
        /// The name's length in bytes.
        len: usize,
    },
    /// The name contains a character outside `[A-Za-z0-9._-]`.
    InvalidCharacter {
        /// The first such character.
        character: char,
    },
    /// A separator (`.`, `_`, `-`) starts or ends the name, or follows another separator.
    MisplacedSeparator,
    /// The name ends with `.yml` or `.yaml`, which limactl takes for a template file.
    YamlSuffix,
    /// The instance's SSH control socket path would not fit `sun_path`.
    SocketPathTooLong {
        /// The resolved `LIMA_HOME`.
        lima_home: PathBuf,
        /// The length of the longest socket path, in bytes.
        socket_path_len: usize,
        /// The maximum length on this platform, in bytes.
        max_len: usize,
    },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("it is empty; use a name such as `k3s-test`."),
            Self::LeadingHyphen => f.write_str(
                "it starts with `-`, which limactl would parse as a flag; remove the leading `-`.",
            ),
            Self::TooLong { len } => write!(
                f,
                "it is {len} characters long, but Lima allows at most {MAX_NAME_LEN}; use a \
                 shorter name."
            ),
            Self::InvalidCharacter { character } => write!(
                f,
                "it contains {character:?}, but Lima allows only ASCII letters, digits and the \
                 separators `.`, `_` and `-`; replace that character, for example with `-`."
            ),
            Self::MisplacedSeparator => f.write_str(
                "Lima requires letters or digits at both ends and a single `.`, `_` or `-` \
                 between groups of them; remove the leading, trailing or doubled separator.",
            ),
            Self::YamlSuffix => f.write_str(
                "it ends with `.yml` or `.yaml`, which limactl takes for a template file; remove \
                 the suffix.",
            ),
            Self::SocketPathTooLong {
                lima_home,
                socket_path_len,
                max_len,
            } => write!(
                f,
                "with LIMA_HOME {} the instance's SSH control socket path would be \
                 {socket_path_len} bytes long, but this platform allows at most {max_len}; use a \
                 shorter name or a shorter LIMA_HOME such as /tmp/lima.",
                lima_home.display()
            ),
        }
    }
}

fn check_identifier(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.starts_with('-') {
        return Err(NameError::LeadingHyphen);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    if let Some(character) = name
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !is_separator(*c))
    {
        return Err(NameError::InvalidCharacter { character });
    }

    let bytes = name.as_bytes();
    let separator_at_end =
        is_separator(bytes[0] as char) || is_separator(bytes[bytes.len() - 1] as char);
    let doubled_separator = bytes
        .windows(2)
        .any(|pair| is_separator(pair[0] as char) && is_separator(pair[1] as char));
    if separator_at_end || doubled_separator {
        return Err(NameError::MisplacedSeparator);
    }

    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".yml") || lower.ends_with(".yaml") {
        return Err(NameError::YamlSuffix);
    }
    Ok(())
}

fn is_separator(c: char) -> bool {
    matches!(c, '.' | '_' | '-')
}

/// Checks `len(LIMA_HOME) + 1 + len(name) + len("/ssh.sock.") + 16 < sun_path`.
fn check_socket_budget(name: &str, lima_home: &Path) -> Result<(), NameError> {
    let lima_home = resolve_lima_home(lima_home);
    let socket_path_len = lima_home.as_os_str().len()
        + 1
        + name.len()
        + SSH_SOCKET_SUFFIX.len()
        + SSH_SOCKET_RANDOM_LEN;
    let max_len = SUN_PATH_LEN - 1;
    if socket_path_len > max_len {
        return Err(NameError::SocketPathTooLong {
            lima_home,
            socket_path_len,
            max_len,
        });
    }
    Ok(())
}

/// Resolves symlinks in `lima_home` when it exists, and makes it absolute otherwise.
pub(crate) fn resolve_lima_home(lima_home: &Path) -> PathBuf {
    match lima_home.canonicalize() {
        Ok(resolved) => resolved,
        Err(_) => std::path::absolute(lima_home).unwrap_or_else(|_| lima_home.to_path_buf()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short_home() -> PathBuf {
        PathBuf::from("/nonexistent-lima-home")
    }

    fn problem(name: &str, lima_home: &Path) -> Option<NameError> {
        match InstanceName::new(name, lima_home) {
            Ok(_) => None,
            Err(Error::InvalidInstanceName { problem, .. }) => Some(problem),
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn names_lima_accepts() {
        let names = [
            "default",
            "Default",
            "k3s",
            "kt-0a1b2c3d",
            "default-default",
            "containerd.io",
            "task.0.0123456789",
            "container.system-75-f19a.00",
            "underscores_are_allowed",
            "0912341234",
            "a",
            "yaml",
            "x.yaml1",
        ];
        for name in names {
            assert_eq!(problem(name, &short_home()), None, "{name}");
        }
    }

    #[test]
    fn max_length_accepted() {
        let name = "a".repeat(MAX_NAME_LEN);
        assert_eq!(problem(&name, Path::new("/l")), None);
    }

    #[test]
    fn names_lima_rejects() {
        let cases = [
            ("", NameError::Empty),
            ("-foo.boo", NameError::LeadingHyphen),
            ("-", NameError::LeadingHyphen),
            ("foo/foo", NameError::InvalidCharacter { character: '/' }),
            ("foo bar", NameError::InvalidCharacter { character: ' ' }),
            ("k3s\n", NameError::InvalidCharacter { character: '\n' }),
            ("naïve", NameError::InvalidCharacter { character: 'ï' }),
            (".foo", NameError::MisplacedSeparator),
            ("foo..foo", NameError::MisplacedSeparator),
            ("foo.-boo", NameError::MisplacedSeparator),
            ("foo.boo-", NameError::MisplacedSeparator),
            ("default--default", NameError::MisplacedSeparator),
            (
                "but__only_tasteful_underscores",
                NameError::MisplacedSeparator,
            ),
            ("k3s.yaml", NameError::YamlSuffix),
            ("k3s.YML", NameError::YamlSuffix),
            ("k3s.Yaml", NameError::YamlSuffix),
        ];
        for (name, expected) in cases {
            assert_eq!(problem(name, &short_home()), Some(expected), "{name:?}");
        }
    }

    #[test]
    fn too_long_rejected() {
        let name = "a".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            problem(&name, Path::new("/l")),
            Some(NameError::TooLong {
                len: MAX_NAME_LEN + 1
            })
        );
    }

    #[test]
    fn socket_budget_boundary() {
        // 1 + name + "/ssh.sock." + 16 = name + 27 bytes after LIMA_HOME.
        let max_len = SUN_PATH_LEN - 1;
        let name = "kt-0a1b2c3d";
        let fitting_home = format!("/{}", "h".repeat(max_len - 27 - name.len() - 1));
        let too_long_home = format!("{fitting_home}h");

        assert_eq!(problem(name, Path::new(&fitting_home)), None);
        assert_eq!(
            problem(name, Path::new(&too_long_home)),
            Some(NameError::SocketPathTooLong {
                lima_home: PathBuf::from(&too_long_home),
                socket_path_len: max_len + 1,
                max_len,
            })
        );
    }

    #[test]
    fn socket_budget_message_suggests_short_home() {
        let home = format!("/{}", "x".repeat(100));
        let error = InstanceName::new("kt-a", Path::new(&home)).unwrap_err();
        let text = error.to_string();

        assert!(
            text.starts_with("The Lima instance name \"kt-a\" is invalid: with LIMA_HOME /xxx"),
            "{text}"
        );
        assert!(
            text.ends_with("use a shorter name or a shorter LIMA_HOME such as /tmp/lima."),
            "{text}"
        );
    }

    #[test]
    fn socket_budget_uses_resolved_home() {
        let temp = tempfile::tempdir().unwrap();
        let real = temp.path().join("r".repeat(60));
        std::fs::create_dir(&real).unwrap();
        let link = temp.path().join("l");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let name = "n".repeat(30);

        let error = InstanceName::new(&name, &link).unwrap_err();

        match error {
            Error::InvalidInstanceName {
                problem: NameError::SocketPathTooLong { lima_home, .. },
                ..
            } => assert_eq!(lima_home, real.canonicalize().unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn leading_hyphen_message() {
        let error = InstanceName::new("-rf", &short_home()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "The Lima instance name \"-rf\" is invalid: it starts with `-`, which limactl would \
             parse as a flag; remove the leading `-`."
        );
    }

    #[test]
    fn display_and_as_str() {
        let name = InstanceName::new("kt-a", &short_home()).unwrap();
        assert_eq!(name.as_str(), "kt-a");
        assert_eq!(name.to_string(), "kt-a");
    }
}
