//! The error type of image archive inspection and import checks.

use std::io;
use std::path::PathBuf;

/// Errors from parsing image references, inspecting image archives and parsing `crictl` output.
///
/// Each message is a complete sentence that names the value or archive involved and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// A reference does not follow the Docker reference grammar.
    #[error(
        "`{value}` is not a valid image reference: {reason}. Use the form \
         `[registry/]repository[:tag][@sha256:digest]`, for example `example.test/operator:1.0`."
    )]
    InvalidReference {
        /// The rejected input.
        value: String,
        /// The grammar rule that the input breaks.
        reason: String,
    },

    /// Opening or reading the archive file failed.
    #[error("Failed to read image archive `{path}`: {source}.")]
    Io {
        /// The archive file.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },

    /// The file (after gzip decompression, if it is compressed) is not a tar archive.
    #[error(
        "Image archive `{path}` is not a tar archive: {detail}. Pass a file written by \
         `docker save`, `podman save`, `ctr images export` or `skopeo copy` to an `oci-archive:` \
         or `docker-archive:` destination."
    )]
    NotTar {
        /// The archive file.
        path: PathBuf,
        /// Description of the data found where a tar header was expected.
        detail: String,
    },

    /// The archive ends before its last entry or before the tar end-of-archive marker.
    #[error(
        "Image archive `{path}` is truncated: {detail}. Write the archive again and check that \
         the copy is complete."
    )]
    Truncated {
        /// The archive file.
        path: PathBuf,
        /// Description of where the data ended.
        detail: String,
    },

    /// The file starts with the gzip magic bytes but does not decompress.
    #[error(
        "Image archive `{path}` starts with the gzip magic bytes, but decompressing it failed: \
         {detail}. Compress the tar again with gzip, or pass the uncompressed tar."
    )]
    InvalidGzip {
        /// The archive file.
        path: PathBuf,
        /// The decompressor's error.
        detail: String,
    },

    /// The tar contains neither an OCI image layout nor a `docker save` manifest.
    #[error(
        "Image archive `{path}` contains neither `oci-layout` with `index.json` (an OCI image \
         layout) nor `manifest.json` (the `docker save` format), so containerd cannot import it. \
         Save the image with `docker save`, `podman save` or `skopeo copy`."
    )]
    NoImageLayout {
        /// The archive file.
        path: PathBuf,
    },

    /// The tar has `index.json` but no `oci-layout` file, and no `manifest.json` either.
    #[error(
        "Image archive `{path}` contains `index.json` but no `oci-layout` file. containerd reads \
         `index.json` only when `oci-layout` declares the image layout version 1.0.0, so it would \
         reject this archive as an unrecognized image format. Add an `oci-layout` file containing \
         `{{\"imageLayoutVersion\":\"1.0.0\"}}`, or save the image again with a tool that writes a \
         complete OCI image layout."
    )]
    MissingOciLayout {
        /// The archive file.
        path: PathBuf,
    },

    /// The `oci-layout` file declares a version that containerd does not import.
    #[error(
        "Image archive `{path}` declares OCI image layout version `{version}`, but containerd \
         imports only version 1.0.0. Save the image again with a tool that writes layout \
         version 1.0.0."
    )]
    UnsupportedLayoutVersion {
        /// The archive file.
        path: PathBuf,
        /// The `imageLayoutVersion` found in `oci-layout`.
        version: String,
    },

    /// The archive has `oci-layout` but no `index.json`.
    #[error(
        "Image archive `{path}` has an `oci-layout` file but no `index.json`, so it names no \
         image. Save the image again."
    )]
    MissingIndex {
        /// The archive file.
        path: PathBuf,
    },

    /// A metadata file (`index.json`, `manifest.json`, `oci-layout`, an index, manifest or
    /// config blob) is not valid JSON of the expected shape.
    #[error(
        "Image archive `{path}` contains an invalid `{entry}`: {detail}. Save the image again."
    )]
    InvalidMetadata {
        /// The archive file.
        path: PathBuf,
        /// The tar entry that failed to parse.
        entry: String,
        /// The parse error.
        detail: String,
    },

    /// A file that the archive's metadata refers to is absent, so `ctr images import` fails.
    #[error(
        "Image archive `{path}` does not contain `{entry}`, which {referenced_by} refers to, so \
         `ctr images import` would fail. Save the image again, for a single platform if it was \
         saved from a multi-platform image."
    )]
    MissingBlob {
        /// The archive file.
        path: PathBuf,
        /// The tar entry that is missing.
        entry: String,
        /// The metadata that names the missing entry.
        referenced_by: String,
    },

    /// A blob's content does not match the digest in its entry name.
    #[error(
        "Image archive `{path}` contains `{entry}`, but its content does not match the digest in \
         its name, so the archive is corrupt. Save the image again and check that the copy is \
         complete."
    )]
    BlobDigestMismatch {
        /// The archive file.
        path: PathBuf,
        /// The entry whose content is wrong.
        entry: String,
    },

    /// An image index lists platforms, but the archive contains none of their manifests.
    #[error(
        "Image archive `{path}` names `{reference}` with an image index that lists {}, but the \
         archive contains none of their manifests. Save the image again for the platform that \
         you import.",
        .listed.join(", ")
    )]
    NoCarriedManifest {
        /// The archive file.
        path: PathBuf,
        /// The image name whose index is empty.
        reference: String,
        /// The platforms that the index lists, as `os/arch[/variant]`.
        listed: Vec<String>,
    },

    /// An OCI index entry's only name is a bare tag in `org.opencontainers.image.ref.name`.
    #[error(
        "Image archive `{path}` names manifest {digest} only by the annotation \
         `org.opencontainers.image.ref.name` = `{tag}`, a bare tag. `ctr images import` takes \
         the image name from `io.containerd.image.name`, and uses \
         `org.opencontainers.image.ref.name` only when it is a full reference. For a bare tag it \
         stores the image as `import-<date>:{tag}`, a name that no pod refers to. Write the full \
         reference (for example `example.test/operator:{tag}`) into `io.containerd.image.name` \
         or `org.opencontainers.image.ref.name`, as `docker save` and `ctr images export` do."
    )]
    BareTagName {
        /// The archive file.
        path: PathBuf,
        /// The value of `org.opencontainers.image.ref.name`.
        tag: String,
        /// The digest of the index entry.
        digest: String,
    },

    /// An OCI index entry names an image in a form that containerd stores verbatim but that the
    /// kubelet does not look up.
    #[error(
        "Image archive `{path}` names an image `{name}` in the annotation `{annotation}`. \
         containerd stores that name verbatim, but the kubelet looks the image up as \
         `{normalised}`, so pods could not use the imported image. Write `{normalised}` into \
         the archive instead."
    )]
    NonCanonicalName {
        /// The archive file.
        path: PathBuf,
        /// The annotation that contains the name.
        annotation: String,
        /// The name as written in the archive.
        name: String,
        /// The normalised form of `name`.
        normalised: String,
    },

    /// An image name in the archive is not a valid reference.
    #[error(
        "Image archive `{path}` contains the invalid image reference `{value}` in {location}: \
         {reason}. Tag the image with a valid reference and save it again."
    )]
    InvalidNameInArchive {
        /// The archive file.
        path: PathBuf,
        /// Location of the reference, for example "`RepoTags` of `manifest.json`".
        location: String,
        /// The reference as written.
        value: String,
        /// The grammar rule that the reference breaks.
        reason: String,
    },

    /// The archive names no image at all.
    #[error(
        "Image archive `{path}` names no image, so containerd would import its content without \
         an image name and no pod could use it. Tag the image before saving it (for example \
         `docker save example.test/operator:1.0`), or write the full reference into the \
         `io.containerd.image.name` annotation of `index.json`."
    )]
    NoImageNames {
        /// The archive file.
        path: PathBuf,
    },

    /// The archive contains `:latest` or untagged references.
    #[error(
        "Image archive `{path}` contains {}, which Kubernetes would not run from the imported \
         copy. Kubernetes defaults `imagePullPolicy` to `Always` for `:latest` and untagged \
         images, so the kubelet ignores the imported copy and pulls from the registry instead. \
         Tag the image with a version, or, if every pod that uses it sets `imagePullPolicy: \
         IfNotPresent` or `Never`, opt in with `ClusterSpec::allow_latest_images(true)` or \
         `K3S_HARNESS_ALLOW_LATEST=1`.",
        .references.join(", ")
    )]
    LatestReference {
        /// The archive file.
        path: PathBuf,
        /// The offending references, normalised.
        references: Vec<String>,
    },

    /// The archive has no image for the guest's platform.
    #[error(
        "Image archive `{path}` carries no image for platform `{platform}` (it carries {}), so \
         `ctr images import --platform {platform}` would import nothing that the VM can run. \
         Build or save the image for `{platform}`.",
        .carried.join(", ")
    )]
    PlatformNotCarried {
        /// The archive file.
        path: PathBuf,
        /// The platform that was requested, for example `linux/amd64`.
        platform: String,
        /// The platforms that the archive carries.
        carried: Vec<String>,
    },

    /// `ctr` reported success, but the kubelet's view does not list every image afterwards.
    #[error(
        "Image archive `{path}` was imported, but `crictl images` in the guest does not list {}. \
         The kubelet cannot use an image it does not list; check that the import went to k3s's \
         containerd in namespace `k8s.io` and that the archive's blobs are complete.",
        .missing.join(", ")
    )]
    MissingAfterImport {
        /// The archive file.
        path: PathBuf,
        /// The references that are not listed.
        missing: Vec<String>,
    },

    /// No container engine to save an image from was found.
    #[error(
        "No container engine to save image `{reference}` from: none of docker, podman or nerdctl \
         is on PATH. Install one, name one with K3S_HARNESS_IMAGE_TOOL, or save the image to an \
         archive and use `import_image`."
    )]
    NoContainerEngine {
        /// The reference that was to be saved.
        reference: String,
    },

    /// The container engine failed to save the image.
    #[error("`{command}` failed with {status}, so image `{reference}` was not imported: {stderr}")]
    SaveFailed {
        /// The reference that was to be saved.
        reference: String,
        /// The shell-quoted save command.
        command: String,
        /// The exit status in words.
        status: String,
        /// The trimmed stderr of the save command.
        stderr: String,
    },

    /// The output of `crictl images -o json` could not be parsed.
    #[error(
        "The output of `crictl images -o json` is not the expected JSON object with an \
         `images` list: {source}. Check that the guest's `crictl` is the one that k3s ships \
         (`k3s crictl`)."
    )]
    InvalidCrictlOutput {
        /// The JSON parse error.
        source: serde_json::Error,
    },
}
