use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::name::NameError;

/// A `LIMA_HOME` short enough for any test name; it need not exist.
const LIMA_HOME: &str = "/tmp/lima-jp";

fn config(value: Value) -> ProvisionConfig {
    serde_json::from_value(value).expect("the test config deserializes")
}

fn plan(value: Value) -> Result<ProvisionPlan, ConfigError> {
    config(value).plan("web1", Path::new(LIMA_HOME))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

struct ValidCase {
    label: &'static str,
    config: Value,
    start_args: &'static [&'static str],
    state: ProvisionState,
    ready_timeout: Duration,
}

fn valid_cases() -> Vec<ValidCase> {
    let default_wait = DEFAULT_WAIT_TIMEOUT;
    vec![
        ValidCase {
            label: "minimal",
            config: json!({"type": "lima"}),
            start_args: &[
                "start",
                "--tty=false",
                "--name=web1",
                "--timeout=10m0s",
                "template:k3s",
            ],
            state: ProvisionState::Present,
            ready_timeout: default_wait,
        },
        ValidCase {
            label: "hostname overrides the inventory name",
            config: json!({"type": "lima", "cluster": "local", "hostname": "k3s-a"}),
            start_args: &[
                "start",
                "--tty=false",
                "--name=k3s-a",
                "--timeout=10m0s",
                "template:k3s",
            ],
            state: ProvisionState::Present,
            ready_timeout: default_wait,
        },
        ValidCase {
            label: "full",
            config: json!({
                "type": "lima",
                "state": "Present",
                "cluster": "local",
                "memory": "1536",
                "cores": "4",
                "ssh_user": "dev",
                "wait_for_host": false,
                "wait_timeout": 120,
                "wait_delay": 1,
                "wait_strategy": "Simple",
                "wait_max_delay": 5,
                "template": "template:k3s",
                "disk": "30",
                "vm_type": "qemu",
                "network": "lima:user-v2, vzNAT",
                "set": ".env.K3S_DEBUG = \"1\"",
                "start_timeout": "8m",
            }),
            start_args: &[
                "start",
                "--tty=false",
                "--name=web1",
                "--cpus=4",
                "--memory=1.5",
                "--disk=30",
                "--vm-type=qemu",
                "--network=lima:user-v2",
                "--network=vzNAT",
                "--set=.user.name = \"dev\"",
                "--set=.env.K3S_DEBUG = \"1\"",
                "--timeout=8m0s",
                "template:k3s",
            ],
            state: ProvisionState::Present,
            ready_timeout: Duration::from_secs(120),
        },
        ValidCase {
            label: "template parameters",
            config: json!({
                "type": "lima",
                "param.url": "https://lima-k3s-server.internal:6443",
                "param.token": "K10abc::server:def",
                "param.install_Version2": "v1.33.1+k3s1",
            }),
            start_args: &[
                "start",
                "--tty=false",
                "--name=web1",
                "--param=install_Version2=v1.33.1+k3s1",
                "--param=token=K10abc::server:def",
                "--param=url=https://lima-k3s-server.internal:6443",
                "--timeout=10m0s",
                "template:k3s",
            ],
            state: ProvisionState::Present,
            ready_timeout: default_wait,
        },
        ValidCase {
            label: "port forwards",
            config: json!({
                "type": "lima",
                "port_forwards": "16443:6443, 127.0.0.1:8080:80/tcp  5353:53/udp,9000:9000/any",
            }),
            start_args: &[
                "start",
                "--tty=false",
                "--name=web1",
                "--set=.portForwards = [{\"guestPort\":6443,\"hostPort\":16443},\
                 {\"guestPort\":80,\"hostPort\":8080,\"hostIP\":\"127.0.0.1\",\"proto\":\"tcp\"},\
                 {\"guestPort\":53,\"hostPort\":5353,\"proto\":\"udp\"},\
                 {\"guestPort\":9000,\"hostPort\":9000,\"proto\":\"any\"}]",
                "--timeout=10m0s",
                "template:k3s",
            ],
            state: ProvisionState::Present,
            ready_timeout: default_wait,
        },
        ValidCase {
            label: "set before port forwards",
            config: json!({
                "type": "lima",
                "set": ".portForwards = []",
                "port_forwards": "16443:6443",
            }),
            start_args: &[
                "start",
                "--tty=false",
                "--name=web1",
                "--set=.portForwards = []",
                "--set=.portForwards = [{\"guestPort\":6443,\"hostPort\":16443}]",
                "--timeout=10m0s",
                "template:k3s",
            ],
            state: ProvisionState::Present,
            ready_timeout: default_wait,
        },
        ValidCase {
            label: "template file and start timeout in hours",
            config: json!({
                "type": "lima",
                "template": "/srv/lima/k3s-agent.yaml",
                "start_timeout": "1h30m",
            }),
            start_args: &[
                "start",
                "--tty=false",
                "--name=web1",
                "--timeout=1h30m0s",
                "/srv/lima/k3s-agent.yaml",
            ],
            state: ProvisionState::Present,
            ready_timeout: default_wait,
        },
        ValidCase {
            label: "start timeout in plain seconds",
            config: json!({"type": "lima", "start_timeout": "90"}),
            start_args: &[
                "start",
                "--tty=false",
                "--name=web1",
                "--timeout=1m30s",
                "template:k3s",
            ],
            state: ProvisionState::Present,
            ready_timeout: default_wait,
        },
        ValidCase {
            label: "stopped",
            config: json!({"type": "lima", "state": "stopped"}),
            start_args: &[
                "start",
                "--tty=false",
                "--name=web1",
                "--timeout=10m0s",
                "template:k3s",
            ],
            state: ProvisionState::Stopped,
            ready_timeout: default_wait,
        },
    ]
}

#[test]
fn valid_configs_map_to_start_args() {
    for case in valid_cases() {
        let plan = plan(case.config).unwrap_or_else(|error| panic!("{}: {error}", case.label));

        assert_eq!(
            plan.spec.start_args(),
            strings(case.start_args),
            "{}",
            case.label
        );
        assert_eq!(plan.state, case.state, "{}", case.label);
        assert_eq!(plan.ready_timeout, case.ready_timeout, "{}", case.label);
    }
}

#[test]
fn full_config_fills_spec_fields() {
    let plan = plan(json!({
        "type": "lima",
        "memory": "4096",
        "cores": "2",
        "disk": "30",
        "vm_type": "vz",
        "ssh_user": "_svc-1",
    }))
    .unwrap();

    assert_eq!(plan.spec.name.as_str(), "web1");
    assert_eq!(plan.spec.memory_mib, Some(4096));
    assert_eq!(plan.spec.cpus, Some(2));
    assert_eq!(plan.spec.disk_gib, Some(30));
    assert_eq!(plan.spec.vm_type.as_deref(), Some("vz"));
    assert_eq!(plan.spec.ssh_user.as_deref(), Some("_svc-1"));
    assert_eq!(plan.spec.template, crate::DEFAULT_TEMPLATE);
}

#[test]
fn states_parse_like_jetpack() {
    let cases = [
        ("present", ProvisionState::Present),
        ("PRESENT", ProvisionState::Present),
        ("stopped", ProvisionState::Stopped),
        ("absent", ProvisionState::Absent),
        ("destroyed", ProvisionState::Destroyed),
        ("force-absent", ProvisionState::Destroyed),
    ];
    for (text, state) in cases {
        assert_eq!(ProvisionState::parse(text).unwrap(), state, "{text}");
        let planned = plan(json!({"type": "lima", "state": text})).unwrap();
        assert_eq!(planned.state, state, "{text}");
    }
}

#[test]
fn missing_state_means_present() {
    let config = config(json!({"type": "lima"}));

    assert_eq!(config.state, "present");
    assert!(config.extra.is_empty());
}

/// Invalid configs and their exact messages, for the inventory host name `web1`.
fn invalid_cases() -> Vec<(Value, &'static str)> {
    vec![
        (
            json!({"type": "proxmox_lxc"}),
            "The provision type is \"proxmox_lxc\", but this provisioner handles `type: lima`; \
             set `type: lima` in the host's `provision:` block.",
        ),
        (
            json!({"type": "lima", "state": "running"}),
            "The provision setting `state` has the invalid value \"running\"; use `present`, \
             `stopped`, `absent` or `destroyed`.",
        ),
        (
            json!({"type": "lima", "memory": "2G"}),
            "The provision setting `memory` has the invalid value \"2G\": it is the memory in \
             MiB (Jetpack calls it MB) and must be a whole number written in digits only, such \
             as `4096`.",
        ),
        (
            json!({"type": "lima", "memory": ""}),
            "The provision setting `memory` has the invalid value \"\": it is the memory in MiB \
             (Jetpack calls it MB) and must be a whole number written in digits only, such as \
             `4096`.",
        ),
        (
            json!({"type": "lima", "memory": "0"}),
            "The provision setting `memory` has the invalid value \"0\": it is the memory in MiB \
             (Jetpack calls it MB) and must be above 0, such as `4096`.",
        ),
        (
            json!({"type": "lima", "memory": "99999999999999999999999"}),
            "The provision setting `memory` has the invalid value \"99999999999999999999999\": \
             it is the memory in MiB (Jetpack calls it MB), and this number is too large; use a \
             value such as `4096`.",
        ),
        (
            json!({"type": "lima", "cores": "0"}),
            "The provision setting `cores` has the invalid value \"0\": it is the number of \
             virtual CPUs and must be above 0, such as `2`.",
        ),
        (
            json!({"type": "lima", "cores": "two"}),
            "The provision setting `cores` has the invalid value \"two\": it is the number of \
             virtual CPUs and must be a whole number written in digits only, such as `2`.",
        ),
        (
            json!({"type": "lima", "cores": "4294967296"}),
            "The provision setting `cores` has the invalid value \"4294967296\": it is the \
             number of virtual CPUs, and this number is too large; use a value such as `2`.",
        ),
        (
            json!({"type": "lima", "disk": "30G"}),
            "The provision setting `disk` has the invalid value \"30G\": it is the disk size in \
             GiB and must be a whole number written in digits only, such as `30`.",
        ),
        (
            json!({"type": "lima", "ssh_user": "Dev"}),
            "The provision setting `ssh_user` has the invalid value \"Dev\": Lima requires a \
             Linux user name matching `^[a-z_][a-z0-9_-]*$`; use lowercase letters, digits, `_` \
             and `-`.",
        ),
        (
            json!({"type": "lima", "wait_timeout": 0}),
            "The provision setting `wait_timeout` has the invalid value \"0\": it is the \
             readiness deadline in seconds and must be above 0, such as `300`.",
        ),
        (
            json!({"type": "lima", "wait_strategy": "linear"}),
            "The provision setting `wait_strategy` has the invalid value \"linear\": Jetpack \
             knows the strategies `simple` and `backoff`, and reads any other value as \
             `backoff`; use one of them.",
        ),
        (
            json!({"type": "lima", "hostname": "web 1"}),
            "The provision setting `hostname` has the invalid value \"web 1\": it is the Lima \
             instance name, and it contains ' ', but Lima allows only ASCII letters, digits and \
             the separators `.`, `_` and `-`; replace that character, for example with `-`.",
        ),
        (
            json!({"type": "lima", "template": ""}),
            "The provision setting `template` has the invalid value \"\": limactl needs a \
             template locator such as `template:k3s` or a file path.",
        ),
        (
            json!({"type": "lima", "template": "--plain"}),
            "The provision setting `template` has the invalid value \"--plain\": limactl needs \
             a template locator such as `template:k3s` or a file path.",
        ),
        (
            json!({"type": "lima", "template": " template:k3s"}),
            "The provision setting `template` has the invalid value \" template:k3s\": limactl \
             needs a template locator such as `template:k3s` or a file path.",
        ),
        (
            json!({"type": "lima", "vm_type": "QEMU"}),
            "The provision setting `vm_type` has the invalid value \"QEMU\": it is the VM \
             driver; use `vz`, `qemu`, `krunkit`, `wsl2` or the name of an installed driver \
             plugin.",
        ),
        (
            json!({"type": "lima", "network": "lima:user-v2,,vzNAT"}),
            "The provision setting `network` has the invalid value \"lima:user-v2,,vzNAT\": it \
             contains an empty network name; separate names with single commas, such as \
             `lima:user-v2,vzNAT`.",
        ),
        (
            json!({"type": "lima", "network": "--debug"}),
            "The provision setting `network` has the invalid value \"--debug\": the network \
             name `--debug` starts with `-` or contains whitespace; use a Lima network such as \
             `lima:user-v2`, `lima:shared` or `vzNAT`.",
        ),
        (
            json!({"type": "lima", "set": "  "}),
            "The provision setting `set` has the invalid value \"  \": it is empty; write a yq \
             expression such as `.env.K3S_DEBUG = \"1\"`, or remove the key.",
        ),
        (
            json!({"type": "lima", "param.1url": "x"}),
            "The provision setting `param.1url` has the invalid value \"x\": the part after \
             `param.` is the template parameter's name, which Lima requires to start with a \
             letter followed by letters, digits or `_`; fix the key, for example `param.url`.",
        ),
        (
            json!({"type": "lima", "param.": "x"}),
            "The provision setting `param.` has the invalid value \"x\": the part after \
             `param.` is the template parameter's name, which Lima requires to start with a \
             letter followed by letters, digits or `_`; fix the key, for example `param.url`.",
        ),
        (
            json!({"type": "lima", "param.token": "secret\nvalue"}),
            "The provision setting `param.token` contains the control character '\\n', which \
             Lima rejects in template parameters; remove it (the value is not shown because \
             parameters can hold tokens).",
        ),
        (
            json!({"type": "lima", "port_forwards": " , "}),
            "The provision setting `port_forwards` has the invalid value \" , \": it contains \
             no rule; write rules of the form `[HOST_IP:]HOST_PORT:GUEST_PORT[/PROTO]`, such as \
             `16443:6443` or `127.0.0.1:8080:80/tcp`, or remove the key.",
        ),
        (
            json!({"type": "lima", "port_forwards": "16443"}),
            "The provision setting `port_forwards` has the invalid value \"16443\": the rule \
             `16443` is not of the form `[HOST_IP:]HOST_PORT:GUEST_PORT[/PROTO]`, such as \
             `16443:6443` or `127.0.0.1:8080:80/tcp`.",
        ),
        (
            json!({"type": "lima", "port_forwards": "1:2:3:4"}),
            "The provision setting `port_forwards` has the invalid value \"1:2:3:4\": the rule \
             `1:2:3:4` is not of the form `[HOST_IP:]HOST_PORT:GUEST_PORT[/PROTO]`, such as \
             `16443:6443` or `127.0.0.1:8080:80/tcp`.",
        ),
        (
            json!({"type": "lima", "port_forwards": "16443:6443 http:80"}),
            "The provision setting `port_forwards` has the invalid value \"16443:6443 http:80\": \
             the rule `http:80` has the port `http`, but ports are whole numbers from 1 to \
             65535; write the rule as `[HOST_IP:]HOST_PORT:GUEST_PORT[/PROTO]`, such as \
             `16443:6443` or `127.0.0.1:8080:80/tcp`.",
        ),
        (
            json!({"type": "lima", "port_forwards": "+80:80"}),
            "The provision setting `port_forwards` has the invalid value \"+80:80\": the rule \
             `+80:80` has the port `+80`, but ports are whole numbers from 1 to 65535; write the \
             rule as `[HOST_IP:]HOST_PORT:GUEST_PORT[/PROTO]`, such as `16443:6443` or \
             `127.0.0.1:8080:80/tcp`.",
        ),
        (
            json!({"type": "lima", "port_forwards": "70000:80"}),
            "The provision setting `port_forwards` has the invalid value \"70000:80\": the rule \
             `70000:80` has the port `70000`, but ports are whole numbers from 1 to 65535; write \
             the rule as `[HOST_IP:]HOST_PORT:GUEST_PORT[/PROTO]`, such as `16443:6443` or \
             `127.0.0.1:8080:80/tcp`.",
        ),
        (
            json!({"type": "lima", "port_forwards": "0:80"}),
            "The provision setting `port_forwards` has the invalid value \"0:80\": the rule \
             `0:80` has the port 0, but ports are whole numbers from 1 to 65535.",
        ),
        (
            json!({"type": "lima", "port_forwards": "2222:22"}),
            "The provision setting `port_forwards` has the invalid value \"2222:22\": the rule \
             `2222:22` uses port 22, which Lima rejects in port forwarding rules because it \
             forwards SSH itself; Jetpack reaches the guest's SSH through `jet_ssh_port`, so \
             remove the rule.",
        ),
        (
            json!({"type": "lima", "port_forwards": "8080:80/sctp"}),
            "The provision setting `port_forwards` has the invalid value \"8080:80/sctp\": the \
             rule `8080:80/sctp` has the protocol `sctp`; use `tcp`, `udp` or `any`.",
        ),
        (
            json!({"type": "lima", "port_forwards": "localhost:8080:80"}),
            "The provision setting `port_forwards` has the invalid value \"localhost:8080:80\": \
             the rule `localhost:8080:80` has the host address `localhost`, which is not an IPv4 \
             address; use an address such as `127.0.0.1`.",
        ),
        (
            json!({"type": "lima", "start_timeout": "10 minutes"}),
            "The provision setting `start_timeout` has the invalid value \"10 minutes\": it is \
             a duration and must be written as whole hours, minutes and seconds such as `10m`, \
             `1h30m` or `90s`, or as plain seconds such as `600`.",
        ),
        (
            json!({"type": "lima", "start_timeout": "1.5h"}),
            "The provision setting `start_timeout` has the invalid value \"1.5h\": it is a \
             duration and must be written as whole hours, minutes and seconds such as `10m`, \
             `1h30m` or `90s`, or as plain seconds such as `600`.",
        ),
        (
            json!({"type": "lima", "start_timeout": "500ms"}),
            "The provision setting `start_timeout` has the invalid value \"500ms\": it is a \
             duration and must be written as whole hours, minutes and seconds such as `10m`, \
             `1h30m` or `90s`, or as plain seconds such as `600`.",
        ),
        (
            json!({"type": "lima", "start_timeout": "m"}),
            "The provision setting `start_timeout` has the invalid value \"m\": it is a duration \
             and must be written as whole hours, minutes and seconds such as `10m`, `1h30m` or \
             `90s`, or as plain seconds such as `600`.",
        ),
        (
            json!({"type": "lima", "start_timeout": "0m"}),
            "The provision setting `start_timeout` has the invalid value \"0m\": it is a \
             duration and must be above 0, such as `10m`.",
        ),
        (
            json!({"type": "lima", "templte": "template:k3s"}),
            "The provision setting `templte` is unknown to the Lima provisioner; use one of \
             `template`, `disk`, `vm_type`, `network`, `param.<name>`, `set`, `port_forwards` \
             and `start_timeout`, or remove it.",
        ),
        (
            json!({"type": "lima", "Disk": "30"}),
            "The provision setting `Disk` is unknown to the Lima provisioner; keys are \
             case-sensitive and lower case; use one of `template`, `disk`, `vm_type`, `network`, \
             `param.<name>`, `set`, `port_forwards` and `start_timeout`, or remove it.",
        ),
        (
            json!({"type": "lima", "params.url": "https://x:6443"}),
            "The provision setting `params.url` is unknown to the Lima provisioner; template \
             parameters are written `param.<name>`; use one of `template`, `disk`, `vm_type`, \
             `network`, `param.<name>`, `set`, `port_forwards` and `start_timeout`, or remove \
             it.",
        ),
        (
            json!({"type": "lima", "timeout": "10m"}),
            "The provision setting `timeout` is unknown to the Lima provisioner; the `limactl \
             start` timeout is `start_timeout`; use one of `template`, `disk`, `vm_type`, \
             `network`, `param.<name>`, `set`, `port_forwards` and `start_timeout`, or remove \
             it.",
        ),
        (
            json!({"type": "lima", "ip": "10.0.0.5"}),
            "The provision setting `ip` is set, but Lima has no equivalent, so the Lima \
             provisioner rejects it: Lima assigns guest addresses itself and Jetpack connects \
             through 127.0.0.1; remove it.",
        ),
        (
            json!({"type": "lima", "rootfs_size": "16G"}),
            "The provision setting `rootfs_size` is set, but Lima has no equivalent, so the \
             Lima provisioner rejects it: set the disk size in GiB with the `disk` key instead, \
             for example `disk: \"30\"`.",
        ),
        (
            json!({"type": "lima", "net1": "name=eth1,bridge=vmbr1"}),
            "The provision setting `net1` is set, but Lima has no equivalent, so the Lima \
             provisioner rejects it: attach Lima networks with the `network` key instead, for \
             example `network: lima:user-v2`.",
        ),
        (
            json!({"type": "lima", "password": "hunter2"}),
            "The provision setting `password` is set, but Lima has no equivalent, so the Lima \
             provisioner rejects it: Lima disables password login and connects with its own SSH \
             key; remove it.",
        ),
    ]
}

#[test]
fn invalid_configs_are_rejected_with_fix() {
    for (value, expected) in invalid_cases() {
        let label = value.to_string();
        let error = plan(value).expect_err(&label);

        assert_eq!(error.to_string(), expected, "{label}");
    }
}

#[test]
fn every_unsupported_field_is_rejected() {
    let fields = [
        "node",
        "ip",
        "vmid",
        "ostemplate",
        "fetch",
        "storage",
        "rootfs_size",
        "net0",
        "net1",
        "net2",
        "net3",
        "password",
        "authorized_keys",
        "unprivileged",
        "start_on_create",
        "features",
        "tun",
        "nameserver",
    ];
    for field in fields {
        let error = plan(json!({"type": "lima", field: "x"})).expect_err(field);

        match error {
            ConfigError::UnsupportedField { field: named, .. } => assert_eq!(named, field),
            other => panic!("{field}: unexpected {other:?}"),
        }
    }
}

#[test]
fn secrets_stay_out_of_messages() {
    let cases = [
        json!({"type": "lima", "password": "hunter2"}),
        json!({"type": "lima", "authorized_keys": "ssh-ed25519 hunter2"}),
        json!({"type": "lima", "param.token": "hunter2\u{7}"}),
        json!({"type": "lima", "parm.token": "hunter2"}),
    ];
    for value in cases {
        let label = value.to_string();
        let error = plan(value).expect_err(&label);

        assert!(!error.to_string().contains("hunter2"), "{label}: {error}");
        assert!(
            !format!("{error:?}").contains("hunter2"),
            "{label}: {error:?}"
        );
    }
}

#[test]
fn debug_hides_secret_values() {
    let config = config(json!({
        "type": "lima",
        "password": "hunter2",
        "authorized_keys": "ssh-ed25519 hunter2",
        "param.token": "hunter2",
    }));
    let text = format!("{config:?}");

    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("param.token"), "{text}");
}

#[test]
fn inventory_name_error_suggests_hostname() {
    let error = config(json!({"type": "lima"}))
        .plan("-rf", Path::new(LIMA_HOME))
        .unwrap_err();

    assert!(
        matches!(
            &error,
            ConfigError::InvalidInstanceName {
                from_hostname: false,
                problem: NameError::LeadingHyphen,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "The inventory host name \"-rf\" is used as the Lima instance name because `hostname` \
         is not set, but it is not a valid instance name: it starts with `-`, which limactl \
         would parse as a flag; remove the leading `-`. You can also set `hostname` to a valid \
         name instead."
    );
}

#[test]
fn long_name_fails_socket_budget() {
    let lima_home = format!("/tmp/{}", "h".repeat(60));
    let error = config(json!({"type": "lima"}))
        .plan(&"n".repeat(30), Path::new(&lima_home))
        .unwrap_err();

    assert!(
        matches!(
            &error,
            ConfigError::InvalidInstanceName {
                problem: NameError::SocketPathTooLong { .. },
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn instance_name_ignores_other_values() {
    let config = config(json!({
        "type": "lima",
        "hostname": "k3s-a",
        "memory": "lots",
        "port_forwards": "22:22",
        "unknown": "x",
    }));

    let name = config.instance_name("web1", Path::new(LIMA_HOME)).unwrap();

    assert_eq!(name.as_str(), "k3s-a");
    assert!(config.plan("web1", Path::new(LIMA_HOME)).is_err());
}

#[test]
fn instance_name_checks_type_and_state() {
    let wrong_type = config(json!({"type": "docker"}));
    let wrong_state = config(json!({"type": "lima", "state": "gone"}));
    let unsupported = config(json!({"type": "lima", "vmid": "100"}));

    for config in [wrong_type, wrong_state, unsupported] {
        let label = format!("{config:?}");
        assert!(
            config.instance_name("web1", Path::new(LIMA_HOME)).is_err(),
            "{label}"
        );
    }
}

#[test]
fn extra_keys_are_checked_in_order() {
    let error = plan(json!({"type": "lima", "zzz": "1", "disk": "x"})).unwrap_err();

    assert!(
        matches!(&error, ConfigError::InvalidValue { key, .. } if key == "disk"),
        "{error:?}"
    );
}

#[test]
fn non_string_extra_value_fails_to_deserialize() {
    let result = serde_json::from_value::<ProvisionConfig>(json!({"type": "lima", "disk": 30}));

    assert!(result.is_err(), "Jetpack's extra map holds strings only");
}
