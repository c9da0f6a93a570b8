//! The errors of a provision config that the Lima provisioner rejects.

use crate::name::NameError;

/// A provision config that the Lima provisioner rejects. Each message names the setting, the
/// value where it is safe to show, and the fix.
///
/// Values are left out of the messages for unknown keys, for settings without a Lima
/// equivalent and for template parameters, because those can hold secrets such as a k3s join
/// token in `param.token` or a root `password`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `type` names another provisioner.
    #[error(
        "The provision type is {found:?}, but this provisioner handles `type: lima`; set \
         `type: lima` in the host's `provision:` block."
    )]
    WrongType {
        /// The `type` from the config.
        found: String,
    },

    /// `state` is not one of Jetpack's states.
    #[error(
        "The provision setting `state` has the invalid value {value:?}; use `present`, \
         `stopped`, `absent` or `destroyed`."
    )]
    InvalidState {
        /// The rejected value.
        value: String,
    },

    /// A setting has a value that Lima would reject or misread.
    #[error("The provision setting `{key}` has the invalid value {value:?}: {problem}")]
    InvalidValue {
        /// The setting, for example `memory` or `param.url`.
        key: String,
        /// The rejected value.
        value: String,
        /// The reason for the rejection, and the value to use instead.
        problem: String,
    },

    /// A template parameter's value contains a control character, which Lima rejects.
    #[error(
        "The provision setting `{key}` contains the control character {character:?}, which \
         Lima rejects in template parameters; remove it (the value is not shown because \
         parameters can hold tokens)."
    )]
    InvalidParamValue {
        /// The setting, `param.<name>`.
        key: String,
        /// The first control character.
        character: char,
    },

    /// The instance name taken from `hostname` or from the inventory host name breaks one of
    /// Lima's naming rules.
    #[error("{}", instance_name_message(*from_hostname, name, problem))]
    InvalidInstanceName {
        /// Whether the name came from `hostname`; otherwise it is the inventory host name.
        from_hostname: bool,
        /// The rejected name.
        name: String,
        /// The broken rule, with the fix.
        problem: NameError,
    },

    /// A Jetpack setting that has no Lima equivalent is set.
    #[error(
        "The provision setting `{field}` is set, but Lima has no equivalent, so the Lima \
         provisioner rejects it: {fix}"
    )]
    UnsupportedField {
        /// The Jetpack field name.
        field: &'static str,
        /// The action to take instead.
        fix: &'static str,
    },

    /// A key in the flattened `extra` map that the Lima provisioner does not know.
    #[error(
        "The provision setting `{key}` is unknown to the Lima provisioner; {hint}use one of \
         `template`, `disk`, `vm_type`, `network`, `param.<name>`, `set`, `port_forwards` and \
         `start_timeout`, or remove it."
    )]
    UnknownKey {
        /// The unknown key.
        key: String,
        /// A pointer to the likely intended key, ending with a space, or empty.
        hint: &'static str,
    },
}

fn instance_name_message(from_hostname: bool, name: &str, problem: &NameError) -> String {
    if from_hostname {
        format!(
            "The provision setting `hostname` has the invalid value {name:?}: it is the Lima \
             instance name, and {problem}"
        )
    } else {
        format!(
            "The inventory host name {name:?} is used as the Lima instance name because \
             `hostname` is not set, but it is not a valid instance name: {problem} You can also \
             set `hostname` to a valid name instead."
        )
    }
}
