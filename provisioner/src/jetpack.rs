//! Jetpack's provision config, checked and mapped onto a [`LimaSpec`] for a Jetpack `lima`
//! provisioner adapter.
//!
//! Jetpack (<https://github.com/riffcc/jetpack>) reads the `provision:` block of a host's
//! `host_vars` file into its `ProvisionConfig` (`src/provisioners/mod.rs`) and hands it to the
//! provisioner's `exists`, `ensure_exists`, `get_ip`, `stop` and `destroy`. [`ProvisionConfig`]
//! here has the same field names and types, so an adapter copies Jetpack's struct field by
//! field (or deserializes the same block) and calls [`ProvisionConfig::plan`] for
//! `ensure_exists`, or [`ProvisionConfig::instance_name`] for the other four operations.
//! Jetpack's built-in provisioners render `{{ }}` templates in the config before they read it;
//! an adapter does that before calling either method.
//!
//! `examples/jetpack_adapter.rs` implements the five operations on top of [`Provisioner`] and
//! writes the inventory variables.
//!
//! # Fields
//!
//! | Jetpack field | Lima |
//! |---|---|
//! | `type` | must be `lima` ([`PROVISION_TYPE`]) |
//! | `state` | [`ProvisionState`]: `present` (default), `stopped`, `absent`, `destroyed` |
//! | `hostname` | the instance name; defaults to the inventory host name |
//! | `memory` | MiB as a whole number (Jetpack calls it MB), passed to `--memory` in GiB |
//! | `cores` | `--cpus` |
//! | `ssh_user` | the guest user (`.user.name`); Lima uses the host user's name when unset |
//! | `wait_timeout` | seconds for the adapter's readiness check (default 300, as in Jetpack) |
//! | `wait_for_host`, `wait_delay`, `wait_strategy`, `wait_max_delay` | see [Readiness](#readiness) |
//! | `cluster` | required by Jetpack, ignored by Lima |
//!
//! The other fields of Jetpack's struct (`node`, `ip`, `vmid`, `ostemplate`, `fetch`,
//! `storage`, `rootfs_size`, `net0` to `net3`, `password`, `authorized_keys`, `unprivileged`,
//! `start_on_create`, `features`, `tun` and `nameserver`) have no Lima equivalent. Setting one
//! is a [`ConfigError::UnsupportedField`] that names the Lima setting to use instead, where
//! there is one.
//!
//! Lima's own settings ride in Jetpack's flattened string map `extra`, that is as further keys
//! of the `provision:` block:
//!
//! | key | value | Lima |
//! |---|---|---|
//! | `template` | a template locator | the template, default [`DEFAULT_TEMPLATE`] |
//! | `disk` | GiB as a whole number | `--disk` |
//! | `vm_type` | `vz`, `qemu`, `krunkit`, `wsl2` or a driver plugin's name | `--vm-type` |
//! | `network` | network names, separated by commas | `--network`, once per name |
//! | `param.<name>` | any text | the template parameter `<name>` (`--param`) |
//! | `set` | one yq expression; chain several with `\|` | `--set` |
//! | `port_forwards` | `[HOST_IP:]HOST_PORT:GUEST_PORT[/PROTO]` rules | `.portForwards` |
//! | `start_timeout` | a duration: `10m`, `1h30m`, or seconds (`600`) | `limactl start --timeout` |
//!
//! Port forwarding rules are separated by commas or spaces, `PROTO` is `tcp`, `udp` or `any`,
//! and the rules replace the template's own. Ports 0 and 22 are rejected, as Lima does.
//!
//! Any other key is a [`ConfigError::UnknownKey`], because a misspelled key would otherwise
//! boot a VM without the setting.
//!
//! ```yaml
//! provision:
//!   type: lima
//!   cluster: local
//!   memory: "4096"
//!   cores: "2"
//!   wait_for_host: false
//!   wait_timeout: 120
//!   template: template:k3s
//!   disk: "30"
//!   port_forwards: "16443:6443"
//!   param.url: https://lima-k3s-server.internal:6443
//! ```
//!
//! # Readiness
//!
//! The adapter's readiness check is [`Provisioner::wait_ready`], which retries
//! `limactl shell NAME -- true` until it succeeds. That is Lima's own path into the guest:
//! SSH to 127.0.0.1 on the port that Lima forwards to the guest's port 22, with Lima's key
//! (`<LIMA_HOME>/_config/user`), into the guest user's login shell. The same path is the one
//! Jetpack takes afterwards with the variables from [`Provisioner::host_vars`]. Lima gives
//! the guest's sshd no address of its own that the host can reach: the host agent forwards a
//! port that Lima chooses on 127.0.0.1, and `limactl list --json` reports it as
//! `sshLocalPort` (Lima's SSH usage docs connect with `ssh -p PORT ... 127.0.0.1`,
//! <https://github.com/lima-vm/lima/pull/4182>). A raw TCP probe of port 22 on an IP
//! therefore never reaches the guest: on 127.0.0.1 it reaches the host's own sshd, or
//! nothing. A TCP connect to `sshLocalPort` shows only that something listens there, not that
//! Lima's key and the guest user's login shell work.
//!
//! Jetpack's generic wait does exactly such a probe. Unless `wait_for_host` is `false`, its
//! `ensure_host_provisioned` calls `get_ip` after `ensure_exists` and connects to port 22 on
//! the returned address until `wait_timeout` runs out; the port is fixed in that function
//! (`src/provisioners/mod.rs`). `get_ip` can only return 127.0.0.1 for a Lima instance on the
//! default network, so that probe either times out or succeeds at once against the host's
//! own sshd. A Jetpack inventory for Lima should therefore set `wait_for_host: false` and let
//! the adapter wait in `ensure_exists`. A Jetpack that probes the forwarded port instead
//! (`jet_ssh_port`, the `sshLocalPort`) on 127.0.0.1 gets a meaningful answer;
//! [`ProvisionConfig::plan`] logs a warning while `wait_for_host` is not `false`.
//!
//! [`LimaSpec`]: crate::LimaSpec
//! [`DEFAULT_TEMPLATE`]: crate::DEFAULT_TEMPLATE
//! [`Provisioner`]: crate::Provisioner
//! [`Provisioner::wait_ready`]: crate::Provisioner::wait_ready
//! [`Provisioner::host_vars`]: crate::Provisioner::host_vars

mod config;
mod error;
mod values;

#[cfg(test)]
mod tests;

pub use self::config::{
    DEFAULT_WAIT_TIMEOUT, PROVISION_TYPE, ProvisionConfig, ProvisionPlan, ProvisionState,
};
pub use self::error::ConfigError;
