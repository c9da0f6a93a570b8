//! Docker-style image references, normalised the way containerd and the CRI plugin store them.
//!
//! The grammar and the normalisation follow `github.com/distribution/reference` (`normalize.go`,
//! `regexp.go`, `ParseDockerRef`), which containerd uses to name imported images and which the
//! CRI plugin applies to the image a pod requests.

use std::fmt;

use super::ImageError;

/// Registry that a reference without a registry host implies.
const DEFAULT_DOMAIN: &str = "docker.io";
/// Legacy alias of [`DEFAULT_DOMAIN`] that normalisation rewrites.
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// Namespace that a single-component Docker Hub repository implies (`foo` is `library/foo`).
const OFFICIAL_REPOSITORY_NAMESPACE: &str = "library";
/// Tag that a reference without tag or digest implies.
const DEFAULT_TAG: &str = "latest";
/// Maximum length of the repository name including its registry host, in bytes.
const NAME_TOTAL_LENGTH_MAX: usize = 255;
/// Maximum length of a tag, in bytes.
const TAG_LENGTH_MAX: usize = 128;

/// A normalised image reference, as containerd and the kubelet's CRI view name it.
///
/// `foo` becomes `docker.io/library/foo:latest`, `foo:1` becomes `docker.io/library/foo:1`, and a
/// reference with both a tag and a digest keeps only the digest, as `ParseDockerRef` does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageReference {
    /// The full normalised form.
    full: String,
    /// Length of the repository name (`docker.io/library/foo`) at the start of `full`.
    name_len: usize,
    /// Whether the input named no tag and no digest, so that `:latest` was added.
    tag_implied: bool,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageReference {
    /// Parses and normalises a reference such as `foo`, `foo:1`, `ghcr.io/o/r:v1`,
    /// `localhost:5000/x:y` or `x@sha256:<64 hex digits>`.
    ///
    /// Returns [`ImageError::InvalidReference`] naming the value and the rule it breaks.
    pub fn parse(value: &str) -> Result<Self, ImageError> {
        parse_reference(value).map_err(|reason| ImageError::InvalidReference {
            value: value.to_owned(),
            reason,
        })
    }

    /// Returns the full normalised form, for example `docker.io/library/foo:1`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// Returns the repository name with its registry host, for example `docker.io/library/foo`.
    pub fn name(&self) -> &str {
        &self.full[..self.name_len]
    }

    /// Returns the tag, including an implied `latest`. A reference with a digest has no tag.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// Returns the digest, for example `sha256:<64 hex digits>`.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// Returns whether the input named no tag and no digest, so that normalisation added
    /// `:latest`.
    pub fn is_tag_implied(&self) -> bool {
        self.tag_implied
    }

    /// Returns whether the reference is `:latest` (explicit or implied) and has no digest.
    ///
    /// Kubernetes defaults `imagePullPolicy` to `Always` for exactly these references.
    pub fn is_latest_or_untagged(&self) -> bool {
        self.digest.is_none() && self.tag.as_deref() == Some(DEFAULT_TAG)
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.full)
    }
}

/// Parses `value` into its normalised parts, or returns the reason it is invalid.
fn parse_reference(value: &str) -> Result<ImageReference, String> {
    if value.is_empty() {
        return Err("the reference is empty".to_owned());
    }
    if value.len() == 64
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(
            "a 64-character hexadecimal string is an image ID, not a repository name".to_owned(),
        );
    }

    let (domain, remainder) = split_domain(value);
    let remainder = remainder.as_str();

    // The lowercase rule is checked before the grammar so that `Foo:1` gets a specific reason
    // rather than a generic path component error.
    let remote_name = remainder
        .split_once(['@', ':'])
        .map_or(remainder, |(name, _)| name);
    if remote_name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "the repository name `{remote_name}` must be lowercase"
        ));
    }

    let (name_and_tag, digest) = match remainder.split_once('@') {
        Some((before, digest)) => (before, Some(digest)),
        None => (remainder, None),
    };
    let (path, tag) = split_tag(name_and_tag);

    validate_domain(&domain)?;
    validate_path(path)?;
    if let Some(tag) = tag {
        validate_tag(tag)?;
    }
    if let Some(digest) = digest {
        validate_digest(digest)?;
    }

    let name = format!("{domain}/{path}");
    if name.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(format!(
            "the repository name is {} bytes long, more than the maximum of {NAME_TOTAL_LENGTH_MAX}",
            name.len()
        ));
    }

    // ParseDockerRef drops the tag of a reference that has both, because the digest alone
    // identifies the content and that is the form containerd stores.
    let tag_implied = tag.is_none() && digest.is_none();
    let (full, tag) = match (digest, tag) {
        (Some(digest), _) => (format!("{name}@{digest}"), None),
        (None, Some(tag)) => (format!("{name}:{tag}"), Some(tag.to_owned())),
        (None, None) => (
            format!("{name}:{DEFAULT_TAG}"),
            Some(DEFAULT_TAG.to_owned()),
        ),
    };

    Ok(ImageReference {
        name_len: name.len(),
        full,
        tag_implied,
        tag,
        digest: digest.map(str::to_owned),
    })
}

/// Splits `value` into the registry host and the rest, applying Docker Hub's defaults.
///
/// The first component is a registry host only if it contains `.` or `:`, is `localhost`, or
/// contains an uppercase letter (repository components never do).
fn split_domain(value: &str) -> (String, String) {
    let (domain, remainder) = match value.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest.to_owned())
        }
        _ => (DEFAULT_DOMAIN, value.to_owned()),
    };

    let domain = if domain == LEGACY_DEFAULT_DOMAIN {
        DEFAULT_DOMAIN
    } else {
        domain
    };
    let remainder = if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        format!("{OFFICIAL_REPOSITORY_NAMESPACE}/{remainder}")
    } else {
        remainder
    };
    (domain.to_owned(), remainder)
}

/// Splits `repository[:tag]` at the last `:` that follows the last `/`.
fn split_tag(name_and_tag: &str) -> (&str, Option<&str>) {
    let last_component_start = name_and_tag.rfind('/').map_or(0, |index| index + 1);
    match name_and_tag[last_component_start..].rfind(':') {
        Some(offset) => {
            let colon = last_component_start + offset;
            (&name_and_tag[..colon], Some(&name_and_tag[colon + 1..]))
        }
        None => (name_and_tag, None),
    }
}

/// Validates a registry host: DNS labels separated by dots, or a bracketed IPv6 address,
/// optionally followed by `:port`.
fn validate_domain(domain: &str) -> Result<(), String> {
    let invalid = || format!("the registry host `{domain}` is invalid");

    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let (address, after) = rest.split_once(']').ok_or_else(invalid)?;
        if address.is_empty() || !address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(invalid());
        }
        match after {
            "" => (None, None),
            _ => (None, Some(after.strip_prefix(':').ok_or_else(invalid)?)),
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(domain), None),
        }
    };

    if let Some(host) = host {
        let valid_label = |label: &str| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if !host.split('.').all(valid_label) {
            return Err(invalid());
        }
    }
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid());
    }
    Ok(())
}

/// Validates the repository path: components of lowercase letters and digits, separated inside
/// a component by `.`, `_`, `__` or a run of `-`, and joined by `/`.
fn validate_path(path: &str) -> Result<(), String> {
    for component in path.split('/') {
        if !is_valid_path_component(component) {
            return Err(format!(
                "the repository path component `{component}` is invalid (use lowercase letters \
                 and digits, separated by `.`, `_`, `__` or `-`)"
            ));
        }
    }
    Ok(())
}

fn is_valid_path_component(component: &str) -> bool {
    let is_alphanumeric = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    if bytes.is_empty() || !is_alphanumeric(bytes[0]) || !is_alphanumeric(bytes[bytes.len() - 1]) {
        return false;
    }

    let mut index = 0;
    while index < bytes.len() {
        if is_alphanumeric(bytes[index]) {
            index += 1;
            continue;
        }
        let separator_start = index;
        while index < bytes.len() && !is_alphanumeric(bytes[index]) {
            index += 1;
        }
        let separator = &component[separator_start..index];
        let allowed = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !allowed {
            return false;
        }
    }
    true
}

/// Validates a tag: up to 128 characters of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
fn validate_tag(tag: &str) -> Result<(), String> {
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let valid = match tag.as_bytes().split_first() {
        Some((first, rest)) => {
            is_word(*first)
                && tag.len() <= TAG_LENGTH_MAX
                && rest.iter().all(|&b| is_word(b) || b == b'.' || b == b'-')
        }
        None => false,
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "the tag `{tag}` is invalid (a tag has 1 to {TAG_LENGTH_MAX} characters from \
             `A-Z a-z 0-9 _ . -` and does not start with `.` or `-`)"
        ))
    }
}

/// Validates a digest: `sha256`, `sha384` or `sha512`, a colon, and the lowercase hex encoding
/// of the matching length. These are the algorithms that `github.com/opencontainers/go-digest`
/// accepts.
fn validate_digest(digest: &str) -> Result<(), String> {
    let invalid = || {
        format!(
            "the digest `{digest}` is invalid (expected `sha256:` followed by 64 lowercase hex \
             digits, or a sha384 or sha512 digest)"
        )
    };
    let (algorithm, encoded) = digest.split_once(':').ok_or_else(invalid)?;
    let expected_len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(invalid()),
    };
    let is_lower_hex = encoded
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if encoded.len() == expected_len && is_lower_hex {
        Ok(())
    } else {
        Err(invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:4c2d9a2b6a1e7f3b8c5d0e9f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d";

    #[test]
    fn normalisation_table() {
        let digest_only = format!("x@{DIGEST}");
        let digest_only_expected = format!("docker.io/library/x@{DIGEST}");
        let tag_and_digest = format!("ghcr.io/o/r:v1@{DIGEST}");
        let tag_and_digest_expected = format!("ghcr.io/o/r@{DIGEST}");
        let cases: Vec<(&str, &str)> = vec![
            ("foo", "docker.io/library/foo:latest"),
            ("foo:1", "docker.io/library/foo:1"),
            ("foo:latest", "docker.io/library/foo:latest"),
            ("library/foo:1", "docker.io/library/foo:1"),
            ("docker.io/foo:1", "docker.io/library/foo:1"),
            ("index.docker.io/foo:1", "docker.io/library/foo:1"),
            ("index.docker.io/org/foo", "docker.io/org/foo:latest"),
            ("org/foo:2.0", "docker.io/org/foo:2.0"),
            ("ghcr.io/o/r:v1", "ghcr.io/o/r:v1"),
            ("ghcr.io/o/sub/r:v1", "ghcr.io/o/sub/r:v1"),
            ("localhost/x", "localhost/x:latest"),
            ("localhost:5000/x:y", "localhost:5000/x:y"),
            ("example.test/op:1.0", "example.test/op:1.0"),
            ("registry:5000/op", "registry:5000/op:latest"),
            ("[::1]:5000/op:1", "[::1]:5000/op:1"),
            ("Registry/op:1", "Registry/op:1"),
            (
                "foo_bar/a__b.c-d---e:v_1.2-3",
                "docker.io/foo_bar/a__b.c-d---e:v_1.2-3",
            ),
            (&digest_only, &digest_only_expected),
            (&tag_and_digest, &tag_and_digest_expected),
        ];
        for (input, expected) in cases {
            let reference = ImageReference::parse(input)
                .unwrap_or_else(|error| panic!("parsing `{input}` failed: {error}"));
            assert_eq!(reference.as_str(), expected, "normalised form of `{input}`");
            assert_eq!(reference.to_string(), expected, "Display of `{input}`");
        }
    }

    #[test]
    fn parts_of_normalised_reference() {
        let implied = ImageReference::parse("foo").unwrap();
        assert_eq!(implied.name(), "docker.io/library/foo");
        assert_eq!(implied.tag(), Some("latest"));
        assert_eq!(implied.digest(), None);
        assert!(implied.is_tag_implied());

        let tagged = ImageReference::parse("localhost:5000/x:y").unwrap();
        assert_eq!(tagged.name(), "localhost:5000/x");
        assert_eq!(tagged.tag(), Some("y"));
        assert!(!tagged.is_tag_implied());

        let pinned = ImageReference::parse(&format!("ghcr.io/o/r:v1@{DIGEST}")).unwrap();
        assert_eq!(pinned.name(), "ghcr.io/o/r");
        assert_eq!(pinned.tag(), None);
        assert_eq!(pinned.digest(), Some(DIGEST));
        assert!(!pinned.is_tag_implied());
    }

    #[test]
    fn latest_or_untagged_table() {
        let pinned_latest = format!("foo:latest@{DIGEST}");
        let digest_only = format!("foo@{DIGEST}");
        let cases: Vec<(&str, bool)> = vec![
            ("foo", true),
            ("foo:latest", true),
            ("ghcr.io/o/r", true),
            ("ghcr.io/o/r:latest", true),
            ("foo:1", false),
            ("foo:latest-alpine", false),
            ("foo:Latest", false),
            (&pinned_latest, false),
            (&digest_only, false),
        ];
        for (input, expected) in cases {
            let reference = ImageReference::parse(input).unwrap();
            assert_eq!(
                reference.is_latest_or_untagged(),
                expected,
                "is_latest_or_untagged for `{input}`"
            );
        }
    }

    #[test]
    fn invalid_references_rejected() {
        let too_long = format!("example.test/{}", "a".repeat(250));
        let long_tag = format!("foo:{}", "t".repeat(129));
        let cases: Vec<(&str, &str)> = vec![
            ("", "empty"),
            ("Foo:1", "must be lowercase"),
            ("example.test/Op:1", "must be lowercase"),
            ("foo:", "tag"),
            ("foo:-1", "tag"),
            ("foo:.1", "tag"),
            (&long_tag, "tag"),
            ("foo:1:2", "path component"),
            ("foo bar", "path component"),
            ("foo//bar", "path component"),
            ("-foo", "path component"),
            ("foo-", "path component"),
            ("a..b", "path component"),
            ("a___b", "path component"),
            ("a._b", "path component"),
            ("example.test/", "path component"),
            ("foo@sha256:abc", "digest"),
            ("foo@md5:d41d8cd98f00b204e9800998ecf8427e", "digest"),
            (
                "foo@sha256:4C2D9A2B6A1E7F3B8C5D0E9F1A2B3C4D5E6F708192A3B4C5D6E7F8091A2B3C4D",
                "digest",
            ),
            ("-bad.test/op:1", "registry host"),
            ("bad_host.test/op:1", "registry host"),
            ("registry:port/op", "registry host"),
            ("[zz]:5000/op", "registry host"),
            (
                "4c2d9a2b6a1e7f3b8c5d0e9f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d",
                "image ID",
            ),
            (&too_long, "maximum of 255"),
        ];
        for (input, reason_fragment) in cases {
            let error =
                ImageReference::parse(input).expect_err(&format!("`{input}` should be rejected"));
            let message = error.to_string();
            assert!(
                message.contains(&format!("`{input}`")),
                "message for `{input}` does not name the value: {message}"
            );
            assert!(
                message.contains(reason_fragment),
                "message for `{input}` does not mention `{reason_fragment}`: {message}"
            );
        }
    }
}
