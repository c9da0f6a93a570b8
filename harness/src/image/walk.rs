//! A single streaming pass over an image archive: content digest, gzip detection, the list of
//! tar entries with the digest of each file, and the small JSON files that describe the images.
//!
//! Memory use does not depend on the size of layers, because layers are streamed and never
//! buffered. JSON metadata is kept only up to [`MAX_METADATA_ENTRY_BYTES`] per entry and
//! [`MAX_RETAINED_METADATA_BYTES`] in total. The path and digest of every entry are kept, so
//! memory grows with the number of entries.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use super::{Compression, ImageError};

/// Maximum size of one JSON metadata entry (`index.json`, `manifest.json`, a manifest, index or
/// config blob) that inspection reads. Manifests and configs are a few KiB in practice, and
/// configs with a long build history reach a few hundred KiB.
pub(super) const MAX_METADATA_ENTRY_BYTES: u64 = 4 * 1024 * 1024;

/// Maximum total size of the JSON blobs kept from one archive. Past it, further blobs are not
/// kept, so their images' platforms are reported as unknown.
const MAX_RETAINED_METADATA_BYTES: u64 = 64 * 1024 * 1024;

/// Number of leading bytes of a blob that are examined to decide whether it is JSON.
const SNIFF_BYTES: u64 = 512;

/// Size of a tar header and of the unit in which tar stores data, in bytes.
const BLOCK_SIZE: u64 = 512;

/// Maximum length of an error message from the tar reader that goes into an [`ImageError`].
/// The tar crate quotes header fields, which in a file that is not a tar can be long text.
const MAX_QUOTED_ERROR_CHARS: usize = 120;

/// The file that marks an OCI image layout and declares its version.
pub(super) const OCI_LAYOUT_ENTRY: &str = "oci-layout";
/// The OCI image layout's top-level index, which names the images.
pub(super) const INDEX_ENTRY: &str = "index.json";
/// The image list of the `docker save` format.
pub(super) const DOCKER_MANIFEST_ENTRY: &str = "manifest.json";

/// Result of one pass over an archive.
#[derive(Debug)]
pub(super) struct WalkedArchive {
    pub compression: Compression,
    /// `sha256:<hex>` of the file's bytes as stored.
    pub content_digest: String,
    /// Size of the file as stored, in bytes.
    pub size: u64,
    pub contents: ArchiveContents,
}

/// The tar entries that matter for naming images, keyed by path as containerd's importer keys
/// them (`path.Clean` of the entry name).
#[derive(Debug, Default)]
pub(super) struct ArchiveContents {
    /// Every regular file.
    pub files: HashSet<String>,
    /// Symbolic links by their raw entry name, mapped to the cleaned target path. containerd
    /// resolves these for the `docker save` format, where layers may be links.
    pub symlinks: HashMap<String, String>,
    /// Regular files whose content looks like JSON and fits the size limits.
    pub json: HashMap<String, Vec<u8>>,
    /// The path of a regular file with each `sha256:<hex>` content digest. In an OCI layout,
    /// containerd ingests every regular file and finds blobs by this digest, not by path.
    pub files_by_digest: HashMap<String, String>,
}

impl ArchiveContents {
    /// Returns whether `name` is a regular file or a symbolic link to one.
    pub fn contains(&self, name: &str) -> bool {
        self.files.contains(name)
            || self
                .symlinks
                .get(name)
                .is_some_and(|target| self.files.contains(target))
    }

    /// Returns the retained JSON content of `name`, following a symbolic link.
    pub fn json(&self, name: &str) -> Option<&[u8]> {
        self.json
            .get(name)
            .or_else(|| {
                self.symlinks
                    .get(name)
                    .and_then(|target| self.json.get(target))
            })
            .map(Vec::as_slice)
    }
}

/// Reads `file` to its end once, hashing every byte and walking the tar entries inside,
/// decompressing gzip on the fly when the file starts with the gzip magic bytes.
pub(super) fn walk_archive(path: &Path, file: File) -> Result<WalkedArchive, ImageError> {
    let io_error = |source: io::Error| ImageError::Io {
        path: path.to_owned(),
        source,
    };

    let mut hashing = HashingReader::new(file);
    let magic = read_prefix(&mut hashing, 2).map_err(io_error)?;
    let compression = if magic == [0x1f, 0x8b] {
        Compression::Gzip
    } else {
        Compression::None
    };
    let raw = io::Cursor::new(magic).chain(hashing);
    let decoded = match compression {
        Compression::None => Decoded::Plain(raw),
        Compression::Gzip => Decoded::Gzip(MultiGzDecoder::new(raw)),
    };

    let state = Rc::new(StreamState::default());
    let tracked = TrackedReader {
        inner: decoded,
        state: Rc::clone(&state),
    };
    let failure = Failure {
        path,
        compression,
        state: &state,
    };

    let mut archive = tar::Archive::new(tracked);
    let contents = read_entries(&mut archive, &failure)?;
    let mut tracked = archive.into_inner();
    check_second_zero_block(&mut tracked, &failure)?;

    // Draining the rest checks the gzip trailer (CRC and length) and feeds every remaining byte
    // of the file to the digest.
    io::copy(&mut tracked, &mut io::sink())
        .map_err(|error| failure.classify(error, "after the tar end-of-archive marker"))?;
    let raw = match tracked.inner {
        Decoded::Plain(raw) => raw,
        Decoded::Gzip(decoder) => decoder.into_inner(),
    };
    let (_, mut hashing) = raw.into_inner();
    io::copy(&mut hashing, &mut io::sink()).map_err(io_error)?;

    Ok(WalkedArchive {
        compression,
        content_digest: format!("sha256:{}", hex::encode(hashing.hasher.finalize())),
        size: hashing.bytes_read,
        contents,
    })
}

/// Walks the tar entries, recording regular files with their digests and symlinks, and
/// retaining JSON metadata.
fn read_entries(
    archive: &mut tar::Archive<TrackedReader>,
    failure: &Failure<'_>,
) -> Result<ArchiveContents, ImageError> {
    let mut contents = ArchiveContents::default();
    let mut retained_bytes = 0u64;
    let mut last_entry: Option<String> = None;

    let entries = archive
        .entries()
        .map_err(|error| failure.classify_header(error, None))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|error| failure.classify_header(error, last_entry.as_deref()))?;
        let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = clean_path(&raw_name);
        last_entry = Some(raw_name.clone());

        match entry.header().entry_type() {
            tar::EntryType::Regular => {}
            tar::EntryType::Symlink => {
                if let Some(target) = entry.link_name_bytes() {
                    let target = String::from_utf8_lossy(&target);
                    contents
                        .symlinks
                        .insert(raw_name.clone(), join_link_target(&raw_name, &target));
                }
                continue;
            }
            // containerd's importer skips directories, hard links and every other type.
            _ => continue,
        }

        let size = entry.size();
        let is_well_known = matches!(
            name.as_str(),
            OCI_LAYOUT_ENTRY | INDEX_ENTRY | DOCKER_MANIFEST_ENTRY
        );
        if is_well_known && size > MAX_METADATA_ENTRY_BYTES {
            return Err(ImageError::InvalidMetadata {
                path: failure.path.to_owned(),
                entry: raw_name,
                detail: format!(
                    "it is {size} bytes long, more than the {MAX_METADATA_ENTRY_BYTES} bytes \
                     that inspection reads"
                ),
            });
        }

        let read_error =
            |error: io::Error| failure.classify(error, &format!("inside entry `{raw_name}`"));
        let mut hasher = Sha256::new();
        let mut data = Vec::new();
        (&mut entry)
            .take(SNIFF_BYTES)
            .read_to_end(&mut data)
            .map_err(read_error)?;
        hasher.update(&data);

        let keep = is_well_known
            || (looks_like_json(&data)
                && size <= MAX_METADATA_ENTRY_BYTES
                && retained_bytes + size <= MAX_RETAINED_METADATA_BYTES);
        let read = if keep {
            let prefix_len = data.len();
            entry.read_to_end(&mut data).map_err(read_error)?;
            hasher.update(&data[prefix_len..]);
            data.len() as u64
        } else {
            if looks_like_json(&data) {
                tracing::debug!(
                    archive = %failure.path.display(),
                    entry = %raw_name,
                    size,
                    "not keeping a JSON-like blob because it exceeds the metadata size limits"
                );
            }
            data.len() as u64 + io::copy(&mut entry, &mut hasher).map_err(read_error)?
        };
        if read != size {
            return Err(failure.truncated(format!(
                "the data ends inside entry `{raw_name}`, after {read} of its {size} bytes"
            )));
        }

        if keep {
            retained_bytes += size;
            contents.json.insert(name.clone(), data);
        }
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        contents.files_by_digest.insert(digest, name.clone());
        contents.files.insert(name);
    }

    // The tar reader also ends the walk when the data simply stops at an entry boundary, which
    // is what a copy cut short at a 512-byte boundary looks like.
    if failure.state.end_of_data.get() {
        let detail = match &last_entry {
            Some(entry) => {
                format!("the data ends after entry `{entry}` without the tar end-of-archive marker")
            }
            None if failure.state.bytes_read.get() == 0 => "the file is empty".to_owned(),
            None => "the data ends before the first tar header".to_owned(),
        };
        return Err(match last_entry {
            Some(_) => failure.truncated(detail),
            None => failure.not_tar(detail),
        });
    }
    Ok(contents)
}

/// Checks the block after the first zero block, where the tar reader stopped, as Go's
/// `archive/tar` (and so `ctr`) does. The end of the data or a second zero block ends the
/// archive. A partial block is a truncated marker, and anything else is an invalid header.
fn check_second_zero_block(
    tracked: &mut TrackedReader,
    failure: &Failure<'_>,
) -> Result<(), ImageError> {
    let block = read_prefix(tracked, BLOCK_SIZE)
        .map_err(|error| failure.classify(error, "inside the tar end-of-archive marker"))?;
    if block.is_empty() || (block.len() as u64 == BLOCK_SIZE && block.iter().all(|&b| b == 0)) {
        return Ok(());
    }
    if (block.len() as u64) < BLOCK_SIZE {
        return Err(
            failure.truncated("the data ends inside the tar end-of-archive marker".to_owned())
        );
    }
    Err(failure.not_tar(
        "a zero block is followed by a non-zero block instead of the second block of the \
         end-of-archive marker"
            .to_owned(),
    ))
}

/// Returns whether a blob's first bytes look like a JSON object rather than a layer. A layer is a tar
/// stream (the `ustar` magic at offset 257) or compressed, so it never starts with `{`.
fn looks_like_json(prefix: &[u8]) -> bool {
    let starts_with_brace = prefix
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{');
    let has_tar_magic = prefix.get(257..262) == Some(b"ustar".as_slice());
    starts_with_brace && !has_tar_magic
}

/// Cleans an entry name the way Go's `path.Clean` does, which is how containerd's importer
/// keys entries: `./index.json` becomes `index.json`, `a//b/../c` becomes `a/c`.
pub(super) fn clean_path(name: &str) -> String {
    let rooted = name.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Resolves a symlink target relative to the link's directory, as containerd does with
/// `path.Join(path.Dir(name), linkname)`.
fn join_link_target(link_name: &str, target: &str) -> String {
    let directory = match link_name.rfind('/') {
        Some(index) => &link_name[..index],
        None => ".",
    };
    if target.starts_with('/') {
        clean_path(target)
    } else {
        clean_path(&format!("{directory}/{target}"))
    }
}

/// Reads up to `len` bytes, fewer only at the end of the data.
fn read_prefix(reader: &mut impl Read, len: u64) -> io::Result<Vec<u8>> {
    let mut prefix = Vec::new();
    reader.take(len).read_to_end(&mut prefix)?;
    Ok(prefix)
}

/// A reader that hashes and counts the bytes that pass through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes_read: u64,
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes_read: 0,
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let count = self.inner.read(buf)?;
        self.hasher.update(&buf[..count]);
        self.bytes_read += count as u64;
        Ok(count)
    }
}

type RawStream = io::Chain<io::Cursor<Vec<u8>>, HashingReader<File>>;

/// The tar stream: the file itself, or a gzip decoder over it.
enum Decoded {
    Plain(RawStream),
    Gzip(MultiGzDecoder<RawStream>),
}

impl Read for Decoded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoded::Plain(reader) => reader.read(buf),
            Decoded::Gzip(reader) => reader.read(buf),
        }
    }
}

/// Events on the tar reader's input, recorded so that an error of the tar reader can be
/// distinguished from an error of the layers beneath it.
#[derive(Default)]
struct StreamState {
    /// A read returned 0 bytes: the tar stream has ended.
    end_of_data: Cell<bool>,
    /// A read below the tar layer failed, with this kind.
    source_error: Cell<Option<io::ErrorKind>>,
    /// Bytes of tar stream read so far (after decompression).
    bytes_read: Cell<u64>,
}

/// The tar reader's input, recording end of data and errors in a shared [`StreamState`].
struct TrackedReader {
    inner: Decoded,
    state: Rc<StreamState>,
}

impl Read for TrackedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(0) if !buf.is_empty() => {
                self.state.end_of_data.set(true);
                Ok(0)
            }
            Ok(count) => {
                let total = self.state.bytes_read.get() + count as u64;
                self.state.bytes_read.set(total);
                Ok(count)
            }
            Err(error) => {
                self.state.source_error.set(Some(error.kind()));
                Err(error)
            }
        }
    }
}

/// Converts I/O errors met during the walk into [`ImageError`]s that describe what was wrong.
struct Failure<'a> {
    path: &'a Path,
    compression: Compression,
    state: &'a StreamState,
}

impl Failure<'_> {
    /// Classifies an error from reading a tar header. `last_entry` is the entry before it.
    fn classify_header(&self, error: io::Error, last_entry: Option<&str>) -> ImageError {
        if self.state.source_error.get().is_some() {
            return self.classify(error, "while reading a tar header");
        }
        match last_entry {
            // Whatever the first 512 bytes are, they are not a tar header.
            None => {
                let detail = if self.state.end_of_data.get() {
                    "the data is shorter than one 512-byte tar header".to_owned()
                } else {
                    "the first 512-byte block is not a valid tar header".to_owned()
                };
                self.not_tar(detail)
            }
            Some(entry) if self.state.end_of_data.get() => self.truncated(format!(
                "the data ends inside entry `{entry}` or the tar header after it ({})",
                quote_error(&error)
            )),
            Some(entry) => self.not_tar(format!(
                "the tar header after entry `{entry}` is invalid ({})",
                quote_error(&error)
            )),
        }
    }

    /// Classifies an error from reading entry data or draining the stream. `place` describes
    /// where it happened.
    fn classify(&self, error: io::Error, place: &str) -> ImageError {
        match (self.state.source_error.get(), self.compression) {
            (Some(io::ErrorKind::UnexpectedEof), Compression::Gzip) => {
                self.truncated(format!("the gzip stream ends early {place} ({error})"))
            }
            (Some(io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData), Compression::Gzip) => {
                ImageError::InvalidGzip {
                    path: self.path.to_owned(),
                    detail: format!("{error} ({place})"),
                }
            }
            (Some(_), _) => ImageError::Io {
                path: self.path.to_owned(),
                source: error,
            },
            (None, _) if self.state.end_of_data.get() => {
                self.truncated(format!("the data ends {place} ({})", quote_error(&error)))
            }
            (None, _) => self.not_tar(format!("{} ({place})", quote_error(&error))),
        }
    }

    fn truncated(&self, detail: String) -> ImageError {
        ImageError::Truncated {
            path: self.path.to_owned(),
            detail,
        }
    }

    fn not_tar(&self, detail: String) -> ImageError {
        let detail = match self.compression {
            Compression::None => detail,
            Compression::Gzip => format!("after gzip decompression, {detail}"),
        };
        ImageError::NotTar {
            path: self.path.to_owned(),
            detail,
        }
    }
}

/// Returns the first line of an error message, shortened to [`MAX_QUOTED_ERROR_CHARS`].
fn quote_error(error: &io::Error) -> String {
    let message = error.to_string();
    let first_line = message.lines().next().unwrap_or_default();
    if first_line.chars().count() > MAX_QUOTED_ERROR_CHARS {
        let shortened: String = first_line.chars().take(MAX_QUOTED_ERROR_CHARS).collect();
        format!("{shortened}…")
    } else {
        first_line.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_path_table() {
        let cases = [
            ("index.json", "index.json"),
            ("./index.json", "index.json"),
            ("blobs//sha256/./abc", "blobs/sha256/abc"),
            ("a/b/../c", "a/c"),
            ("../x", "../x"),
            ("/index.json", "/index.json"),
            ("/../x", "/x"),
            ("dir/", "dir"),
            ("./", "."),
        ];
        for (input, expected) in cases {
            assert_eq!(clean_path(input), expected, "clean_path({input:?})");
        }
    }

    #[test]
    fn link_target_table() {
        let cases = [
            ("abc/layer.tar", "../def/layer.tar", "def/layer.tar"),
            ("layer.tar", "blobs/sha256/abc", "blobs/sha256/abc"),
            ("a/b", "/abs/c", "/abs/c"),
        ];
        for (link, target, expected) in cases {
            assert_eq!(
                join_link_target(link, target),
                expected,
                "{link} -> {target}"
            );
        }
    }

    #[test]
    fn json_sniffing_table() {
        let mut tar_header = vec![b'{'; 512];
        tar_header[257..262].copy_from_slice(b"ustar");
        let cases: Vec<(&[u8], bool)> = vec![
            (b"{\"schemaVersion\":2}", true),
            (b"  \n{\"a\":1}", true),
            (b"[1,2]", false),
            (b"\x1f\x8b\x08\x00", false),
            (b"", false),
            (&tar_header, false),
        ];
        for (input, expected) in cases {
            assert_eq!(
                looks_like_json(input),
                expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
