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
