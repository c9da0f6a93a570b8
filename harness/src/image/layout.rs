//! Reading image names and platforms from an archive's metadata, following the rules of
//! containerd 1.6's importer (`images/archive/importer.go` and `Client.Import` in
//! `import.go`) and of `ctr images import` without `--base-name`.
//!
//! NOTE: these rules were checked against containerd 1.6.20 only. k3s ships its own containerd
//! build, which can be a newer version whose `ctr images import` naming was not checked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::platform::format_platform;
use super::walk::{ArchiveContents, DOCKER_MANIFEST_ENTRY, INDEX_ENTRY, OCI_LAYOUT_ENTRY};
use super::{ArchiveFormat, ArchiveImage, ImageError, ImageReference};

/// The only OCI image layout version that containerd 1.6 imports.
const SUPPORTED_LAYOUT_VERSION: &str = "1.0.0";
/// Annotation that containerd writes and reads as the full image name.
const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// OCI annotation that contains either a full reference or only a tag, depending on the writer.
const OCI_REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// Maximum nesting of image indexes that inspection follows before reporting the platforms of
/// an image as unknown.
const MAX_INDEX_DEPTH: usize = 8;
/// Media types of image indexes (OCI) and manifest lists (Docker).
const INDEX_MEDIA_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

#[derive(Debug, Deserialize)]
struct OciLayout {
    #[serde(rename = "imageLayoutVersion", default)]
    image_layout_version: String,
}

/// An OCI image index or Docker manifest list, or an image manifest. Both parse into this one
/// shape, and the fields present distinguish them.
#[derive(Debug, Deserialize)]
struct IndexOrManifest {
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    platform: Option<PlatformFields>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

/// The platform fields of a descriptor and of an image config.
#[derive(Debug, Deserialize)]
struct PlatformFields {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl PlatformFields {
    /// Returns `os/arch[/variant]`, or `None` when OS or architecture is missing or `unknown`.
    /// BuildKit lists attestation manifests with the platform `unknown/unknown`.
    fn to_platform(&self) -> Option<String> {
        let is_missing = |value: &str| value.is_empty() || value == "unknown";
        if is_missing(&self.os) || is_missing(&self.architecture) {
            return None;
        }
        Some(format_platform(
            &self.os,
            &self.architecture,
            self.variant
                .as_deref()
                .filter(|variant| !variant.is_empty()),
        ))
    }
}

/// One image of a `docker save` `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Option<Vec<String>>,
}

/// Location of an OCI blob's content in the archive.
enum BlobLocation {
    /// The entry whose content has the blob's digest.
    Found(String),
    /// No entry has that content. The value is the entry the OCI layout would store it in.
    Missing(String),
}

/// The platforms that an image carries, as far as the retained metadata shows.
enum Platforms {
    Known(BTreeSet<String>),
    Unknown,
}

/// Reads the format and the named images of an archive.
pub(super) fn read_images(
    path: &Path,
    contents: &ArchiveContents,
) -> Result<(ArchiveFormat, Vec<ArchiveImage>), ImageError> {
    let reader = MetadataReader { path, contents };

    // containerd parses `manifest.json` whenever it is present, even in an OCI layout.
    let docker_manifest: Option<Vec<DockerManifestEntry>> =
        reader.parse_optional(DOCKER_MANIFEST_ENTRY)?;
    let layout: Option<OciLayout> = reader.parse_optional(OCI_LAYOUT_ENTRY)?;
    let layout_version = layout
        .map(|layout| layout.image_layout_version)
        .filter(|version| !version.is_empty());

    let (format, images) = if let Some(version) = layout_version {
        if version != SUPPORTED_LAYOUT_VERSION {
            return Err(ImageError::UnsupportedLayoutVersion {
                path: path.to_owned(),
                version,
            });
        }
        let index: IndexOrManifest =
            reader
                .parse_optional(INDEX_ENTRY)?
                .ok_or_else(|| ImageError::MissingIndex {
                    path: path.to_owned(),
                })?;
        (ArchiveFormat::Oci, reader.read_oci_images(index)?)
    } else if let Some(entries) = docker_manifest {
        (
            ArchiveFormat::DockerArchive,
            reader.read_docker_images(entries)?,
        )
    } else if contents.files.contains(INDEX_ENTRY) {
        return Err(ImageError::MissingOciLayout {
            path: path.to_owned(),
        });
    } else {
        return Err(ImageError::NoImageLayout {
            path: path.to_owned(),
        });
    };

    let images = deduplicate(path, images);
    if images.is_empty() {
        return Err(ImageError::NoImageNames {
            path: path.to_owned(),
        });
    }
    Ok((format, images))
}

/// Keeps one image per reference. containerd creates or updates the image of each name in
/// order, so a later entry with the same name replaces an earlier one.
fn deduplicate(path: &Path, images: Vec<ArchiveImage>) -> Vec<ArchiveImage> {
    let mut unique: Vec<ArchiveImage> = Vec::with_capacity(images.len());
    for image in images {
        match unique
            .iter_mut()
            .find(|kept| kept.reference == image.reference)
        {
            Some(kept) => {
                tracing::warn!(
                    archive = %path.display(),
                    reference = %image.reference,
                    "the archive names the same reference twice, and the later entry wins"
                );
                *kept = image;
            }
            None => unique.push(image),
        }
    }
    unique
}

struct MetadataReader<'a> {
    path: &'a Path,
    contents: &'a ArchiveContents,
}

impl MetadataReader<'_> {
    /// Reads the images named in an OCI layout's `index.json`.
    fn read_oci_images(&self, index: IndexOrManifest) -> Result<Vec<ArchiveImage>, ImageError> {
        let mut images = Vec::new();
        for descriptor in index.manifests.unwrap_or_default() {
            let Some(reference) = self.oci_image_name(&descriptor)? else {
                tracing::debug!(
                    archive = %self.path.display(),
                    digest = %descriptor.digest,
                    "skipping an index.json entry without an image name"
                );
                continue;
            };

            // containerd creates the image under this name and unpacks it, which fails when the
            // manifest it points to is missing, whatever its platform.
            let blob = match self.locate_blob(&descriptor.digest, INDEX_ENTRY)? {
                BlobLocation::Found(entry) => entry,
                BlobLocation::Missing(entry) => {
                    return Err(ImageError::MissingBlob {
                        path: self.path.to_owned(),
                        entry,
                        referenced_by: format!("the `index.json` entry for `{reference}`"),
                    });
                }
            };

            let platforms = self.platforms_of(&descriptor, &blob, reference.as_str(), 0)?;
            images.push(ArchiveImage {
                reference,
                platforms: into_list(platforms),
            });
        }
        Ok(images)
    }

    /// Returns the name that `ctr images import` (without `--base-name`) gives an `index.json`
    /// entry: `io.containerd.image.name` if set, else `org.opencontainers.image.ref.name` if it
    /// is a full reference. containerd stores either verbatim, so a name that is not already
    /// normalised is rejected.
    fn oci_image_name(
        &self,
        descriptor: &Descriptor,
    ) -> Result<Option<ImageReference>, ImageError> {
        let annotations = descriptor.annotations.as_ref();
        let annotation = |key: &str| {
            annotations
                .and_then(|map| map.get(key))
                .map(String::as_str)
                .filter(|value| !value.is_empty())
        };

        let (key, name) = match (
            annotation(CONTAINERD_NAME_ANNOTATION),
            annotation(OCI_REF_NAME_ANNOTATION),
        ) {
            (Some(name), _) => (CONTAINERD_NAME_ANNOTATION, name),
            // ctr's `AddRefPrefix` treats a value containing `/`, `:` or `@` as a full reference
            // and prefixes anything else with `import-<date>:`.
            (None, Some(name)) if name.contains(['/', ':', '@']) => (OCI_REF_NAME_ANNOTATION, name),
            (None, Some(tag)) => {
                return Err(ImageError::BareTagName {
                    path: self.path.to_owned(),
                    tag: tag.to_owned(),
                    digest: descriptor.digest.clone(),
                });
            }
            (None, None) => return Ok(None),
        };

        let location = format!("the `{key}` annotation of `index.json`");
        let reference = self.parse_archive_name(name, &location)?;
        if reference.as_str() != name {
            return Err(ImageError::NonCanonicalName {
                path: self.path.to_owned(),
                annotation: key.to_owned(),
                name: name.to_owned(),
                normalised: reference.as_str().to_owned(),
            });
        }
        Ok(Some(reference))
    }

    /// Returns the platforms that `descriptor` (an image manifest or an image index stored at
    /// `blob`) carries in this archive.
    fn platforms_of(
        &self,
        descriptor: &Descriptor,
        blob: &str,
        reference: &str,
        depth: usize,
    ) -> Result<Platforms, ImageError> {
        let is_index_type = descriptor
            .media_type
            .as_deref()
            .is_some_and(|media_type| INDEX_MEDIA_TYPES.contains(&media_type));
        if !is_index_type && let Some(platform) = descriptor.platform.as_ref() {
            // containerd's platform filter reads the descriptor, not the config.
            if let Some(platform) = platform.to_platform() {
                return Ok(Platforms::Known(BTreeSet::from([platform])));
            }
        }
        if depth > MAX_INDEX_DEPTH {
            tracing::debug!(archive = %self.path.display(), blob, "image indexes nest too deep");
            return Ok(Platforms::Unknown);
        }
        let Some(document) = self.parse_blob::<IndexOrManifest>(blob)? else {
            return Ok(Platforms::Unknown);
        };

        if let Some(children) = document.manifests {
            return self.platforms_of_index(children, blob, reference, depth);
        }
        if let Some(config) = document.config {
            return self.platform_of_config(&config, blob);
        }
        Ok(Platforms::Unknown)
    }

    /// Returns the platforms of the children of an image index that the archive contains.
    /// Children whose manifests are missing are skipped, as `ctr images import --platform`
    /// skips children of other platforms without reading them.
    fn platforms_of_index(
        &self,
        children: Vec<Descriptor>,
        blob: &str,
        reference: &str,
        depth: usize,
    ) -> Result<Platforms, ImageError> {
        let mut carried = BTreeSet::new();
        let mut listed = BTreeSet::new();
        let mut any_unknown = false;

        for child in children {
            let declared = child
                .platform
                .as_ref()
                .and_then(PlatformFields::to_platform);
            let is_attestation = child
                .platform
                .as_ref()
                .is_some_and(|platform| platform.os == "unknown");
            if is_attestation {
                continue;
            }
            if let Some(platform) = &declared {
                listed.insert(platform.clone());
            }

            let child_blob = match self.locate_blob(&child.digest, blob)? {
                BlobLocation::Found(entry) => entry,
                BlobLocation::Missing(_) => continue,
            };
            match self.platforms_of(&child, &child_blob, reference, depth + 1)? {
                Platforms::Known(platforms) => carried.extend(platforms),
                Platforms::Unknown => any_unknown = true,
            }
        }

        if any_unknown {
            return Ok(Platforms::Unknown);
        }
        if carried.is_empty() {
            return Err(ImageError::NoCarriedManifest {
                path: self.path.to_owned(),
                reference: reference.to_owned(),
                listed: listed.into_iter().collect(),
            });
        }
        Ok(Platforms::Known(carried))
    }

    /// Returns the platform in the config blob of an image manifest stored at `manifest_blob`.
    fn platform_of_config(
        &self,
        config: &Descriptor,
        manifest_blob: &str,
    ) -> Result<Platforms, ImageError> {
        match self.locate_blob(&config.digest, manifest_blob)? {
            BlobLocation::Found(entry) => self.platform_of_config_entry(&entry),
            BlobLocation::Missing(entry) => Err(ImageError::MissingBlob {
                path: self.path.to_owned(),
                entry,
                referenced_by: format!("the manifest `{manifest_blob}`"),
            }),
        }
    }

    /// Returns the platform that the image config stored at `entry` declares.
    fn platform_of_config_entry(&self, entry: &str) -> Result<Platforms, ImageError> {
        let platform = self
            .parse_blob::<PlatformFields>(entry)?
            .and_then(|fields| fields.to_platform());
        Ok(match platform {
            Some(platform) => Platforms::Known(BTreeSet::from([platform])),
            None => Platforms::Unknown,
        })
    }

    /// Reads the images of a `docker save` `manifest.json`. containerd normalises each of
    /// `RepoTags` (`foo:1.0` to `docker.io/library/foo:1.0`) and fails the import when a
    /// config or layer it names is missing.
    fn read_docker_images(
        &self,
        entries: Vec<DockerManifestEntry>,
    ) -> Result<Vec<ArchiveImage>, ImageError> {
        for (link, target) in &self.contents.symlinks {
            if !self.contents.files.contains(target) {
                return Err(ImageError::MissingBlob {
                    path: self.path.to_owned(),
                    entry: target.clone(),
                    referenced_by: format!("the symbolic link `{link}`"),
                });
            }
        }

        let mut images = Vec::new();
        for (position, entry) in entries.into_iter().enumerate() {
            let position = position + 1;
            let missing = |name: &str, field: &str| ImageError::MissingBlob {
                path: self.path.to_owned(),
                entry: name.to_owned(),
                referenced_by: format!("`{field}` of image {position} in `manifest.json`"),
            };
            if !self.contents.contains(&entry.config) {
                return Err(missing(&entry.config, "Config"));
            }
            for layer in entry.layers.iter().flatten() {
                if !self.contents.contains(layer) {
                    return Err(missing(layer, "Layers"));
                }
            }

            let platforms = into_list(self.platform_of_config_entry(&entry.config)?);
            let location = format!("`RepoTags` of image {position} in `manifest.json`");
            for tag in entry.repo_tags.iter().flatten() {
                images.push(ArchiveImage {
                    reference: self.parse_archive_name(tag, &location)?,
                    platforms: platforms.clone(),
                });
            }
        }
        Ok(images)
    }

    /// Finds the regular file whose content has `digest`, which is how containerd finds the
    /// blobs of an OCI layout after ingesting every file. `referenced_by` names the metadata
    /// that contains the digest.
    fn locate_blob(&self, digest: &str, referenced_by: &str) -> Result<BlobLocation, ImageError> {
        let conventional_entry = self.blob_path(digest, referenced_by)?;
        if let Some(entry) = self.contents.files_by_digest.get(digest) {
            return Ok(BlobLocation::Found(entry.clone()));
        }
        if self.contents.files.contains(&conventional_entry) {
            return Err(ImageError::BlobDigestMismatch {
                path: self.path.to_owned(),
                entry: conventional_entry,
            });
        }
        Ok(BlobLocation::Missing(conventional_entry))
    }

    /// Returns the entry path of a blob in an OCI layout, `blobs/<algorithm>/<hex>`.
    fn blob_path(&self, digest: &str, referenced_by: &str) -> Result<String, ImageError> {
        let valid = digest.split_once(':').filter(|(algorithm, encoded)| {
            !algorithm.is_empty()
                && algorithm
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && !encoded.is_empty()
                && encoded.bytes().all(|b| b.is_ascii_hexdigit())
        });
        match valid {
            Some((algorithm, encoded)) => Ok(format!("blobs/{algorithm}/{encoded}")),
            None => Err(ImageError::InvalidMetadata {
                path: self.path.to_owned(),
                entry: referenced_by.to_owned(),
                detail: format!("`{digest}` is not a valid digest"),
            }),
        }
    }

    fn parse_archive_name(
        &self,
        value: &str,
        location: &str,
    ) -> Result<ImageReference, ImageError> {
        ImageReference::parse(value).map_err(|error| match error {
            ImageError::InvalidReference { reason, .. } => ImageError::InvalidNameInArchive {
                path: self.path.to_owned(),
                location: location.to_owned(),
                value: value.to_owned(),
                reason,
            },
            other => other,
        })
    }

    /// Parses a well-known entry such as `index.json`, or returns `None` when it is absent.
    fn parse_optional<T: DeserializeOwned>(&self, entry: &str) -> Result<Option<T>, ImageError> {
        match self.contents.json.get(entry) {
            Some(bytes) => self.parse(entry, bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Parses a blob, or returns `None` when its content was not retained (it is not JSON, or
    /// it exceeds the metadata size limits).
    fn parse_blob<T: DeserializeOwned>(&self, entry: &str) -> Result<Option<T>, ImageError> {
        match self.contents.json(entry) {
            Some(bytes) => self.parse(entry, bytes).map(Some),
            None => {
                tracing::debug!(
                    archive = %self.path.display(),
                    entry,
                    "metadata blob not retained, so its platforms are reported as unknown"
                );
                Ok(None)
            }
        }
    }

    fn parse<T: DeserializeOwned>(&self, entry: &str, bytes: &[u8]) -> Result<T, ImageError> {
        serde_json::from_slice(bytes).map_err(|error| ImageError::InvalidMetadata {
            path: self.path.to_owned(),
            entry: entry.to_owned(),
            detail: error.to_string(),
        })
    }
}

fn into_list(platforms: Platforms) -> Vec<String> {
    match platforms {
        Platforms::Known(platforms) => platforms.into_iter().collect(),
        Platforms::Unknown => Vec::new(),
    }
}
