//! Platform strings (`os/arch[/variant]`) in the normalised form that containerd matches.

/// Maps Lima's `arch` (`x86_64`, `aarch64`, `armv7l`, `riscv64`, `s390x`, `ppc64le`) to the
/// containerd platform string of a Linux guest (`linux/amd64`, `linux/arm64`, `linux/arm/v7`,
/// `linux/riscv64`, `linux/s390x`, `linux/ppc64le`).
///
/// Returns `None` for any other value. The names are the `Arch` constants in Lima's
/// `pkg/limatype/lima_yaml.go`, which `limactl list --json` reports as `arch`.
pub fn guest_platform(lima_arch: &str) -> Option<&'static str> {
    match lima_arch {
        "x86_64" => Some("linux/amd64"),
        "aarch64" => Some("linux/arm64"),
        "armv7l" => Some("linux/arm/v7"),
        "riscv64" => Some("linux/riscv64"),
        "s390x" => Some("linux/s390x"),
        "ppc64le" => Some("linux/ppc64le"),
        _ => None,
    }
}

/// Formats a platform as `os/arch[/variant]` after containerd's normalisation
/// (`platforms.Normalize` in containerd 1.6).
///
/// Architecture aliases map to the Go names (`x86_64` to `amd64`, `aarch64` to `arm64`), the
/// default variants disappear (`arm64/v8`, `amd64/v1`), and a plain `arm` becomes `arm/v7`.
pub fn format_platform(os: &str, architecture: &str, variant: Option<&str>) -> String {
    let os = match os.to_ascii_lowercase().as_str() {
        "macos" => "darwin".to_owned(),
        other => other.to_owned(),
    };
    let (architecture, variant) = normalize_architecture(architecture, variant.unwrap_or(""));
    if variant.is_empty() {
        format!("{os}/{architecture}")
    } else {
        format!("{os}/{architecture}/{variant}")
    }
}

/// Normalises a platform string such as `linux/aarch64` or `linux/arm64/v8` to the form that
/// [`format_platform`] produces. A string without `/` is taken as an OS without architecture.
pub fn normalize_platform(platform: &str) -> String {
    let mut parts = platform.splitn(3, '/');
    let os = parts.next().unwrap_or_default();
    let architecture = parts.next().unwrap_or_default();
    let variant = parts.next();
    if architecture.is_empty() {
        return os.to_ascii_lowercase();
    }
    format_platform(os, architecture, variant)
}

fn normalize_architecture(architecture: &str, variant: &str) -> (String, String) {
    let architecture = architecture.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    match architecture.as_str() {
        "i386" => ("386".to_owned(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let variant = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".to_owned(), variant)
        }
        "aarch64" | "arm64" => {
            let variant = match variant.as_str() {
                "8" | "v8" | "v8.0" => String::new(),
                "9" | "9.0" | "v9.0" => "v9".to_owned(),
                _ => variant,
            };
            ("arm64".to_owned(), variant)
        }
        "armhf" => ("arm".to_owned(), "v7".to_owned()),
        "armel" => ("arm".to_owned(), "v6".to_owned()),
        "arm" => {
            let variant = match variant.as_str() {
                "" | "7" => "v7".to_owned(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".to_owned(), variant)
        }
        _ => (architecture, variant),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_platform_table() {
        let cases = [
            ("x86_64", Some("linux/amd64")),
            ("aarch64", Some("linux/arm64")),
            ("armv7l", Some("linux/arm/v7")),
            ("riscv64", Some("linux/riscv64")),
            ("s390x", Some("linux/s390x")),
            ("ppc64le", Some("linux/ppc64le")),
            ("amd64", None),
            ("X86_64", None),
            ("", None),
        ];
        for (lima_arch, expected) in cases {
            assert_eq!(
                guest_platform(lima_arch),
                expected,
                "Lima arch `{lima_arch}`"
            );
        }
    }

    #[test]
    fn guest_platforms_are_normalised() {
        for lima_arch in ["x86_64", "aarch64", "armv7l", "riscv64", "s390x", "ppc64le"] {
            let platform = guest_platform(lima_arch).unwrap();
            assert_eq!(
                normalize_platform(platform),
                platform,
                "Lima arch `{lima_arch}`"
            );
        }
    }

    #[test]
    fn normalize_platform_table() {
        let cases = [
            ("linux/amd64", "linux/amd64"),
            ("linux/x86_64", "linux/amd64"),
            ("linux/amd64/v1", "linux/amd64"),
            ("linux/amd64/v3", "linux/amd64/v3"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/arm64/9", "linux/arm64/v9"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/arm/6", "linux/arm/v6"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/armel", "linux/arm/v6"),
            ("linux/i386", "linux/386"),
            ("Linux/AMD64", "linux/amd64"),
            ("macos/arm64", "darwin/arm64"),
            ("linux/riscv64", "linux/riscv64"),
            ("linux", "linux"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize_platform(input), expected, "platform `{input}`");
        }
    }
}
