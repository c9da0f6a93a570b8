//! Lima VM lifecycle through `limactl` (Lima 2.x), shaped for Jetpack's provisioner interface.
//!
//! [`Limactl`] runs single limactl subcommands with deadlines, captured output and errors that
//! quote the command; [`Provisioner`] builds the five Jetpack operations (`exists`,
//! `ensure_exists`, `get_ip`, `stop`, `destroy`) and the inventory host variables on top of
//! it. Everything is synchronous; async callers wrap calls in `spawn_blocking`.
//!
//! [`jetpack`] checks Jetpack's provision config and maps it onto a [`LimaSpec`] for a
//! Jetpack adapter. Its documentation also explains why readiness is
//! `limactl shell NAME -- true` rather than a TCP probe of port 22, and why a Jetpack
//! inventory for Lima sets `wait_for_host: false`.
//!
//! ```no_run
//! use lima_provisioner::{InstanceName, LimaSpec, Limactl, Provisioner, pick_free_port};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limactl = Limactl::from_env()?;
//! limactl.version()?;
//! let name = InstanceName::new("kt-demo", limactl.lima_home())?;
//! let spec = LimaSpec::new(name.clone()).with_cpus(2).with_api_server_port(pick_free_port()?);
//! let provisioner = Provisioner::new(limactl);
//! provisioner.ensure_exists(&spec)?;
//! println!("{:?}", provisioner.host_vars(&name)?.to_map());
//! provisioner.destroy(&name)?;
//! # Ok(())
//! # }
//! ```

mod command;
mod error;
pub mod jetpack;
mod limactl;
mod list;
mod name;
mod preflight;
mod provisioner;
mod shell;
mod spec;
mod stderr;
mod version;

pub use crate::error::{CommandFailure, CommandTimeout, Error, Result, StartFailure};
pub use crate::limactl::{
    DELETE_TIMEOUT, LIST_TIMEOUT, Limactl, START_TIMEOUT_MARGIN, STOP_TIMEOUT, VERSION_TIMEOUT,
};
pub use crate::list::{
    CopyToHost, GuestUser, Instance, InstanceConfig, InstanceStatus, K3S_KUBECONFIG_GUEST_PATH,
    ListParseError, parse_list_output,
};
pub use crate::name::{InstanceName, NameError};
pub use crate::provisioner::{EnsureOutcome, HostVars, Provisioner, SSH_HOSTNAME, SshEndpoint};
pub use crate::shell::{DEFAULT_SHELL_TIMEOUT, ShellOptions, ShellOutput};
pub use crate::spec::{
    DEFAULT_START_TIMEOUT, DEFAULT_TEMPLATE, K3S_API_SERVER_PORT, LimaSpec, PortForward, Proto,
    pick_free_port, port_forwards_set_expression,
};
pub use crate::version::{LimaVersion, MIN_LIMA_VERSION};
