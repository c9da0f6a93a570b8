//! The command line's help states units and defaults.

use std::process::{Command, Stdio};

#[test]
fn up_help_states_units_and_defaults() {
    let output = Command::new(env!("CARGO_BIN_EXE_k3s-harness"))
        .args(["up", "--help"])
        .stdin(Stdio::null())
        .output()
        .expect("k3s-harness runs");
    let help = String::from_utf8_lossy(&output.stdout);

    assert!(output.status.success());
    assert!(help.contains("Memory in MiB"), "{help}");
    assert!(help.contains("Disk size in GiB"), "{help}");
    assert!(help.contains("[default: 10m]"), "{help}");
    assert!(
        help.contains("K3S_HARNESS_CPUS"),
        "the variables are named: {help}"
    );
    assert!(help.contains("[default: template:k3s]"), "{help}");
}

/// Returns the options of `k3s-harness SUBCOMMAND -h`, one string per option with its wrapped lines.
fn options_of(subcommand: &str) -> Vec<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_k3s-harness"))
        .args([subcommand, "-h"])
        .stdin(Stdio::null())
        .output()
        .expect("k3s-harness runs");
    assert!(output.status.success(), "{subcommand} -h");
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    let options_section = help
        .split_once("Options:\n")
        .unwrap_or_else(|| panic!("no options in {help}"))
        .1;

    let mut options: Vec<String> = Vec::new();
    for line in options_section.lines() {
        if line.trim_start().starts_with('-') {
            options.push(line.trim().to_owned());
        } else if let Some(option) = options.last_mut() {
            option.push(' ');
            option.push_str(line.trim());
        }
    }
    options
}

#[test]
fn every_option_with_a_value_states_its_default() {
    let subcommands = [
        "up",
        "nextest-setup",
        "status",
        "list",
        "kubeconfig",
        "down",
        "gc",
        "shell",
        "import",
        "converge",
    ];
    for subcommand in subcommands {
        for option in options_of(subcommand) {
            let flags = option.split("  ").next().unwrap_or_default();
            if flags.contains('<') {
                assert!(
                    option.contains("[default"),
                    "`{subcommand}` option without a default: {option}"
                );
            }
        }
    }
}

#[test]
fn help_lists_exit_statuses() {
    let output = Command::new(env!("CARGO_BIN_EXE_k3s-harness"))
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .expect("k3s-harness runs");
    let help = String::from_utf8_lossy(&output.stdout);

    assert!(output.status.success());
    assert!(help.contains("Exit status:"), "{help}");
    for code in ["0", "1", "2", "130"] {
        assert!(
            help.lines()
                .any(|line| line.trim_start().starts_with(&format!("{code} "))),
            "exit status {code} is listed: {help}"
        );
    }
}
