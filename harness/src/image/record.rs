//! What was imported where: the per-instance record that lets a second import of the same
//! archive skip the transfer, from any process of the run.
//!
//! `<state dir>/<instance>/imported/<digest hex>` marks an archive as imported into that
//! instance and lists its references, one per line. Hashing a large archive takes seconds, so
//! `<state dir>/digests/<key>` caches each file's digest under a key made of its path, size,
//! modification time, inode and device: a file that changes gets a new key.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Directory, under an instance's state directory, of the import markers.
const IMPORTED_DIR: &str = "imported";

/// Directory, under the state root, of the digest cache.
pub(crate) const DIGEST_CACHE_DIR: &str = "digests";

/// Looks up the cached content digest of `archive`, if its metadata has not changed since the
/// digest was recorded.
pub(crate) fn cached_digest(state_root: &Path, archive: &Path) -> Option<String> {
    let key = cache_key(archive)?;
    let digest = fs::read_to_string(state_root.join(DIGEST_CACHE_DIR).join(key)).ok()?;
    let digest = digest.trim();
    digest.starts_with("sha256:").then(|| digest.to_owned())
}

/// Remembers `digest` for `archive`'s current metadata. Failures only cost a re-hash later.
pub(crate) fn cache_digest(state_root: &Path, archive: &Path, digest: &str) {
    let Some(key) = cache_key(archive) else {
        return;
    };
    let dir = state_root.join(DIGEST_CACHE_DIR);
    if let Err(error) = write_atomically(&dir, &key, digest.as_bytes()) {
        tracing::debug!(%error, archive = %archive.display(), "failed to cache the archive digest");
    }
}

/// The references recorded for an archive already imported into the instance.
pub(crate) fn imported_references(instance_dir: &Path, digest: &str) -> Option<Vec<String>> {
    let text = fs::read_to_string(marker_path(instance_dir, digest)).ok()?;
    Some(text.lines().map(str::to_owned).collect())
}

/// Records that the archive with `digest` was imported and verified.
pub(crate) fn mark_imported(instance_dir: &Path, digest: &str, references: &[String]) {
    let dir = instance_dir.join(IMPORTED_DIR);
    let name = digest.trim_start_matches("sha256:");
    if let Err(error) = write_atomically(&dir, name, references.join("\n").as_bytes()) {
        tracing::warn!(%error, digest, "failed to record an import; the next import of this archive will not be skipped");
    }
}

fn marker_path(instance_dir: &Path, digest: &str) -> PathBuf {
    instance_dir
        .join(IMPORTED_DIR)
        .join(digest.trim_start_matches("sha256:"))
}

/// A file name derived from the archive's canonical path and identifying metadata.
fn cache_key(archive: &Path) -> Option<String> {
    let canonical = fs::canonicalize(archive).ok()?;
    let metadata = fs::metadata(&canonical).ok()?;
    let identity = format!(
        "{}\0{}\0{}\0{}\0{}\0{}",
        canonical.display(),
        metadata.len(),
        metadata.mtime(),
        metadata.mtime_nsec(),
        metadata.ino(),
        metadata.dev()
    );
    Some(hex::encode(Sha256::digest(identity.as_bytes())))
}

fn write_atomically(dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let temporary = dir.join(format!(".{name}.{}", std::process::id()));
    fs::write(&temporary, contents)?;
    fs::rename(&temporary, dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_cache_follows_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar");
        fs::write(&archive, b"first").unwrap();

        cache_digest(dir.path(), &archive, "sha256:aaaa");
        assert_eq!(
            cached_digest(dir.path(), &archive).as_deref(),
            Some("sha256:aaaa")
        );

        fs::write(&archive, b"second, longer").unwrap();
        assert_eq!(
            cached_digest(dir.path(), &archive),
            None,
            "a changed file misses the cache"
        );
    }

    #[test]
    fn import_marker_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let references = vec![
            "docker.io/library/a:1".to_owned(),
            "example.test/b:2".to_owned(),
        ];

        assert_eq!(imported_references(dir.path(), "sha256:beef"), None);
        mark_imported(dir.path(), "sha256:beef", &references);

        assert_eq!(
            imported_references(dir.path(), "sha256:beef"),
            Some(references)
        );
    }
}
