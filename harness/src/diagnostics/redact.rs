//! Removing secrets from collected text before it is written to disk.
//!
//! The rules are line-based and err on the side of removing too much: a value that follows a
//! secret-sounding key, a bearer credential, a PEM private key block, and every literal value in
//! the `Environment:` sections of `kubectl describe pod`. They catch the usual shapes (k3s
//! flags such as `--token=…`, `K3S_TOKEN=…` in provisioning output, kubeconfig fields such as
//! `client-key-data:`), not every possible encoding of a secret.

use std::sync::LazyLock;

use regex::Regex;

/// Text that replaces a removed value.
pub(crate) const REDACTED: &str = "<redacted>";

/// A secret-sounding key followed by `=` or `:`, and its value up to the next space, quote or
/// comma. Keys may carry a prefix and suffix (`K3S_TOKEN`, `--token-file`, `client-key-data`).
static KEY_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)([A-Za-z0-9_.-]*(?:token|passw(?:or)?d|secret|api[_-]?key|private[_-]?key|client[_-]?key[_-]?data|credentials?)[A-Za-z0-9_.-]*["']?\s*[=:]\s*["']?)([^\s"',]+)"#,
    )
    .expect("the key-value pattern is valid")
});

/// A secret flag and its value as separate words: `--token abc` or `"--token","abc"`.
static FLAG_WORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)(--[a-z-]*(?:token|password|secret)[a-z-]*["']?(?:\s+|,\s*)["']?)([^\s"',-][^\s"',]*)"#,
    )
    .expect("the flag pattern is valid")
});

/// A bearer token, or the credential of an `Authorization:` header of any scheme.
static AUTHORIZATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(\bbearer\s+|\bauthorization:\s*[A-Za-z]+\s+)([A-Za-z0-9._~+/=-]{8,})")
        .expect("the authorization pattern is valid")
});

/// An environment variable line of `kubectl describe pod`: indentation, name, colon, spacing,
/// value.
static ENV_ENTRY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(\s+)([A-Za-z_][A-Za-z0-9_.-]*):(\s+)(.*)$")
        .expect("the environment entry pattern is valid")
});

/// Returns `text` with the secrets that the module's rules recognise replaced by
/// [`REDACTED`].
pub(crate) fn redact(text: &str) -> String {
    let mut output = String::with_capacity(text.len());
    let mut in_private_key = false;
    let mut environment: Option<EnvironmentSection> = None;

    for line in text.split_inclusive('\n') {
        let (content, newline) = match line.strip_suffix('\n') {
            Some(content) => (content, "\n"),
            None => (line, ""),
        };

        if in_private_key {
            if content.contains("-----END") && content.contains("PRIVATE KEY-----") {
                in_private_key = false;
            }
            continue;
        }
        if content.contains("-----BEGIN") && content.contains("PRIVATE KEY-----") {
            in_private_key = !content.contains("-----END");
            output.push_str(REDACTED);
            output.push_str(" (private key)");
            output.push_str(newline);
            continue;
        }

        if let Some(section) = &mut environment {
            match section.redact_line(content) {
                SectionLine::Redacted(Some(redacted)) => {
                    output.push_str(&redacted);
                    output.push_str(newline);
                    continue;
                }
                SectionLine::Redacted(None) => continue,
                SectionLine::Ended => environment = None,
            }
        }
        if content.trim() == "Environment:" {
            environment = Some(EnvironmentSection::new(indentation(content)));
        }

        output.push_str(&redact_line(content));
        output.push_str(newline);
    }
    output
}

/// Applies the key-value, flag and authorization rules to one line.
fn redact_line(line: &str) -> String {
    let replacement = format!("${{1}}{REDACTED}");
    let line = KEY_VALUE.replace_all(line, replacement.as_str());
    let line = FLAG_WORD.replace_all(&line, replacement.as_str());
    let line = AUTHORIZATION.replace_all(&line, replacement.as_str());
    line.into_owned()
}

/// The state of an `Environment:` section of `kubectl describe pod`.
///
/// kubectl prints one `NAME:  value` line per variable, indented below the header, and prints
/// the further lines of a multi-line value indented further. References to Secrets and
/// ConfigMaps (`<set to the key 'k' in secret 's'>`) name no value and are kept. The section
/// ends at the first line indented no deeper than its header (`Mounts:`).
struct EnvironmentSection {
    header_indentation: usize,
    entry_indentation: Option<usize>,
}

enum SectionLine {
    /// The line belongs to the section; `None` drops it.
    Redacted(Option<String>),
    /// The line is the first one after the section.
    Ended,
}

impl EnvironmentSection {
    fn new(header_indentation: usize) -> Self {
        EnvironmentSection {
            header_indentation,
            entry_indentation: None,
        }
    }

    fn redact_line(&mut self, line: &str) -> SectionLine {
        if line.trim().is_empty() {
            return SectionLine::Redacted(None);
        }
        let indentation = indentation(line);
        if indentation <= self.header_indentation {
            return SectionLine::Ended;
        }
        let entry_indentation = *self.entry_indentation.get_or_insert(indentation);
        if indentation != entry_indentation {
            // A further line of a multi-line value.
            return SectionLine::Redacted(None);
        }
        let Some(entry) = ENV_ENTRY.captures(line) else {
            return SectionLine::Redacted(Some(format!("{}{REDACTED}", " ".repeat(indentation))));
        };
        let value = &entry[4];
        let kept = if value.starts_with("<set to the key ") {
            value
        } else {
            REDACTED
        };
        SectionLine::Redacted(Some(format!(
            "{}{}:{}{kept}",
            &entry[1], &entry[2], &entry[3]
        )))
    }
}

/// Width of the line's leading whitespace, in characters.
fn indentation(line: &str) -> usize {
    line.chars().take_while(|c| c.is_whitespace()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_secrets_are_redacted() {
        let cases = [
            (
                "K3S_TOKEN=K10abc::server:def sh -",
                "K3S_TOKEN=<redacted> sh -",
            ),
            ("--token=abc123", "--token=<redacted>"),
            (
                "    client-key-data: LS0tLS1CRUdJTg==",
                "    client-key-data: <redacted>",
            ),
            ("token: \"abc\"", "token: \"<redacted>\""),
            (
                "{\"password\":\"hunter2\",\"user\":\"a\"}",
                "{\"password\":\"<redacted>\",\"user\":\"a\"}",
            ),
            ("DB_PASSWD = s3cr3t", "DB_PASSWD = <redacted>"),
        ];
        for (line, expected) in cases {
            assert_eq!(redact(line), expected, "{line}");
        }
    }

    #[test]
    fn flags_with_separate_values_are_redacted() {
        assert_eq!(
            redact("k3s agent --token abc123 --server https://x"),
            "k3s agent --token <redacted> --server https://x"
        );
        assert_eq!(
            redact(r#"["server","--token","abc123"]"#),
            r#"["server","--token","<redacted>"]"#
        );
    }

    #[test]
    fn authorization_credentials_are_redacted() {
        assert_eq!(
            redact("Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig"),
            "Authorization: Bearer <redacted>"
        );
        assert_eq!(
            redact("authorization: Basic dXNlcjpwYXNzd29yZA=="),
            "authorization: Basic <redacted>"
        );
        assert_eq!(
            redact("basic configuration loaded"),
            "basic configuration loaded"
        );
    }

    #[test]
    fn private_key_blocks_are_removed() {
        let text = "before\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabc\n\
                    -----END RSA PRIVATE KEY-----\nafter\n";

        let redacted = redact(text);

        assert_eq!(redacted, "before\n<redacted> (private key)\nafter\n");
    }

    #[test]
    fn ordinary_lines_are_unchanged() {
        let text = "Dec 04 k3s[812]: I1204 Starting kubelet\nReady=True reason=KubeletReady\n";

        assert_eq!(redact(text), text);
    }

    #[test]
    fn describe_environment_values_are_redacted() {
        // The shape of `kubectl describe pod` output, as kubectl 1.32 prints it.
        let text = "\
Containers:
  c:
    Image:      busybox
    Args:
      --token=abc123
      run
    Environment:
      PLAIN:       hunter2
      MULTI:       line one
                   password: xyz
                   
      FROMSECRET:  <set to the key 'k' in secret 's'>  Optional: false
      FIELD:       p1 (:metadata.name)
    Mounts:        <none>
Volumes:           <none>
";

        let redacted = redact(text);

        assert_eq!(
            redacted,
            "\
Containers:
  c:
    Image:      busybox
    Args:
      --token=<redacted>
      run
    Environment:
      PLAIN:       <redacted>
      MULTI:       <redacted>
      FROMSECRET:  <set to the key 'k' in secret 's'>  Optional: false
      FIELD:       <redacted>
    Mounts:        <none>
Volumes:           <none>
"
        );
    }

    #[test]
    fn empty_environment_section_ends_at_next_field() {
        let text = "    Environment:    <none>\n    Mounts:         <none>\n";

        assert_eq!(redact(text), text);
    }
}
