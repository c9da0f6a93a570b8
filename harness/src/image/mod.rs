//! Image archives for `ctr images import`: inspection before an import, the checks run on the
//! result, and the parsing of `crictl images` output that verifies an import.
//!
//! [`Cluster::import_image`](crate::Cluster::import_image) uses all of it; the inspection is
//! public so a test can learn the normalised references an archive will import under.

mod archive;
mod crictl;
mod error;
pub(crate) mod import;
mod layout;
mod platform;
pub(crate) mod record;
mod reference;
mod walk;

pub use archive::{
    ArchiveFormat, ArchiveImage, ArchiveInfo, Compression, carries_platform, inspect_archive,
    latest_references, open_for_import,
};
pub use crictl::parse_crictl_images;
pub use error::ImageError;
pub use platform::{format_platform, guest_platform, normalize_platform};
pub use reference::ImageReference;
