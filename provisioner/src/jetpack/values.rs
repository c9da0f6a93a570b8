//! Parsers for the string values of a provision config. Each returns
//! [`ConfigError::InvalidValue`] naming the key, the value and the expected form.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::error::ConfigError;
use crate::spec::{PortForward, Proto};

/// The syntax of one port forwarding rule, for error messages.
const PORT_FORWARD_SYNTAX: &str = "`[HOST_IP:]HOST_PORT:GUEST_PORT[/PROTO]`, such as \
                                   `16443:6443` or `127.0.0.1:8080:80/tcp`";

/// The description and an example of a whole-number setting, for error messages.
pub(super) struct Count {
    /// The meaning of the number, as the clause after "it is", for example
    /// "the memory in MiB (Jetpack calls it MB)".
    pub(super) meaning: &'static str,
    /// A typical value.
    pub(super) example: &'static str,
}

fn invalid(key: &str, value: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.to_owned(),
        value: value.to_owned(),
        problem: problem.into(),
    }
}

/// Parses a whole number above 0 that fits in `T`, written in ASCII digits only.
pub(super) fn parse_count<T: TryFrom<u64>>(
    key: &str,
    value: &str,
    count: &Count,
) -> Result<T, ConfigError> {
    let Count { meaning, example } = count;
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(invalid(
            key,
            value,
            format!(
                "it is {meaning} and must be a whole number written in digits only, such as \
                 `{example}`."
            ),
        ));
    }

    let too_large = || {
        invalid(
            key,
            value,
            format!(
                "it is {meaning}, and this number is too large; use a value such as `{example}`."
            ),
        )
    };
    let number: u64 = value.parse().map_err(|_| too_large())?;
    if number == 0 {
        return Err(invalid(
            key,
            value,
            format!("it is {meaning} and must be above 0, such as `{example}`."),
        ));
    }
    T::try_from(number).map_err(|_| too_large())
}

/// Parses a duration written as whole hours, minutes and seconds (`1h30m`, `90s`) or as plain
/// seconds (`600`); it must be above 0.
pub(super) fn parse_duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let malformed = || {
        invalid(
            key,
            value,
            "it is a duration and must be written as whole hours, minutes and seconds such as \
             `10m`, `1h30m` or `90s`, or as plain seconds such as `600`.",
        )
    };

    let seconds = if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
        value.parse::<u64>().map_err(|_| malformed())?
    } else {
        parse_unit_sequence(value).ok_or_else(malformed)?
    };
    if seconds == 0 {
        return Err(invalid(
            key,
            value,
            "it is a duration and must be above 0, such as `10m`.",
        ));
    }
    Ok(Duration::from_secs(seconds))
}

/// Sums a sequence such as `1h30m5s` into seconds; `None` when it is empty, malformed or
/// overflows.
fn parse_unit_sequence(text: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        let unit_seconds = match rest.as_bytes().get(digits)? {
            b'h' => 3600,
            b'm' => 60,
            b's' => 1,
            _ => return None,
        };
        total = total.checked_add(number.checked_mul(unit_seconds)?)?;
        rest = &rest[digits + 1..];
    }
    Some(total)
}

/// Parses port forwarding rules separated by commas or whitespace.
pub(super) fn parse_port_forwards(key: &str, value: &str) -> Result<Vec<PortForward>, ConfigError> {
    let rules: Vec<&str> = value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|rule| !rule.is_empty())
        .collect();
    if rules.is_empty() {
        return Err(invalid(
            key,
            value,
            format!(
                "it contains no rule; write rules of the form {PORT_FORWARD_SYNTAX}, or remove \
                 the key."
            ),
        ));
    }
    rules
        .into_iter()
        .map(|rule| parse_port_forward(rule).map_err(|problem| invalid(key, value, problem)))
        .collect()
}

/// Parses one rule `[HOST_IP:]HOST_PORT:GUEST_PORT[/PROTO]`; the error is the problem text.
fn parse_port_forward(rule: &str) -> Result<PortForward, String> {
    let (addresses, proto) = match rule.split_once('/') {
        Some((addresses, proto)) => (addresses, Some(parse_proto(rule, proto)?)),
        None => (rule, None),
    };

    let parts: Vec<&str> = addresses.split(':').collect();
    let (host_ip, host_port, guest_port) = match parts.as_slice() {
        [host_port, guest_port] => (None, *host_port, *guest_port),
        [host_ip, host_port, guest_port] => {
            let address: Ipv4Addr = host_ip.parse().map_err(|_| {
                format!(
                    "the rule `{rule}` has the host address `{host_ip}`, which is not an IPv4 \
                     address; use an address such as `127.0.0.1`."
                )
            })?;
            (Some(address.to_string()), *host_port, *guest_port)
        }
        _ => {
            return Err(format!(
                "the rule `{rule}` is not of the form {PORT_FORWARD_SYNTAX}."
            ));
        }
    };

    Ok(PortForward {
        guest_port: Some(parse_port(rule, guest_port)?),
        host_port: Some(parse_port(rule, host_port)?),
        host_ip,
        proto,
        ..PortForward::default()
    })
}

fn parse_proto(rule: &str, proto: &str) -> Result<Proto, String> {
    match proto {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        "any" => Ok(Proto::Any),
        _ => Err(format!(
            "the rule `{rule}` has the protocol `{proto}`; use `tcp`, `udp` or `any`."
        )),
    }
}

/// Parses a port of a rule. Lima rejects 0 and 22 in `portForwards`
/// (`validatePort` in `pkg/limayaml/validate.go`, <https://github.com/lima-vm/lima>).
fn parse_port(rule: &str, port: &str) -> Result<u16, String> {
    let number: u16 = port
        .parse()
        .ok()
        .filter(|_| port.bytes().all(|byte| byte.is_ascii_digit()))
        .ok_or_else(|| {
            format!(
                "the rule `{rule}` has the port `{port}`, but ports are whole numbers from 1 to \
                 65535; write the rule as {PORT_FORWARD_SYNTAX}."
            )
        })?;
    match number {
        0 => Err(format!(
            "the rule `{rule}` has the port 0, but ports are whole numbers from 1 to 65535."
        )),
        22 => Err(format!(
            "the rule `{rule}` uses port 22, which Lima rejects in port forwarding rules \
             because it forwards SSH itself; Jetpack reaches the guest's SSH through \
             `jet_ssh_port`, so remove the rule."
        )),
        _ => Ok(number),
    }
}

/// Splits a comma-separated list of network names.
pub(super) fn parse_networks(key: &str, value: &str) -> Result<Vec<String>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .map(|network| {
            if network.is_empty() {
                return Err(invalid(
                    key,
                    value,
                    "it contains an empty network name; separate names with single commas, such \
                     as `lima:user-v2,vzNAT`.",
                ));
            }
            if network.starts_with('-') || network.contains(char::is_whitespace) {
                return Err(invalid(
                    key,
                    value,
                    format!(
                        "the network name `{network}` starts with `-` or contains whitespace; use \
                         a Lima network such as `lima:user-v2`, `lima:shared` or `vzNAT`."
                    ),
                ));
            }
            Ok(network.to_owned())
        })
        .collect()
}

/// Checks a VM driver name: Lima's drivers (`vz`, `qemu`, `krunkit`, `wsl2`) and driver
/// plugins are named in lowercase letters and digits.
pub(super) fn parse_vm_type(key: &str, value: &str) -> Result<String, ConfigError> {
    let plausible = !value.is_empty()
        && value
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit());
    if !plausible {
        return Err(invalid(
            key,
            value,
            "it is the VM driver; use `vz`, `qemu`, `krunkit`, `wsl2` or the name of an \
             installed driver plugin.",
        ));
    }
    Ok(value.to_owned())
}

/// Checks a template parameter name against Lima's rule `^[a-zA-Z][a-zA-Z0-9_]*$`
/// (`pkg/limayaml/validate.go` in <https://github.com/lima-vm/lima>).
pub(super) fn is_valid_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Returns the first control character other than tab in a parameter value. Lima rejects
/// every unprintable character other than tab and space there. Control characters are the
/// ones a YAML string is likely to carry by mistake, such as a newline from a block scalar.
pub(super) fn first_control_character(value: &str) -> Option<char> {
    value.chars().find(|c| c.is_control() && *c != '\t')
}
