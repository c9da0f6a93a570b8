//! Writers of small image archives that containerd 1.6's `ctr images import` accepts, for tests.
//!
//! Pure Rust, no Docker or skopeo. The output is deterministic: the same input gives the same
//! bytes, because every timestamp is 0 and every owner is root. Layer entries are regular
//! files with mode 0644 and directories with mode 0755, like the layers of real images.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use flate2::Compression as GzipLevel;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const OCI_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const OCI_GZIP_LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";
const OCI_REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// An image to write into a test archive.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// The image name, written verbatim: into `io.containerd.image.name` of an OCI archive,
    /// which containerd does not normalise (so use the full form, `example.test/op:1.0` or
    /// `docker.io/library/op:1.0`), and into `RepoTags` of a docker archive, which it does
    /// normalise (`op:1.0` is fine there).
    pub reference: String,
    /// OS and architecture, for example `("linux", "amd64")`.
    pub platform: (&'static str, &'static str),
    /// The files of the image's single layer: relative path and content.
    pub files: Vec<(String, Vec<u8>)>,
}

impl TestImage {
    /// A `linux/amd64` image named `reference` whose one layer holds `etc/test-image` with the
    /// reference as its text, so different references give different layers.
    pub fn new(reference: &str) -> Self {
        TestImage {
            reference: reference.to_owned(),
            platform: ("linux", "amd64"),
            files: vec![("etc/test-image".to_owned(), reference.as_bytes().to_vec())],
        }
    }

    /// Sets the platform from its `os/arch` form, such as `linux/arm64`.
    ///
    /// # Panics
    ///
    /// When `platform` has no `/`.
    pub fn for_platform(mut self, platform: &'static str) -> Self {
        let (os, architecture) = platform
            .split_once('/')
            .unwrap_or_else(|| panic!("platform {platform:?} is not of the form os/arch"));
        self.platform = (os, architecture);
        self
    }
}

/// Writes an OCI image layout archive: `oci-layout`, `index.json` with one entry per image,
/// and `blobs/sha256/…` holding each image's manifest, config and gzip-compressed layer.
///
/// Each `index.json` entry carries `io.containerd.image.name` (the reference) and, when the
/// reference has a tag, `org.opencontainers.image.ref.name` (the tag), as `ctr images export`
/// and `docker save` write them.
pub fn write_oci_archive(path: &Path, images: &[TestImage]) -> io::Result<()> {
    write_oci_archive_with_annotations(path, images, default_annotations)
}

/// Writes an OCI image layout archive like [`write_oci_archive`], with the annotations of each
/// `index.json` entry taken from `annotate` instead. This makes archives whose names
/// containerd treats differently: a bare tag, only `org.opencontainers.image.ref.name`, or no
/// name at all.
pub fn write_oci_archive_with_annotations(
    path: &Path,
    images: &[TestImage],
    annotate: impl Fn(&TestImage) -> BTreeMap<String, String>,
) -> io::Result<()> {
    let mut blobs = BlobStore::default();
    let mut entries = Vec::new();
    for image in images {
        let manifest = write_oci_image(&mut blobs, image)?;
        entries.push(json!({
            "mediaType": OCI_MANIFEST_MEDIA_TYPE,
            "digest": manifest.digest,
            "size": manifest.size,
            "annotations": annotate(image),
        }));
    }
    write_oci_layout(path, &blobs, entries)
}

/// Writes an OCI image layout archive whose `index.json` names one image index, under the
/// annotations of [`write_oci_archive`], with one manifest per platform. Each platform's layer
/// contains the file `etc/platform` with the text `os/arch`.
pub fn write_multiplatform_oci_archive(
    path: &Path,
    reference: &str,
    platforms: &[(&str, &str)],
) -> io::Result<()> {
    let mut blobs = BlobStore::default();
    let mut manifests = Vec::new();
    for (os, architecture) in platforms {
        let files = vec![(
            "etc/platform".to_owned(),
            format!("{os}/{architecture}\n").into_bytes(),
        )];
        let manifest = write_oci_manifest(&mut blobs, os, architecture, &files)?;
        manifests.push(json!({
            "mediaType": OCI_MANIFEST_MEDIA_TYPE,
            "digest": manifest.digest,
            "size": manifest.size,
            "platform": {"architecture": architecture, "os": os},
        }));
    }

    let image_index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX_MEDIA_TYPE,
        "manifests": manifests,
    });
    let image_index = blobs.add(to_json_bytes(&image_index)?);
    let entry = json!({
        "mediaType": OCI_INDEX_MEDIA_TYPE,
        "digest": image_index.digest,
        "size": image_index.size,
        "annotations": annotations_for(reference),
    });
    write_oci_layout(path, &blobs, vec![entry])
}

/// Writes a `docker save` archive in the format of Docker 24 and earlier: `manifest.json`
/// (`[{Config, RepoTags, Layers}]`), a config `<hex>.json` per image, and an uncompressed
/// `<id>/layer.tar` per layer with its `VERSION` and `json` files. The `repositories` file,
/// which containerd does not read, is not written.
pub fn write_docker_archive(path: &Path, images: &[TestImage]) -> io::Result<()> {
    let mut writer = ArchiveWriter::create(path)?;
    let mut written = BTreeSet::new();
    let mut manifest = Vec::new();

    for image in images {
        let layer = layer_tar(&image.files)?;
        let diff_id = sha256_digest(&layer);
        let layer_id = hex::encode(Sha256::digest(&layer));
        let config = to_json_bytes(&image_config(image.platform.0, image.platform.1, &diff_id))?;
        let config_name = format!("{}.json", hex::encode(Sha256::digest(&config)));
        let layer_name = format!("{layer_id}/layer.tar");

        if written.insert(layer_id.clone()) {
            writer.append_directory(&format!("{layer_id}/"))?;
            writer.append_file(&format!("{layer_id}/VERSION"), b"1.0")?;
            let legacy_json = to_json_bytes(&json!({"id": layer_id}))?;
            writer.append_file(&format!("{layer_id}/json"), &legacy_json)?;
            writer.append_file(&layer_name, &layer)?;
        }
        if written.insert(config_name.clone()) {
            writer.append_file(&config_name, &config)?;
        }
        manifest.push(json!({
            "Config": config_name,
            "RepoTags": [image.reference],
            "Layers": [layer_name],
        }));
    }

    writer.append_file("manifest.json", &to_json_bytes(&Value::Array(manifest))?)?;
    writer.finish()
}

/// Compresses `src` with gzip into `dst`, streaming.
pub fn gzip_file(src: &Path, dst: &Path) -> io::Result<()> {
    let mut input = File::open(src)?;
    let mut encoder = GzEncoder::new(BufWriter::new(File::create(dst)?), GzipLevel::default());
    io::copy(&mut input, &mut encoder)?;
    encoder.finish()?.flush()
}

/// Annotations that `ctr images export` writes for `reference`: the full name, and the tag
/// as the OCI reference name when there is one.
fn default_annotations(image: &TestImage) -> BTreeMap<String, String> {
    annotations_for(&image.reference)
}

fn annotations_for(reference: &str) -> BTreeMap<String, String> {
    let mut annotations =
        BTreeMap::from([(CONTAINERD_NAME_ANNOTATION.to_owned(), reference.to_owned())]);
    let last_component = reference.rsplit('/').next().unwrap_or(reference);
    let without_digest = last_component.split('@').next().unwrap_or(last_component);
    if let Some((_, tag)) = without_digest.split_once(':') {
        annotations.insert(OCI_REF_NAME_ANNOTATION.to_owned(), tag.to_owned());
    }
    annotations
}

/// A blob's digest (`sha256:<hex>`) and size in bytes.
struct BlobRef {
    digest: String,
    size: usize,
}

/// The content-addressed blobs of an OCI layout, by hex digest.
#[derive(Default)]
struct BlobStore {
    blobs: BTreeMap<String, Vec<u8>>,
}

impl BlobStore {
    fn add(&mut self, content: Vec<u8>) -> BlobRef {
        let hex_digest = hex::encode(Sha256::digest(&content));
        let blob = BlobRef {
            digest: format!("sha256:{hex_digest}"),
            size: content.len(),
        };
        self.blobs.entry(hex_digest).or_insert(content);
        blob
    }
}

fn write_oci_image(blobs: &mut BlobStore, image: &TestImage) -> io::Result<BlobRef> {
    let (os, architecture) = image.platform;
    write_oci_manifest(blobs, os, architecture, &image.files)
}

/// Adds a gzip-compressed layer, a config and a manifest to `blobs` and returns the manifest.
fn write_oci_manifest(
    blobs: &mut BlobStore,
    os: &str,
    architecture: &str,
    files: &[(String, Vec<u8>)],
) -> io::Result<BlobRef> {
    let layer = layer_tar(files)?;
    let diff_id = sha256_digest(&layer);
    let compressed_layer = blobs.add(gzip_bytes(&layer)?);
    let config = blobs.add(to_json_bytes(&image_config(os, architecture, &diff_id))?);

    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": OCI_CONFIG_MEDIA_TYPE,
            "digest": config.digest,
            "size": config.size,
        },
        "layers": [{
            "mediaType": OCI_GZIP_LAYER_MEDIA_TYPE,
            "digest": compressed_layer.digest,
            "size": compressed_layer.size,
        }],
    });
    Ok(blobs.add(to_json_bytes(&manifest)?))
}

/// Builds the image config of a one-layer image. `diff_id` is the digest of the uncompressed
/// layer.
fn image_config(os: &str, architecture: &str, diff_id: &str) -> Value {
    json!({
        "architecture": architecture,
        "os": os,
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "k3s-harness test archive writer"}],
    })
}

/// Writes `oci-layout`, the blobs and `index.json` with `entries` into a tar at `path`.
fn write_oci_layout(path: &Path, blobs: &BlobStore, entries: Vec<Value>) -> io::Result<()> {
    let mut writer = ArchiveWriter::create(path)?;
    writer.append_file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    writer.append_directory("blobs/")?;
    writer.append_directory("blobs/sha256/")?;
    for (hex_digest, content) in &blobs.blobs {
        writer.append_file(&format!("blobs/sha256/{hex_digest}"), content)?;
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX_MEDIA_TYPE,
        "manifests": entries,
    });
    writer.append_file("index.json", &to_json_bytes(&index)?)?;
    writer.finish()
}

/// Builds an uncompressed layer tar holding `files` and their parent directories.
fn layer_tar(files: &[(String, Vec<u8>)]) -> io::Result<Vec<u8>> {
    let mut writer = ArchiveWriter::new(Vec::new());
    let mut directories = BTreeSet::new();
    for (name, content) in files {
        let name = name.trim_start_matches('/');
        let mut parent_end = 0;
        while let Some(offset) = name[parent_end..].find('/') {
            parent_end += offset + 1;
            let directory = &name[..parent_end];
            if directories.insert(directory.to_owned()) {
                writer.append_directory(directory)?;
            }
        }
        writer.append_file(name, content)?;
    }
    writer.into_inner()
}

/// A tar builder whose entries are owned by root, dated 0, with modes 0644 and 0755.
struct ArchiveWriter<W: Write> {
    builder: tar::Builder<W>,
}

impl ArchiveWriter<BufWriter<File>> {
    fn create(path: &Path) -> io::Result<Self> {
        Ok(Self::new(BufWriter::new(File::create(path)?)))
    }

    fn finish(self) -> io::Result<()> {
        self.into_inner()?.flush()
    }
}

impl<W: Write> ArchiveWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            builder: tar::Builder::new(inner),
        }
    }

    fn append_file(&mut self, name: &str, content: &[u8]) -> io::Result<()> {
        let mut header = root_owned_header(tar::EntryType::Regular, 0o644);
        header.set_size(content.len() as u64);
        self.builder.append_data(&mut header, name, content)
    }

    fn append_directory(&mut self, name: &str) -> io::Result<()> {
        let mut header = root_owned_header(tar::EntryType::Directory, 0o755);
        header.set_size(0);
        self.builder.append_data(&mut header, name, io::empty())
    }

    fn into_inner(self) -> io::Result<W> {
        self.builder.into_inner()
    }
}

fn root_owned_header(entry_type: tar::EntryType, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

fn gzip_bytes(data: &[u8]) -> io::Result<Vec<u8>> {
    // flate2 writes a header with mtime 0 and no file name, so the output is deterministic.
    let mut encoder = GzEncoder::new(Vec::new(), GzipLevel::default());
    encoder.write_all(data)?;
    encoder.finish()
}

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn to_json_bytes(value: &Value) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn entries_of(archive: &[u8]) -> Vec<(String, tar::Header, Vec<u8>)> {
        let mut archive = tar::Archive::new(archive);
        let mut entries = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let header = entry.header().clone();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            entries.push((name, header, data));
        }
        entries
    }

    #[test]
    fn layer_entries_like_real_images() {
        let files = vec![
            ("etc/op/config.yaml".to_owned(), b"a: 1\n".to_vec()),
            ("etc/op/extra".to_owned(), b"x".to_vec()),
            ("bin".to_owned(), b"#!/bin/sh\n".to_vec()),
        ];
        let layer = layer_tar(&files).unwrap();
        let entries = entries_of(&layer);

        let names: Vec<&str> = entries.iter().map(|(name, _, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "etc/",
                "etc/op/",
                "etc/op/config.yaml",
                "etc/op/extra",
                "bin"
            ]
        );
        for (name, header, _) in &entries {
            let is_directory = name.ends_with('/');
            let expected_mode = if is_directory { 0o755 } else { 0o644 };
            assert_eq!(header.mode().unwrap(), expected_mode, "mode of {name}");
            assert_eq!(header.uid().unwrap(), 0, "uid of {name}");
            assert_eq!(header.gid().unwrap(), 0, "gid of {name}");
            assert_eq!(header.mtime().unwrap(), 0, "mtime of {name}");
        }
        assert_eq!(entries[2].2, b"a: 1\n");
    }

    #[test]
    fn annotations_for_references() {
        let cases = [
            ("example.test/op:1.0", Some("1.0")),
            ("localhost:5000/op", None),
            ("localhost:5000/op:2", Some("2")),
            ("docker.io/library/op", None),
        ];
        for (reference, tag) in cases {
            let annotations = annotations_for(reference);
            assert_eq!(
                annotations
                    .get(CONTAINERD_NAME_ANNOTATION)
                    .map(String::as_str),
                Some(reference)
            );
            assert_eq!(
                annotations.get(OCI_REF_NAME_ANNOTATION).map(String::as_str),
                tag,
                "tag annotation of {reference}"
            );
        }
    }

    #[test]
    fn oci_archive_blobs_match_digests() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("oci.tar");
        let image = TestImage {
            reference: "example.test/op:1.0".to_owned(),
            platform: ("linux", "amd64"),
            files: vec![("hello".to_owned(), b"world".to_vec())],
        };
        write_oci_archive(&path, &[image]).unwrap();

        let entries = entries_of(&std::fs::read(&path).unwrap());
        let mut blob_count = 0;
        for (name, _, data) in &entries {
            if let Some(hex_digest) = name.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
                assert_eq!(
                    hex::encode(Sha256::digest(data)),
                    hex_digest,
                    "digest of {name}"
                );
                blob_count += 1;
            }
        }
        // Manifest, config and layer.
        assert_eq!(blob_count, 3);
    }
}
