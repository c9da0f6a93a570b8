//! What to boot: [`LimaSpec`], its `limactl start` arguments, and port forwarding rules.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use serde::Serialize;

use crate::name::InstanceName;

/// Lima's own default for `limactl start --timeout`. The time Lima spends downloading the image
/// does not count against it.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The template that [`LimaSpec::new`] sets.
pub const DEFAULT_TEMPLATE: &str = "template:k3s";

/// The port the k3s API server listens on in the guest.
pub const K3S_API_SERVER_PORT: u16 = 6443;

/// What to boot.
///
/// The typed fields map to `limactl start` flags; `params` and `set` pass template parameters
/// and raw yq expressions through unchanged.
#[derive(Clone, Debug)]
pub struct LimaSpec {
    /// The instance name.
    pub name: InstanceName,
    /// The template locator, for example `template:k3s` or a file path.
    pub template: String,
    /// Number of virtual CPUs (`--cpus`).
    pub cpus: Option<u32>,
    /// Guest memory in MiB, passed to `--memory` in GiB.
    pub memory_mib: Option<u64>,
    /// Disk size in GiB (`--disk`).
    pub disk_gib: Option<u64>,
    /// The VM driver (`--vm-type`): `vz`, `qemu`, `krunkit` or `wsl2`.
    pub vm_type: Option<String>,
    /// Networks to attach (`--network`, repeated), for example `lima:user-v2`.
    pub networks: Vec<String>,
    /// Template parameters (`--param KEY=VALUE` on Lima ≥ 2.2, `--set .param…` before).
    pub params: BTreeMap<String, String>,
    /// Names of `params` whose values are secrets, such as a k3s join token. Their values
    /// appear as `<redacted>` in the logs and errors about `limactl start`; limactl itself
    /// still receives them as arguments.
    pub secret_params: BTreeSet<String>,
    /// Raw yq expressions applied to the template (`--set`, repeated, in order).
    pub set: Vec<String>,
    /// Port forwarding rules; they replace the template's `.portForwards` when not empty.
    pub port_forwards: Vec<PortForward>,
    /// How long `limactl start` waits for the instance to become ready (`--timeout`).
    pub start_timeout: Duration,
    /// The guest user name (`.user.name`); Lima uses the host user's name when unset.
    pub ssh_user: Option<String>,
}

impl LimaSpec {
    /// Creates a spec for `template:k3s` with Lima's defaults for everything else.
    pub fn new(name: InstanceName) -> Self {
        Self {
            name,
            template: DEFAULT_TEMPLATE.to_owned(),
            cpus: None,
            memory_mib: None,
            disk_gib: None,
            vm_type: None,
            networks: Vec::new(),
            params: BTreeMap::new(),
            secret_params: BTreeSet::new(),
            set: Vec::new(),
            port_forwards: Vec::new(),
            start_timeout: DEFAULT_START_TIMEOUT,
            ssh_user: None,
        }
    }

    /// Sets the template locator.
    #[must_use]
    pub fn with_template(mut self, template: impl Into<String>) -> Self {
        self.template = template.into();
        self
    }

    /// Sets the number of virtual CPUs.
    #[must_use]
    pub fn with_cpus(mut self, cpus: u32) -> Self {
        self.cpus = Some(cpus);
        self
    }

    /// Sets the guest memory in MiB.
    #[must_use]
    pub fn with_memory_mib(mut self, memory_mib: u64) -> Self {
        self.memory_mib = Some(memory_mib);
        self
    }

    /// Sets the disk size in GiB.
    #[must_use]
    pub fn with_disk_gib(mut self, disk_gib: u64) -> Self {
        self.disk_gib = Some(disk_gib);
        self
    }

    /// Sets the VM driver.
    #[must_use]
    pub fn with_vm_type(mut self, vm_type: impl Into<String>) -> Self {
        self.vm_type = Some(vm_type.into());
        self
    }

    /// Adds a network.
    #[must_use]
    pub fn with_network(mut self, network: impl Into<String>) -> Self {
        self.networks.push(network.into());
        self
    }

    /// Sets a template parameter.
    #[must_use]
    pub fn with_param(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.insert(key.into(), value.into());
        self
    }

    /// Adds a raw yq expression.
    #[must_use]
    pub fn with_set(mut self, expression: impl Into<String>) -> Self {
        self.set.push(expression.into());
        self
    }

    /// Replaces the port forwarding rules.
    #[must_use]
    pub fn with_port_forwards(mut self, rules: Vec<PortForward>) -> Self {
        self.port_forwards = rules;
        self
    }

    /// Forwards guest port 6443 to host `port` and nothing else
    /// (see [`PortForward::pin_api_server`]).
    #[must_use]
    pub fn with_api_server_port(self, port: u16) -> Self {
        self.with_port_forwards(PortForward::pin_api_server(port))
    }

    /// Sets the `limactl start --timeout`.
    #[must_use]
    pub fn with_start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Sets the guest user name.
    #[must_use]
    pub fn with_ssh_user(mut self, user: impl Into<String>) -> Self {
        self.ssh_user = Some(user.into());
        self
    }

    /// Builds the arguments after `limactl` that create and boot this instance, for Lima ≥ 2.2:
    ///
    /// `start --tty=false --name=N [--cpus=N] [--memory=GIB] [--disk=GIB] [--vm-type=T]
    /// [--network=X]... [--param=K=V]... [--set=EXPR]... --timeout=DUR TEMPLATE`
    ///
    /// The `--set` expressions are the guest user (from `ssh_user`), then the caller's `set`,
    /// then the port forwarding rules, so the rules win over a caller's expression.
    pub fn start_args(&self) -> Vec<String> {
        self.start_args_with(ParamStyle::Flag)
    }

    /// Returns the values of the secret parameters, which logs and errors must not show.
    pub(crate) fn secret_values(&self) -> Vec<String> {
        self.secret_params
            .iter()
            .filter_map(|key| self.params.get(key))
            .filter(|value| !value.is_empty())
            .cloned()
            .collect()
    }

    pub(crate) fn start_args_with(&self, param_style: ParamStyle) -> Vec<String> {
        let mut args = vec![
            "start".to_owned(),
            "--tty=false".to_owned(),
            format!("--name={}", self.name),
        ];

        if let Some(cpus) = self.cpus {
            args.push(format!("--cpus={cpus}"));
        }
        if let Some(memory_mib) = self.memory_mib {
            args.push(format!("--memory={}", mib_to_gib(memory_mib)));
        }
        if let Some(disk_gib) = self.disk_gib {
            args.push(format!("--disk={disk_gib}"));
        }
        if let Some(vm_type) = &self.vm_type {
            args.push(format!("--vm-type={vm_type}"));
        }
        for network in &self.networks {
            args.push(format!("--network={network}"));
        }

        for (key, value) in &self.params {
            match param_style {
                ParamStyle::Flag => args.push(format!("--param={key}={value}")),
                ParamStyle::Set => args.push(format!(
                    "--set=.param[{}] = {}",
                    json_string(key),
                    json_string(value)
                )),
            }
        }

        if let Some(user) = &self.ssh_user {
            args.push(format!("--set=.user.name = {}", json_string(user)));
        }
        for expression in &self.set {
            args.push(format!("--set={expression}"));
        }
        if !self.port_forwards.is_empty() {
            args.push(format!(
                "--set={}",
                port_forwards_set_expression(&self.port_forwards)
            ));
        }

        args.push(format!("--timeout={}", go_duration(self.start_timeout)));
        args.push(self.template.clone());
        args
    }
}

/// The fix for a guest user name that [`is_valid_guest_user`] rejects.
pub(crate) const GUEST_USER_RULE: &str = "Lima requires a Linux user name matching \
     `^[a-z_][a-z0-9_-]*$`; use lowercase letters, digits, `_` and `-`.";

/// The fix for a template locator that [`is_usable_template`] rejects.
pub(crate) const TEMPLATE_RULE: &str =
    "limactl needs a template locator such as `template:k3s` or a file path.";

/// Checks a guest user name against Lima's own rule, `^[a-z_][a-z0-9_-]*$`
/// (`pkg/osutil/user.go` in <https://github.com/lima-vm/lima>).
pub(crate) fn is_valid_guest_user(user: &str) -> bool {
    let mut chars = user.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    first_ok && rest_ok
}

/// Checks that a template locator is not empty and cannot be parsed as a flag.
pub(crate) fn is_usable_template(template: &str) -> bool {
    !template.is_empty() && !template.starts_with('-')
}

/// How template parameters reach `limactl start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ParamStyle {
    /// `--param=K=V`, Lima ≥ 2.2.
    Flag,
    /// `--set=.param["K"] = "V"`, for Lima 2.0 and 2.1, which lack `--param`.
    Set,
}

/// The transport protocol a port forwarding rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP only.
    Tcp,
    /// UDP only.
    Udp,
    /// TCP and UDP (Lima's default).
    Any,
}

/// One `.portForwards` rule of a Lima instance; unset fields take Lima's defaults.
///
/// Rules are matched in order and the first match wins, before Lima's built-in catch-all that
/// forwards every guest port on 127.0.0.1 (and 0.0.0.0) to the same host port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PortForward {
    /// The guest port (`guestPort`).
    #[serde(rename = "guestPort", skip_serializing_if = "Option::is_none")]
    pub guest_port: Option<u16>,
    /// An inclusive guest port range (`guestPortRange`).
    #[serde(rename = "guestPortRange", skip_serializing_if = "Option::is_none")]
    pub guest_port_range: Option<[u16; 2]>,
    /// The host port (`hostPort`); Lima defaults it to the guest port.
    #[serde(rename = "hostPort", skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// An inclusive host port range (`hostPortRange`).
    #[serde(rename = "hostPortRange", skip_serializing_if = "Option::is_none")]
    pub host_port_range: Option<[u16; 2]>,
    /// The guest address the rule matches (`guestIP`); Lima defaults it to 127.0.0.1.
    #[serde(rename = "guestIP", skip_serializing_if = "Option::is_none")]
    pub guest_ip: Option<String>,
    /// Whether `guestIP: 0.0.0.0` matches only sockets bound to 0.0.0.0
    /// (`guestIPMustBeZero`). Lima 2.0 changed its default to `true` for `guestIP: 0.0.0.0`.
    #[serde(rename = "guestIPMustBeZero", skip_serializing_if = "Option::is_none")]
    pub guest_ip_must_be_zero: Option<bool>,
    /// The host address to listen on (`hostIP`); Lima defaults it to 127.0.0.1.
    #[serde(rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// The protocol (`proto`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<Proto>,
    /// Whether matching ports are not forwarded (`ignore`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore: Option<bool>,
    /// Whether the forward is set up at boot over SSH, independent of the guest agent
    /// (`static`, Lima ≥ 2.0).
    #[serde(rename = "static", skip_serializing_if = "Option::is_none")]
    pub static_forward: Option<bool>,
}

impl PortForward {
    /// Builds the rules that forward guest port 6443 to host 127.0.0.1:`port` and nothing else.
    ///
    /// Without them every k3s instance forwards guest 6443 to host 6443, so a second
    /// cluster's kubeconfig reaches the first cluster's API server. Lima's guest agent also
    /// forwards k3s's NodePort and LoadBalancer ports, which collide between clusters. The
    /// second rule ignores every other port on any guest address. It sets
    /// `guestIPMustBeZero: false` so that it also matches sockets bound to 127.0.0.1, because
    /// Lima 2.0 made `true` the default for `guestIP: 0.0.0.0`
    /// (<https://github.com/lima-vm/lima/pull/4221>).
    pub fn pin_api_server(port: u16) -> Vec<PortForward> {
        let mut rules = vec![PortForward {
            guest_port: Some(K3S_API_SERVER_PORT),
            host_port: Some(port),
            ..PortForward::default()
        }];
        rules.extend(PortForward::ignore_all());
        rules
    }

    /// Builds the rule that forwards no guest port at all, for instances whose ports must not
    /// reach the host, such as k3s agents: each runs a kubelet on the same ports, and Lima's
    /// default rules would forward them all to the same host ports. See
    /// [`pin_api_server`](Self::pin_api_server) for `guestIPMustBeZero`.
    pub fn ignore_all() -> Vec<PortForward> {
        vec![PortForward {
            guest_ip: Some(Ipv4Addr::UNSPECIFIED.to_string()),
            guest_ip_must_be_zero: Some(false),
            proto: Some(Proto::Any),
            ignore: Some(true),
            ..PortForward::default()
        }]
    }
}

/// Builds the yq expression that replaces `.portForwards` with `rules`, for one `--set`.
///
/// The rules are a JSON array, which yq reads as YAML flow syntax. Ports stay integers, unlike
/// with Lima's own `--port-forward` flag, which writes them as strings.
pub fn port_forwards_set_expression(rules: &[PortForward]) -> String {
    let json = serde_json::to_string(rules).expect("port forwarding rules serialize to JSON");
    format!(".portForwards = {json}")
}

/// Asks the OS for a free TCP port on 127.0.0.1 by binding port 0 and closing the listener.
///
/// This is racy by nature: another process can take the port between this call and Lima's
/// listen, and Lima only logs a failed listen as a warning in `ha.stderr.log`. Callers should
/// check after start that the port reaches the intended cluster (for example by verifying the
/// API server's certificate against the cluster's CA).
///
/// # Errors
///
/// The error from binding or from reading the local address.
pub fn pick_free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Converts MiB to a GiB decimal without trailing zeros: 4096 → `4`, 1536 → `1.5`.
///
/// The result is exact, because a MiB count divided by 1024 has at most ten decimals.
pub(crate) fn mib_to_gib(mib: u64) -> String {
    let whole = mib / 1024;
    let mut remainder = mib % 1024;
    if remainder == 0 {
        return whole.to_string();
    }
    let mut text = format!("{whole}.");
    while remainder != 0 {
        remainder *= 10;
        text.push(char::from(b'0' + (remainder / 1024) as u8));
        remainder %= 1024;
    }
    text
}

/// Formats a duration the way Go's `time.Duration.String` does for whole seconds, for example
/// `10m0s` or `1h0m5s`. Sub-second parts are rounded up, so a non-zero duration never
/// becomes `0s`.
pub(crate) fn go_duration(duration: Duration) -> String {
    let mut seconds = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        seconds += 1;
    }
    let hours = seconds / 3600;
    let minutes = seconds % 3600 / 60;
    let seconds = seconds % 60;
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// Quotes `text` as a JSON string, which is also a valid yq (YAML) double-quoted string.
pub(crate) fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn name(text: &str) -> InstanceName {
        InstanceName::new(text, Path::new("/l")).unwrap()
    }

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn start_args_minimal() {
        let spec = LimaSpec::new(name("kt-0a1b2c3d"));
        assert_eq!(
            spec.start_args(),
            strings(&[
                "start",
                "--tty=false",
                "--name=kt-0a1b2c3d",
                "--timeout=10m0s",
                "template:k3s"
            ])
        );
    }

    #[test]
    fn start_args_every_flag() {
        let spec = LimaSpec::new(name("kt-a"))
            .with_cpus(4)
            .with_memory_mib(1536)
            .with_disk_gib(20)
            .with_vm_type("qemu")
            .with_network("lima:user-v2")
            .with_network("vzNAT")
            .with_param("url", "https://lima-kt-s.internal:6443")
            .with_param("token", "abc")
            .with_ssh_user("dev")
            .with_set(".env.INSTALL_K3S_VERSION = \"v1.33.1+k3s1\"")
            .with_api_server_port(16443)
            .with_start_timeout(Duration::from_secs(480))
            .with_template("template:k3s");

        assert_eq!(
            spec.start_args(),
            strings(&[
                "start",
                "--tty=false",
                "--name=kt-a",
                "--cpus=4",
                "--memory=1.5",
                "--disk=20",
                "--vm-type=qemu",
                "--network=lima:user-v2",
                "--network=vzNAT",
                "--param=token=abc",
                "--param=url=https://lima-kt-s.internal:6443",
                "--set=.user.name = \"dev\"",
                "--set=.env.INSTALL_K3S_VERSION = \"v1.33.1+k3s1\"",
                "--set=.portForwards = [{\"guestPort\":6443,\"hostPort\":16443},\
                 {\"guestIP\":\"0.0.0.0\",\"guestIPMustBeZero\":false,\"proto\":\"any\",\"ignore\":true}]",
                "--timeout=8m0s",
                "template:k3s",
            ])
        );
    }

    #[test]
    fn start_args_params_as_set_before_2_2() {
        let spec = LimaSpec::new(name("kt-a")).with_param("url", "https://x:6443\"");
        assert_eq!(
            spec.start_args_with(ParamStyle::Set),
            strings(&[
                "start",
                "--tty=false",
                "--name=kt-a",
                "--set=.param[\"url\"] = \"https://x:6443\\\"\"",
                "--timeout=10m0s",
                "template:k3s",
            ])
        );
    }

    #[test]
    fn pin_api_server_expression() {
        assert_eq!(
            port_forwards_set_expression(&PortForward::pin_api_server(16443)),
            ".portForwards = [{\"guestPort\":6443,\"hostPort\":16443},{\"guestIP\":\"0.0.0.0\",\
             \"guestIPMustBeZero\":false,\"proto\":\"any\",\"ignore\":true}]"
        );
    }

    #[test]
    fn port_forward_all_fields_serialized() {
        let rule = PortForward {
            guest_port_range: Some([30000, 32767]),
            host_port_range: Some([30000, 32767]),
            host_ip: Some("127.0.0.1".into()),
            proto: Some(Proto::Tcp),
            static_forward: Some(true),
            ..PortForward::default()
        };
        assert_eq!(
            port_forwards_set_expression(&[rule]),
            ".portForwards = [{\"guestPortRange\":[30000,32767],\"hostPortRange\":[30000,32767],\
             \"hostIP\":\"127.0.0.1\",\"proto\":\"tcp\",\"static\":true}]"
        );
    }

    #[test]
    fn memory_mib_to_gib() {
        let cases = [
            (4096, "4"),
            (1536, "1.5"),
            (512, "0.5"),
            (1000, "0.9765625"),
            (1, "0.0009765625"),
            (0, "0"),
            (10240, "10"),
        ];
        for (mib, gib) in cases {
            assert_eq!(mib_to_gib(mib), gib, "{mib} MiB");
        }
    }

    #[test]
    fn go_duration_format() {
        let cases = [
            (Duration::from_secs(600), "10m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3605), "1h0m5s"),
            (Duration::from_secs(45), "45s"),
            (Duration::from_millis(1), "1s"),
            (Duration::from_millis(1500), "2s"),
            (Duration::ZERO, "0s"),
        ];
        for (duration, text) in cases {
            assert_eq!(go_duration(duration), text, "{duration:?}");
        }
    }

    #[test]
    fn free_port_is_bindable() {
        let port = pick_free_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }
}
