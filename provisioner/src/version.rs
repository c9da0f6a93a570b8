//! Lima version numbers as `limactl --version` prints them.

use std::fmt;

/// The oldest Lima release this crate supports. Lima 2.0 introduced the `template:NAME` form,
/// the yq pass over `list --json` output, and the `guestIPMustBeZero` default that the port
/// rules here are written for. Lima's k3s template also requires 2.0.0.
pub const MIN_LIMA_VERSION: (u64, u64, u64) = (2, 0, 0);

/// A Lima version. Pre-release and build suffixes are kept in `raw` only, so `2.1.0-rc.1`
/// compares like `2.1.0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimaVersion {
    /// Major version.
    pub major: u64,
    /// Minor version.
    pub minor: u64,
    /// Patch version (0 when the text has only `major.minor`).
    pub patch: u64,
    /// The version as printed, without a leading `v`, for example `2.2.0-153-g183a60d7`.
    pub raw: String,
}

impl LimaVersion {
    /// Parses the output of `limactl --version` or a bare version.
    ///
    /// Accepts `limactl version 2.2.0`, `v2.2.0`, `2.2.0-153-g183a60d7`, `2.1.0-rc.1` and a
    /// `.m` (modified tree) suffix: the first whitespace-separated word that starts with a
    /// digit, after an optional `v`, and contains at least `major.minor`.
    pub fn parse(text: &str) -> Option<Self> {
        text.split_whitespace().find_map(Self::parse_word)
    }

    fn parse_word(word: &str) -> Option<Self> {
        let word = word.strip_prefix('v').unwrap_or(word);
        let numeric_end = word
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(word.len());
        let mut parts = word[..numeric_end]
            .split('.')
            .filter(|part| !part.is_empty());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = match parts.next() {
            Some(part) => part.parse().ok()?,
            None => 0,
        };
        Some(Self {
            major,
            minor,
            patch,
            raw: word.to_owned(),
        })
    }

    /// Checks whether `limactl start` has the `--param KEY=VALUE` flag (added in Lima 2.2).
    pub fn supports_param_flag(&self) -> bool {
        self.at_least((2, 2, 0))
    }

    /// Checks whether this version is at least [`MIN_LIMA_VERSION`].
    pub fn is_supported(&self) -> bool {
        self.at_least(MIN_LIMA_VERSION)
    }

    fn at_least(&self, (major, minor, patch): (u64, u64, u64)) -> bool {
        (self.major, self.minor, self.patch) >= (major, minor, patch)
    }
}

impl fmt::Display for LimaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> (u64, u64, u64, String) {
        let version = LimaVersion::parse(text).unwrap_or_else(|| panic!("{text:?} not parsed"));
        (version.major, version.minor, version.patch, version.raw)
    }

    #[test]
    fn parse_accepted_forms() {
        let cases = [
            ("limactl version 2.2.0\n", (2, 2, 0, "2.2.0")),
            ("v2.2.0", (2, 2, 0, "2.2.0")),
            ("2.2.0-153-g183a60d7", (2, 2, 0, "2.2.0-153-g183a60d7")),
            ("2.1.0-rc.1", (2, 1, 0, "2.1.0-rc.1")),
            (
                "limactl version 2.2.0-153-g183a60d7.m",
                (2, 2, 0, "2.2.0-153-g183a60d7.m"),
            ),
            ("limactl version 1.2.1", (1, 2, 1, "1.2.1")),
            ("limactl version 2.10", (2, 10, 0, "2.10")),
        ];
        for (text, (major, minor, patch, raw)) in cases {
            assert_eq!(
                parsed(text),
                (major, minor, patch, raw.to_owned()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn parse_rejects_text_without_version() {
        for text in [
            "",
            "limactl version",
            "limactl version unknown",
            "v",
            "2",
            "x2.0.0",
        ] {
            assert_eq!(LimaVersion::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn minimum_version() {
        assert!(LimaVersion::parse("2.0.0").unwrap().is_supported());
        assert!(LimaVersion::parse("2.0.0-rc.1").unwrap().is_supported());
        assert!(LimaVersion::parse("3.0.0").unwrap().is_supported());
        assert!(!LimaVersion::parse("1.2.1").unwrap().is_supported());
        assert!(!LimaVersion::parse("0.23.2").unwrap().is_supported());
    }

    #[test]
    fn param_flag_from_2_2() {
        assert!(!LimaVersion::parse("2.1.9").unwrap().supports_param_flag());
        assert!(LimaVersion::parse("2.2.0").unwrap().supports_param_flag());
        assert!(
            LimaVersion::parse("v2.2.0-153-g183a60d7")
                .unwrap()
                .supports_param_flag()
        );
        assert!(LimaVersion::parse("3.0.0").unwrap().supports_param_flag());
    }
}
