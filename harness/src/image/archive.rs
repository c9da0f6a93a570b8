//! Image archive inspection before `ctr images import`, and the checks that the harness runs on
//! the result.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::platform::normalize_platform;
use super::walk::walk_archive;
use super::{ImageError, ImageReference, layout};

/// The layout of an image archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArchiveFormat {
    /// An OCI image layout (`oci-layout`, `index.json`, `blobs/`). `docker save` has written
    /// this layout, together with `manifest.json`, since Docker 25.
    Oci,
    /// The `docker save` format: `manifest.json` with `Config`, `RepoTags` and `Layers`.
    DockerArchive,
}

/// The compression of an archive file, detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar.
    None,
    /// A gzip-compressed tar. `ctr images import` rejects these, so the harness decompresses
    /// them while streaming.
    Gzip,
}

/// An image that an archive names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveImage {
    /// The normalised reference under which containerd stores the image.
    pub reference: ImageReference,
    /// The platforms that the archive carries for this image, such as `linux/amd64`, sorted.
    /// Empty when the archive's metadata does not show them.
    pub platforms: Vec<String>,
}

/// Format, compression, content digest and named images of an image archive, as returned by
/// [`inspect_archive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// The archive's layout.
    pub format: ArchiveFormat,
    /// The compression of the file as stored.
    pub compression: Compression,
    /// `sha256:<hex>` of the file's bytes as stored (compressed, if it is).
    pub content_digest: String,
    /// Size of the file as stored, in bytes.
    pub size: u64,
    /// The named images, one per reference, in archive order.
    pub images: Vec<ArchiveImage>,
}

/// Reads the whole archive once and returns its format, compression, content digest and the
/// images it names.
///
/// Layers are streamed and never buffered, so memory use does not depend on their size. The
/// content digest is computed during the same pass. Gzip is detected by its magic bytes
/// (`1f 8b`), not by the file name, and decompressed on the fly.
///
/// For an OCI layout, the names come from `index.json`, and the platforms from the image
/// indexes and manifests it points to, or from the config blob. For the `docker save` format,
/// the names come from `RepoTags` in `manifest.json`, and the platform from the config blob's
/// `os`, `architecture` and `variant`.
///
/// Returns an error when the file is not a tar, is truncated or is corrupt, and when it has
/// neither an OCI layout nor `manifest.json`. It also fails when an entry that the metadata
/// names is missing, and when the names are unusable: an OCI entry named only by a bare tag, an
/// invalid or non-normalised name, or no name at all.
///
/// This function blocks while it reads the file.
pub fn inspect_archive(path: &Path) -> Result<ArchiveInfo, ImageError> {
    let file = File::open(path).map_err(|source| ImageError::Io {
        path: path.to_owned(),
        source,
    })?;
    let walked = walk_archive(path, file)?;
    let (format, images) = layout::read_images(path, &walked.contents)?;

    tracing::debug!(
        archive = %path.display(),
        ?format,
        compression = ?walked.compression,
        digest = %walked.content_digest,
        size = walked.size,
        images = images.len(),
        "inspected image archive"
    );
    Ok(ArchiveInfo {
        format,
        compression: walked.compression,
        content_digest: walked.content_digest,
        size: walked.size,
        images,
    })
}

/// Opens the archive for streaming into `ctr images import`: the file itself, or a gzip
/// decoder over it.
///
/// Pass the [`ArchiveInfo::compression`] that [`inspect_archive`] found.
pub fn open_for_import(
    path: &Path,
    compression: Compression,
) -> Result<Box<dyn Read + Send>, ImageError> {
    let file = File::open(path).map_err(|source| ImageError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(MultiGzDecoder::new(file)),
    })
}

/// Returns the references in `info` that Kubernetes would pull with policy `Always`: `:latest`,
/// explicit or implied, without a digest.
pub fn latest_references(info: &ArchiveInfo) -> Vec<&ImageReference> {
    info.images
        .iter()
        .map(|image| &image.reference)
        .filter(|reference| reference.is_latest_or_untagged())
        .collect()
}

/// Returns whether every image in `info` carries `platform` (for example `linux/amd64`), so that
/// `ctr images import --platform <platform>` can unpack all of them.
///
/// An image whose platforms are unknown counts as carrying it. Platforms are compared after
/// containerd's normalisation and without its fallbacks: `linux/arm64` does not match
/// `linux/arm/v7`, as with `ctr`'s strict matcher (`platforms.OnlyStrict`).
pub fn carries_platform(info: &ArchiveInfo, platform: &str) -> bool {
    let requested = normalize_platform(platform);
    info.images
        .iter()
        .all(|image| image.platforms.is_empty() || image.platforms.contains(&requested))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::io::Write;

    use tempfile::TempDir;

    use super::*;
    use crate::testing::{
        TestImage, gzip_file, write_docker_archive, write_multiplatform_oci_archive,
        write_oci_archive, write_oci_archive_with_annotations,
    };

    fn test_image(reference: &str, arch: &'static str) -> TestImage {
        TestImage {
            reference: reference.to_owned(),
            platform: ("linux", arch),
            files: vec![
                (
                    "etc/operator/config.yaml".to_owned(),
                    b"level: debug\n".to_vec(),
                ),
                (
                    "usr/local/bin/operator".to_owned(),
                    vec![0x7f, b'E', b'L', b'F'],
                ),
            ],
        }
    }

    fn references(info: &ArchiveInfo) -> Vec<&str> {
        info.images
            .iter()
            .map(|image| image.reference.as_str())
            .collect()
    }

    fn sha256_of_file(path: &Path) -> String {
        use sha2::{Digest, Sha256};
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(fs::read(path).unwrap()))
        )
    }

    #[test]
    fn oci_archive_inspected() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("oci.tar");
        write_oci_archive(
            &path,
            &[
                test_image("example.test/op:1.0", "amd64"),
                test_image("docker.io/library/helper:2.1", "arm64"),
            ],
        )
        .unwrap();

        let info = inspect_archive(&path).unwrap();

        assert_eq!(info.format, ArchiveFormat::Oci);
        assert_eq!(info.compression, Compression::None);
        assert_eq!(
            references(&info),
            ["example.test/op:1.0", "docker.io/library/helper:2.1"]
        );
        assert_eq!(info.images[0].platforms, ["linux/amd64"]);
        assert_eq!(info.images[1].platforms, ["linux/arm64"]);
        assert_eq!(info.size, fs::metadata(&path).unwrap().len());
        assert_eq!(info.content_digest, sha256_of_file(&path));
    }

    #[test]
    fn docker_archive_inspected() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("docker.tar");
        write_docker_archive(
            &path,
            &[
                test_image("op:1.0", "amd64"),
                test_image("ghcr.io/team/sidecar:0.3", "arm"),
            ],
        )
        .unwrap();

        let info = inspect_archive(&path).unwrap();

        assert_eq!(info.format, ArchiveFormat::DockerArchive);
        assert_eq!(info.compression, Compression::None);
        assert_eq!(
            references(&info),
            ["docker.io/library/op:1.0", "ghcr.io/team/sidecar:0.3"]
        );
        assert_eq!(info.images[0].platforms, ["linux/amd64"]);
        assert_eq!(info.images[1].platforms, ["linux/arm/v7"]);
        assert_eq!(info.content_digest, sha256_of_file(&path));
    }

    #[test]
    fn multiplatform_archive_inspected() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("multi.tar");
        write_multiplatform_oci_archive(
            &path,
            "example.test/op:1.0",
            &[("linux", "amd64"), ("linux", "arm64")],
        )
        .unwrap();

        let info = inspect_archive(&path).unwrap();

        assert_eq!(info.format, ArchiveFormat::Oci);
        assert_eq!(references(&info), ["example.test/op:1.0"]);
        assert_eq!(info.images[0].platforms, ["linux/amd64", "linux/arm64"]);
        assert!(carries_platform(&info, "linux/amd64"));
        assert!(carries_platform(&info, "linux/aarch64"));
        assert!(!carries_platform(&info, "linux/arm/v7"));
    }

    #[test]
    fn digest_stable_across_reads_and_writes() {
        let dir = TempDir::new().unwrap();
        let first = dir.path().join("first.tar");
        let second = dir.path().join("second.tar");
        let images = [test_image("example.test/op:1.0", "amd64")];
        write_oci_archive(&first, &images).unwrap();
        write_oci_archive(&second, &images).unwrap();

        let first_read = inspect_archive(&first).unwrap();
        let second_read = inspect_archive(&first).unwrap();
        let other_file = inspect_archive(&second).unwrap();

        assert_eq!(first_read, second_read);
        assert_eq!(first_read.content_digest, other_file.content_digest);
        assert!(first_read.content_digest.starts_with("sha256:"));
        assert_eq!(first_read.content_digest.len(), "sha256:".len() + 64);
    }

    #[test]
    fn gzip_detected_by_magic_bytes() {
        let dir = TempDir::new().unwrap();
        let plain = dir.path().join("oci.tar");
        // The file name suggests a plain tar, but the content is compressed.
        let compressed = dir.path().join("compressed.tar");
        write_oci_archive(&plain, &[test_image("example.test/op:1.0", "amd64")]).unwrap();
        gzip_file(&plain, &compressed).unwrap();

        let plain_info = inspect_archive(&plain).unwrap();
        let info = inspect_archive(&compressed).unwrap();

        assert_eq!(info.compression, Compression::Gzip);
        assert_eq!(info.format, ArchiveFormat::Oci);
        assert_eq!(info.images, plain_info.images);
        assert_eq!(info.size, fs::metadata(&compressed).unwrap().len());
        assert_eq!(info.content_digest, sha256_of_file(&compressed));
        assert_ne!(info.content_digest, plain_info.content_digest);
    }

    #[test]
    fn open_for_import_decompresses() {
        let dir = TempDir::new().unwrap();
        let plain = dir.path().join("docker.tar");
        let compressed = dir.path().join("docker.tar.gz");
        write_docker_archive(&plain, &[test_image("op:1.0", "amd64")]).unwrap();
        gzip_file(&plain, &compressed).unwrap();

        let mut streamed = Vec::new();
        open_for_import(&compressed, Compression::Gzip)
            .unwrap()
            .read_to_end(&mut streamed)
            .unwrap();
        let mut passed_through = Vec::new();
        open_for_import(&plain, Compression::None)
            .unwrap()
            .read_to_end(&mut passed_through)
            .unwrap();

        let expected = fs::read(&plain).unwrap();
        assert!(
            streamed == expected,
            "decompressed stream differs from the tar"
        );
        assert!(
            passed_through == expected,
            "plain stream differs from the tar"
        );
    }

    #[test]
    fn open_for_import_missing_file() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("absent.tar");
        let error = open_for_import(&path, Compression::None).err().unwrap();
        assert!(matches!(error, ImageError::Io { .. }), "{error:?}");
        assert!(error.to_string().contains("absent.tar"), "{error}");
    }

    #[test]
    fn truncated_archive_rejected() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("oci.tar");
        write_oci_archive(&path, &[test_image("example.test/op:1.0", "amd64")]).unwrap();
        let bytes = fs::read(&path).unwrap();

        let cuts = [
            ("half", bytes.len() / 2),
            // A cut at a block boundary leaves whole entries and no end-of-archive marker.
            ("block boundary", (bytes.len() / 2) & !511),
            ("inside first header", 300),
        ];
        for (label, cut) in cuts {
            let cut_path = dir.path().join(format!("cut-{cut}.tar"));
            fs::write(&cut_path, &bytes[..cut]).unwrap();

            let error = inspect_archive(&cut_path).unwrap_err();
            let message = error.to_string();
            assert!(
                message.contains(&cut_path.display().to_string()),
                "{label}: {message}"
            );
            if cut < 512 {
                assert!(
                    matches!(error, ImageError::NotTar { .. }),
                    "{label}: {error:?}"
                );
            } else {
                assert!(
                    matches!(error, ImageError::Truncated { .. }),
                    "{label}: {error:?}"
                );
            }
        }
    }

    #[test]
    fn truncated_gzip_rejected() {
        let dir = TempDir::new().unwrap();
        let plain = dir.path().join("oci.tar");
        let compressed = dir.path().join("oci.tar.gz");
        let cut = dir.path().join("cut.tar.gz");
        write_oci_archive(&plain, &[test_image("example.test/op:1.0", "amd64")]).unwrap();
        gzip_file(&plain, &compressed).unwrap();
        let bytes = fs::read(&compressed).unwrap();
        fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();

        let error = inspect_archive(&cut).unwrap_err();

        assert!(matches!(error, ImageError::Truncated { .. }), "{error:?}");
        assert!(error.to_string().contains("gzip"), "{error}");
    }

    #[test]
    fn corrupt_gzip_trailer_rejected() {
        let dir = TempDir::new().unwrap();
        let plain = dir.path().join("oci.tar");
        let compressed = dir.path().join("oci.tar.gz");
        write_oci_archive(&plain, &[test_image("example.test/op:1.0", "amd64")]).unwrap();
        gzip_file(&plain, &compressed).unwrap();
        let mut bytes = fs::read(&compressed).unwrap();
        // The last 8 bytes are the CRC-32 and the length of the uncompressed data.
        let crc_start = bytes.len() - 8;
        bytes[crc_start] ^= 0xff;
        fs::write(&compressed, &bytes).unwrap();

        let error = inspect_archive(&compressed).unwrap_err();

        assert!(matches!(error, ImageError::InvalidGzip { .. }), "{error:?}");
    }

    #[test]
    fn non_tar_file_rejected() {
        let dir = TempDir::new().unwrap();
        let cases: [(&str, Vec<u8>); 4] = [
            ("text.tar", b"this is not a tar archive\n".repeat(100)),
            ("short.tar", b"hello\n".to_vec()),
            ("empty.tar", Vec::new()),
            ("zeros.tar", vec![0; 4096]),
        ];
        for (name, content) in cases {
            let path = dir.path().join(name);
            fs::write(&path, content).unwrap();

            let result = inspect_archive(&path);

            let error = result.expect_err(name);
            let message = error.to_string();
            assert!(
                message.contains(&path.display().to_string()),
                "{name}: {message}"
            );
            if name == "zeros.tar" {
                // A tar of only end-of-archive blocks is valid but contains nothing.
                assert!(
                    matches!(error, ImageError::NoImageLayout { .. }),
                    "{name}: {error:?}"
                );
            } else {
                assert!(
                    matches!(error, ImageError::NotTar { .. }),
                    "{name}: {error:?}"
                );
            }
        }
    }

    #[test]
    fn gzip_of_non_tar_rejected() {
        let dir = TempDir::new().unwrap();
        let text = dir.path().join("notes.txt");
        let compressed = dir.path().join("notes.tar.gz");
        fs::write(&text, b"plain text, not a tar\n".repeat(50)).unwrap();
        gzip_file(&text, &compressed).unwrap();

        let error = inspect_archive(&compressed).unwrap_err();

        assert!(matches!(error, ImageError::NotTar { .. }), "{error:?}");
        assert!(
            error.to_string().contains("after gzip decompression"),
            "{error}"
        );
    }

    #[test]
    fn tar_without_image_metadata_rejected() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("files.tar");
        write_tar(
            &path,
            &[("README", b"hello".as_slice()), ("data/x.bin", &[1, 2, 3])],
        );

        let error = inspect_archive(&path).unwrap_err();

        assert!(
            matches!(error, ImageError::NoImageLayout { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("manifest.json"), "{error}");
    }

    #[test]
    fn index_without_oci_layout_rejected() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("index-only.tar");
        write_tar(
            &path,
            &[(
                "index.json",
                br#"{"schemaVersion":2,"manifests":[]}"#.as_slice(),
            )],
        );

        let error = inspect_archive(&path).unwrap_err();

        assert!(
            matches!(error, ImageError::MissingOciLayout { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn unsupported_layout_version_rejected() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("layout-2.tar");
        write_tar(
            &path,
            &[
                (
                    "oci-layout",
                    br#"{"imageLayoutVersion":"2.0.0"}"#.as_slice(),
                ),
                ("index.json", br#"{"schemaVersion":2,"manifests":[]}"#),
            ],
        );

        let error = inspect_archive(&path).unwrap_err();

        assert!(
            matches!(&error, ImageError::UnsupportedLayoutVersion { version, .. } if version == "2.0.0"),
            "{error:?}"
        );
    }

    #[test]
    fn oci_layout_without_index_rejected() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("no-index.tar");
        write_tar(
            &path,
            &[(
                "oci-layout",
                br#"{"imageLayoutVersion":"1.0.0"}"#.as_slice(),
            )],
        );

        let error = inspect_archive(&path).unwrap_err();

        assert!(
            matches!(error, ImageError::MissingIndex { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn invalid_index_json_rejected() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("bad-index.tar");
        write_tar(
            &path,
            &[
                (
                    "oci-layout",
                    br#"{"imageLayoutVersion":"1.0.0"}"#.as_slice(),
                ),
                ("index.json", b"{\"manifests\": [ oops"),
            ],
        );

        let error = inspect_archive(&path).unwrap_err();

        assert!(
            matches!(&error, ImageError::InvalidMetadata { entry, .. } if entry == "index.json"),
            "{error:?}"
        );
    }

    #[test]
    fn bare_tag_ref_name_rejected() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("bare-tag.tar");
        write_oci_archive_with_annotations(
            &path,
            &[test_image("example.test/op:1.0", "amd64")],
            |_| {
                BTreeMap::from([(
                    "org.opencontainers.image.ref.name".to_owned(),
                    "1.0".to_owned(),
                )])
            },
        )
        .unwrap();

        let error = inspect_archive(&path).unwrap_err();

        assert!(
            matches!(&error, ImageError::BareTagName { tag, .. } if tag == "1.0"),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("io.containerd.image.name"), "{message}");
        assert!(
            message.contains("org.opencontainers.image.ref.name"),
            "{message}"
        );
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    #[test]
    fn full_ref_name_accepted() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("ref-name.tar");
        write_oci_archive_with_annotations(
            &path,
            &[test_image("example.test/op:1.0", "amd64")],
            |image| {
                BTreeMap::from([(
                    "org.opencontainers.image.ref.name".to_owned(),
                    image.reference.clone(),
                )])
            },
        )
        .unwrap();

        let info = inspect_archive(&path).unwrap();

        assert_eq!(references(&info), ["example.test/op:1.0"]);
    }

    #[test]
    fn containerd_name_preferred_over_ref_name() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("both.tar");
        write_oci_archive_with_annotations(
            &path,
            &[test_image("example.test/op:1.0", "amd64")],
            |_| {
                BTreeMap::from([
                    (
                        "io.containerd.image.name".to_owned(),
                        "example.test/op:1.0".to_owned(),
                    ),
                    (
                        "org.opencontainers.image.ref.name".to_owned(),
                        "example.test/other:9".to_owned(),
                    ),
                ])
            },
        )
        .unwrap();

        let info = inspect_archive(&path).unwrap();

        assert_eq!(references(&info), ["example.test/op:1.0"]);
    }

    #[test]
    fn non_normalised_name_rejected() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("short-name.tar");
        write_oci_archive_with_annotations(&path, &[test_image("op:1.0", "amd64")], |_| {
            BTreeMap::from([("io.containerd.image.name".to_owned(), "op:1.0".to_owned())])
        })
        .unwrap();

        let error = inspect_archive(&path).unwrap_err();

        assert!(
            matches!(
                &error,
                ImageError::NonCanonicalName { name, normalised, .. }
                    if name == "op:1.0" && normalised == "docker.io/library/op:1.0"
            ),
            "{error:?}"
        );
    }

    #[test]
    fn invalid_name_in_archive_rejected() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("upper.tar");
        write_docker_archive(&path, &[test_image("Example/Op:1.0", "amd64")]).unwrap();

        let error = inspect_archive(&path).unwrap_err();

        assert!(
            matches!(&error, ImageError::InvalidNameInArchive { value, .. } if value == "Example/Op:1.0"),
            "{error:?}"
        );
        assert!(error.to_string().contains("RepoTags"), "{error}");
    }

    #[test]
    fn archive_without_names_rejected() {
        let dir = TempDir::new().unwrap();
        let oci = dir.path().join("unnamed-oci.tar");
        write_oci_archive_with_annotations(
            &oci,
            &[test_image("example.test/op:1.0", "amd64")],
            |_| BTreeMap::new(),
        )
        .unwrap();

        let error = inspect_archive(&oci).unwrap_err();

        assert!(
            matches!(error, ImageError::NoImageNames { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn docker_archive_without_repo_tags_rejected() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("untagged.tar");
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        write_tar(
            &path,
            &[
                (
                    "manifest.json",
                    br#"[{"Config":"cfg.json","RepoTags":null,"Layers":[]}]"#.as_slice(),
                ),
                ("cfg.json", config.as_slice()),
            ],
        );

        let error = inspect_archive(&path).unwrap_err();

        assert!(
            matches!(error, ImageError::NoImageNames { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn docker_archive_missing_layer_rejected() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("missing-layer.tar");
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        write_tar(
            &path,
            &[
                (
                    "manifest.json",
                    br#"[{"Config":"cfg.json","RepoTags":["op:1.0"],"Layers":["abc/layer.tar"]}]"#
                        .as_slice(),
                ),
                ("cfg.json", config.as_slice()),
            ],
        );

        let error = inspect_archive(&path).unwrap_err();

        assert!(
            matches!(&error, ImageError::MissingBlob { entry, .. } if entry == "abc/layer.tar"),
            "{error:?}"
        );
    }

    #[test]
    fn docker_archive_follows_symlinked_layers() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("linked.tar");
        let file = File::create(&path).unwrap();
        let mut builder = tar::Builder::new(file);
        let entries: [(&str, &[u8]); 3] = [
            (
                "manifest.json",
                br#"[{"Config":"cfg.json","RepoTags":["op:1.0"],"Layers":["b/layer.tar"]}]"#,
            ),
            (
                "cfg.json",
                br#"{"architecture":"arm64","variant":"v8","os":"linux"}"#,
            ),
            ("a/layer.tar", &[0; 1024]),
        ];
        for (name, data) in entries {
            append_file(&mut builder, name, data);
        }
        let mut link = tar::Header::new_ustar();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        builder
            .append_link(&mut link, "b/layer.tar", "../a/layer.tar")
            .unwrap();
        builder.into_inner().unwrap().flush().unwrap();

        let info = inspect_archive(&path).unwrap();

        assert_eq!(references(&info), ["docker.io/library/op:1.0"]);
        assert_eq!(info.images[0].platforms, ["linux/arm64"]);
    }

    #[test]
    fn index_with_missing_platform_blobs() {
        // `docker save` with Docker's containerd image store writes the whole image index but
        // only the manifests of the platforms that were pulled.
        let dir = TempDir::new().unwrap();
        let full = dir.path().join("full.tar");
        let partial = dir.path().join("partial.tar");
        let empty = dir.path().join("empty.tar");
        write_multiplatform_oci_archive(
            &full,
            "example.test/op:1.0",
            &[("linux", "amd64"), ("linux", "arm64")],
        )
        .unwrap();
        let (arm64_manifest, amd64_manifest) = {
            let index = read_nested_index(&full);
            (
                blob_for_platform(&index, "arm64"),
                blob_for_platform(&index, "amd64"),
            )
        };
        copy_tar_without(&full, &partial, &[arm64_manifest.as_str()]);
        copy_tar_without(
            &full,
            &empty,
            &[arm64_manifest.as_str(), amd64_manifest.as_str()],
        );

        let info = inspect_archive(&partial).unwrap();
        assert_eq!(info.images[0].platforms, ["linux/amd64"]);
        assert!(carries_platform(&info, "linux/amd64"));
        assert!(!carries_platform(&info, "linux/arm64"));

        let error = inspect_archive(&empty).unwrap_err();
        assert!(
            matches!(&error, ImageError::NoCarriedManifest { listed, .. }
                if listed == &["linux/amd64".to_owned(), "linux/arm64".to_owned()]),
            "{error:?}"
        );
    }

    #[test]
    fn oci_archive_missing_manifest_rejected() {
        let dir = TempDir::new().unwrap();
        let full = dir.path().join("full.tar");
        let broken = dir.path().join("broken.tar");
        write_oci_archive(&full, &[test_image("example.test/op:1.0", "amd64")]).unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&read_entry(&full, "index.json")).unwrap();
        let digest = index["manifests"][0]["digest"].as_str().unwrap();
        let manifest_entry = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
        copy_tar_without(&full, &broken, &[manifest_entry.as_str()]);

        let error = inspect_archive(&broken).unwrap_err();

        assert!(
            matches!(&error, ImageError::MissingBlob { entry, .. } if *entry == manifest_entry),
            "{error:?}"
        );
    }

    #[test]
    fn corrupt_blob_rejected() {
        let dir = TempDir::new().unwrap();
        let full = dir.path().join("full.tar");
        let corrupt = dir.path().join("corrupt.tar");
        write_oci_archive(&full, &[test_image("example.test/op:1.0", "amd64")]).unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&read_entry(&full, "index.json")).unwrap();
        let digest = index["manifests"][0]["digest"].as_str().unwrap();
        let manifest_entry = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
        copy_tar(&full, &corrupt, |name, mut data| {
            if name == manifest_entry {
                // Same JSON, one byte more, so the content no longer matches its digest.
                data.push(b'\n');
            }
            Some((name.to_owned(), data))
        });

        let error = inspect_archive(&corrupt).unwrap_err();

        assert!(
            matches!(&error, ImageError::BlobDigestMismatch { entry, .. } if *entry == manifest_entry),
            "{error:?}"
        );
    }

    #[test]
    fn oci_blob_found_by_content() {
        // containerd ingests every regular file and finds OCI blobs by digest, not by path.
        let dir = TempDir::new().unwrap();
        let full = dir.path().join("full.tar");
        let moved = dir.path().join("moved.tar");
        write_oci_archive(&full, &[test_image("example.test/op:1.0", "arm64")]).unwrap();
        copy_tar(&full, &moved, |name, data| {
            let new_name = match name.strip_prefix("blobs/sha256/") {
                Some(hex_digest) if !hex_digest.is_empty() => format!("elsewhere/{hex_digest}"),
                _ => name.to_owned(),
            };
            Some((new_name, data))
        });

        let info = inspect_archive(&moved).unwrap();

        assert_eq!(references(&info), ["example.test/op:1.0"]);
        assert_eq!(info.images[0].platforms, ["linux/arm64"]);
    }

    #[test]
    fn oci_layout_preferred_over_manifest_json() {
        // `docker save` since Docker 25 writes both, and containerd reads the OCI layout.
        let dir = TempDir::new().unwrap();
        let oci = dir.path().join("oci.tar");
        let both = dir.path().join("both.tar");
        write_oci_archive(&oci, &[test_image("docker.io/library/op:1.0", "amd64")]).unwrap();
        let docker_manifest: &[u8] =
            br#"[{"Config":"blobs/sha256/00","RepoTags":["other:2.0"],"Layers":[]}]"#;
        copy_tar_and_append(
            &oci,
            &both,
            |name, data| Some((name.to_owned(), data)),
            &[("manifest.json", docker_manifest)],
        );

        let info = inspect_archive(&both).unwrap();

        assert_eq!(info.format, ArchiveFormat::Oci);
        assert_eq!(references(&info), ["docker.io/library/op:1.0"]);
    }

    #[test]
    fn latest_references_listed() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("docker.tar");
        write_docker_archive(
            &path,
            &[
                test_image("op:1.0", "amd64"),
                test_image("op:latest", "amd64"),
                test_image("example.test/tool", "amd64"),
            ],
        )
        .unwrap();

        let info = inspect_archive(&path).unwrap();
        let latest: Vec<&str> = latest_references(&info)
            .into_iter()
            .map(ImageReference::as_str)
            .collect();

        assert_eq!(
            latest,
            ["docker.io/library/op:latest", "example.test/tool:latest"]
        );
    }

    #[test]
    fn carries_platform_table() {
        let reference = ImageReference::parse("example.test/op:1.0").unwrap();
        let info_with = |platform_lists: &[&[&str]]| ArchiveInfo {
            format: ArchiveFormat::Oci,
            compression: Compression::None,
            content_digest: String::new(),
            size: 0,
            images: platform_lists
                .iter()
                .map(|platforms| ArchiveImage {
                    reference: reference.clone(),
                    platforms: platforms.iter().map(|p| (*p).to_owned()).collect(),
                })
                .collect(),
        };
        let cases: [(&[&[&str]], &str, bool); 7] = [
            (&[&["linux/amd64"]], "linux/amd64", true),
            (&[&["linux/amd64"]], "linux/x86_64", true),
            (&[&["linux/arm64"]], "linux/amd64", false),
            (&[&[]], "linux/riscv64", true),
            (&[&["linux/amd64"], &[]], "linux/amd64", true),
            (&[&["linux/amd64"], &["linux/arm64"]], "linux/amd64", false),
            (&[&["linux/arm/v7"]], "linux/arm", true),
        ];
        for (platform_lists, platform, expected) in cases {
            let info = info_with(platform_lists);
            assert_eq!(
                carries_platform(&info, platform),
                expected,
                "{platform_lists:?} carries {platform}"
            );
        }
    }

    #[test]
    fn error_messages_name_path_and_fix() {
        let path = Path::new("/images/op.tar");
        let latest = ImageError::LatestReference {
            path: path.to_owned(),
            references: vec!["docker.io/library/op:latest".to_owned()],
        };
        let message = latest.to_string();
        assert!(message.contains("/images/op.tar"), "{message}");
        assert!(message.contains("docker.io/library/op:latest"), "{message}");
        assert!(message.contains("imagePullPolicy"), "{message}");
        assert!(message.contains("Always"), "{message}");
        assert!(
            message.contains("Tag the image with a version"),
            "{message}"
        );

        let platform = ImageError::PlatformNotCarried {
            path: path.to_owned(),
            platform: "linux/amd64".to_owned(),
            carried: vec!["linux/arm64".to_owned()],
        };
        let message = platform.to_string();
        assert!(message.contains("/images/op.tar"), "{message}");
        assert!(message.contains("`linux/amd64`"), "{message}");
        assert!(message.contains("linux/arm64"), "{message}");
    }

    /// Writes a plain tar of regular files.
    fn write_tar(path: &Path, entries: &[(&str, &[u8])]) {
        let mut builder = tar::Builder::new(File::create(path).unwrap());
        for (name, data) in entries {
            append_file(&mut builder, name, data);
        }
        builder.into_inner().unwrap().flush().unwrap();
    }

    fn append_file<W: Write>(builder: &mut tar::Builder<W>, name: &str, data: &[u8]) {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, data).unwrap();
    }

    /// Copies a tar, leaving out the entries named in `skip`.
    fn copy_tar_without(source: &Path, destination: &Path, skip: &[&str]) {
        copy_tar(source, destination, |name, data| {
            (!skip.contains(&name)).then(|| (name.to_owned(), data))
        });
    }

    /// Copies a tar through `edit`, which returns the new name and content of each regular
    /// file, or `None` to leave it out.
    fn copy_tar(
        source: &Path,
        destination: &Path,
        edit: impl Fn(&str, Vec<u8>) -> Option<(String, Vec<u8>)>,
    ) {
        copy_tar_and_append(source, destination, edit, &[]);
    }

    /// Copies a tar like [`copy_tar`] and appends the regular files in `extra`.
    fn copy_tar_and_append(
        source: &Path,
        destination: &Path,
        edit: impl Fn(&str, Vec<u8>) -> Option<(String, Vec<u8>)>,
        extra: &[(&str, &[u8])],
    ) {
        let mut archive = tar::Archive::new(File::open(source).unwrap());
        let mut builder = tar::Builder::new(File::create(destination).unwrap());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut header = entry.header().clone();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            if header.entry_type() != tar::EntryType::Regular {
                builder
                    .append_data(&mut header, &name, data.as_slice())
                    .unwrap();
                continue;
            }
            if let Some((new_name, new_data)) = edit(&name, data) {
                header.set_size(new_data.len() as u64);
                builder
                    .append_data(&mut header, &new_name, new_data.as_slice())
                    .unwrap();
            }
        }
        for (name, data) in extra {
            append_file(&mut builder, name, data);
        }
        builder.into_inner().unwrap().flush().unwrap();
    }

    fn read_entry(archive_path: &Path, wanted: &str) -> Vec<u8> {
        let mut archive = tar::Archive::new(File::open(archive_path).unwrap());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().to_string_lossy() == wanted {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                return data;
            }
        }
        panic!("{wanted} not found in {}", archive_path.display());
    }

    /// Reads the image index that `index.json` of a multi-platform archive points to.
    fn read_nested_index(archive_path: &Path) -> serde_json::Value {
        let index: serde_json::Value =
            serde_json::from_slice(&read_entry(archive_path, "index.json")).unwrap();
        let digest = index["manifests"][0]["digest"].as_str().unwrap();
        let entry = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
        serde_json::from_slice(&read_entry(archive_path, &entry)).unwrap()
    }

    fn blob_for_platform(index: &serde_json::Value, architecture: &str) -> String {
        let manifest = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|manifest| manifest["platform"]["architecture"] == architecture)
            .unwrap();
        let digest = manifest["digest"].as_str().unwrap();
        format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
    }
}
