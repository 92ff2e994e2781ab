//! Backup and restore of the whole store as one portable file.
//!
//! The file is JSON lines: a header (format, version, schema, time, and the store's
//! sealed key check), one line per entry of every tree (base64 key and value, so tokens
//! stay sealed exactly as stored), and a trailer with the entry count and a SHA-256 of
//! everything before it. A backup holds the write gate exclusively, so it is a
//! consistent snapshot even while the daemon runs.
//!
//! A backup file is written through [`BackupFile`]: created 0600 (before any byte is
//! written) as a hidden sibling of the target, fsynced, verified by reading it back
//! (header, every entry, count and checksum), and only then renamed into place, with
//! the directory fsynced after the rename. A backup that does not verify (a stream cut
//! short by the daemon or the socket) is removed and never reaches the target path.
//!
//! Restore never half-restores: it reads and verifies the whole file first, refuses a
//! newer format or schema and a key that does not open the key check, writes into a
//! fresh sibling directory, and only then moves that into place. It never overwrites an
//! existing store. A target that is a symlink is followed, and stays a link: the store
//! goes where it points.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::crypto::{GENERATED_KEY_FILE, TokenCipher};
use super::{
    KEY_CHECK_KEY, KEY_CHECK_PLAINTEXT, META_TREE, SCHEMA_KEY, SCHEMA_VERSION, Store, StoreError,
};

pub const BACKUP_FORMAT: &str = "bitbucket-slack-backup";
pub const BACKUP_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub format: String,
    pub version: u32,
    pub schema_version: u32,
    pub created_at: Timestamp,
    /// The store's sealed key check: a restore opens it to prove it has the right key.
    pub key_check: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct BackupEntry {
    tree: String,
    key: String,
    value: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct BackupTrailer {
    end: bool,
    entries: u64,
    sha256: String,
}

/// What a backup or restore covered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    pub entries: u64,
    pub trees: Vec<String>,
    pub created_at: Timestamp,
}

/// Why a restore refused, or a backup did not verify. Nothing was written when a restore
/// returns any of these.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0} is not a bitbucket-slack backup")]
    NotABackup(String),
    #[error(
        "the backup has format version {found}; this binary reads up to {supported}: restore it with a newer bitbucket-slack"
    )]
    NewerFormat { found: u32, supported: u32 },
    #[error(
        "the backup has schema version {found}; this binary knows up to {supported}: restore it with a newer bitbucket-slack"
    )]
    NewerSchema { found: u32, supported: u32 },
    #[error("the backup is incomplete or damaged: {0}")]
    Damaged(String),
    #[error(
        "the encryption key {key_path} does not open this backup's tokens: use the key of the store that was backed up \
         (copy its secret.key into the storage directory, or set storage.encryption_key_file)"
    )]
    WrongKey { key_path: PathBuf },
    #[error(
        "no encryption key for the restore: copy the backed-up store's secret.key to {expected} \
         or set storage.encryption_key_file"
    )]
    NoKey { expected: PathBuf },
    #[error(
        "{path} already holds data: restore only into an empty or new directory (move the old one aside)"
    )]
    TargetNotEmpty { path: PathBuf },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("restore I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a backup file was not written. The target path was left as it was.
#[derive(Debug, thiserror::Error)]
pub enum BackupFileError {
    #[error("{cause}; nothing was written to {path}")]
    Invalid { path: PathBuf, cause: RestoreError },
    #[error("cannot write the backup to {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// A backup file being written: a hidden `.NAME.partial` next to the target, mode 0600,
/// renamed into place by [`BackupFile::commit`] only once it verifies. Dropped without
/// a commit, it removes the partial file.
#[derive(Debug)]
pub struct BackupFile {
    target: PathBuf,
    partial: PathBuf,
    out: Option<BufWriter<File>>,
}

impl BackupFile {
    /// Creates the partial file (replacing one left by an interrupted backup).
    pub fn create(target: &Path) -> Result<BackupFile, BackupFileError> {
        let partial = sibling(target, "partial");
        let io_error = |cause| BackupFileError::Io {
            path: target.to_path_buf(),
            cause,
        };
        match std::fs::remove_file(&partial) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_error(error));
            }
            _ => {}
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .map_err(io_error)?;
        Ok(BackupFile {
            target: target.to_path_buf(),
            partial,
            out: Some(BufWriter::new(file)),
        })
    }

    /// Makes the file durable, checks it from disk, then moves it to the target path
    /// and makes the rename durable. What the file holds, on success.
    pub fn commit(mut self) -> Result<BackupSummary, BackupFileError> {
        let io_error = |cause| BackupFileError::Io {
            path: self.target.clone(),
            cause,
        };
        let out = self.out.take().expect("a backup file is committed once");
        let file = out
            .into_inner()
            .map_err(|error| io_error(error.into_error()))?;
        file.sync_all().map_err(io_error)?;
        drop(file);
        let written = File::open(&self.partial).map_err(io_error)?;
        let summary =
            verify(BufReader::new(written)).map_err(|cause| BackupFileError::Invalid {
                path: self.target.clone(),
                cause,
            })?;
        std::fs::rename(&self.partial, &self.target).map_err(io_error)?;
        sync_dir(parent_dir(&self.target)).map_err(io_error)?;
        Ok(summary)
    }
}

impl Write for BackupFile {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match &mut self.out {
            Some(out) => out.write(bytes),
            None => Err(std::io::Error::other("the backup file is closed")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.out {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BackupFile {
    fn drop(&mut self) {
        if self.partial.exists() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Makes a rename (or creation) in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `line` and feeds it to the running checksum.
fn emit(out: &mut impl Write, hasher: &mut Sha256, line: &str) -> Result<(), StoreError> {
    hasher.update(line.as_bytes());
    hasher.update(b"\n");
    writeln!(out, "{line}").map_err(|error| StoreError::Io(error.to_string()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl Store {
    /// Writes a consistent backup of every tree to `out`.
    pub fn write_backup(
        &self,
        out: &mut impl Write,
        now: Timestamp,
    ) -> Result<BackupSummary, StoreError> {
        let _alone = self.gate.exclusive();
        let meta = self.db.open_tree(META_TREE)?;
        let key_check = meta
            .get(KEY_CHECK_KEY)?
            .map(|sealed| String::from_utf8_lossy(&sealed).into_owned())
            .ok_or_else(|| StoreError::Corrupt("the store has no key check".into()))?;
        let header = BackupHeader {
            format: BACKUP_FORMAT.into(),
            version: BACKUP_VERSION,
            schema_version: SCHEMA_VERSION,
            created_at: now,
            key_check,
        };
        let mut hasher = Sha256::new();
        emit(out, &mut hasher, &to_line(&header))?;
        let mut entries = 0u64;
        let mut trees = Vec::new();
        for tree_name in self.db.tree_names()? {
            if tree_name == META_TREE {
                continue;
            }
            let tree = self.db.open_tree(&tree_name)?;
            for item in tree.iter() {
                let (key, value) = item?;
                let entry = BackupEntry {
                    tree: tree_name.clone(),
                    key: BASE64.encode(&key),
                    value: BASE64.encode(&value),
                };
                emit(out, &mut hasher, &to_line(&entry))?;
                entries += 1;
            }
            trees.push(tree_name);
        }
        let trailer = BackupTrailer {
            end: true,
            entries,
            sha256: hex(&hasher.finalize()),
        };
        writeln!(out, "{}", to_line(&trailer))
            .map_err(|error| StoreError::Io(error.to_string()))?;
        out.flush()
            .map_err(|error| StoreError::Io(error.to_string()))?;
        Ok(BackupSummary {
            entries,
            trees,
            created_at: now,
        })
    }
}

fn to_line(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("backup lines always serialize")
}

/// Restores `input` into `target` (a new or empty directory, or a symlink to one; a
/// `secret.key` in it is allowed and is used). `key_file` is
/// `storage.encryption_key_file`, if configured.
pub fn restore(
    target: &Path,
    key_file: Option<&Path>,
    input: impl BufRead,
) -> Result<BackupSummary, RestoreError> {
    let (header, entries) = read_verified(input)?;
    // A storage.path that is a symlink (systemd's DynamicUser keeps the state under
    // `private/` and links to it) is restored where it points, and stays a link.
    let target = &follow_links(target)?;
    check_target(target)?;
    let cipher = restore_key(target, key_file)?;
    match cipher.open(&header.key_check, KEY_CHECK_KEY) {
        Ok(plaintext) if plaintext.expose() == KEY_CHECK_PLAINTEXT => {}
        _ => {
            return Err(RestoreError::WrongKey {
                key_path: cipher.key_path().to_path_buf(),
            });
        }
    }
    let staging = sibling(target, "restoring");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    let written = write_staging(&staging, &header, &entries);
    if let Err(error) = written {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(error);
    }
    move_into_place(&staging, target)?;
    let mut trees: Vec<String> = entries.iter().map(|entry| entry.tree.clone()).collect();
    trees.dedup();
    Ok(BackupSummary {
        entries: entries.len() as u64,
        trees,
        created_at: header.created_at,
    })
}

/// Checks a whole backup (header, every entry, the count and the checksum) without
/// keeping it: what a restore of it would cover.
pub fn verify(input: impl BufRead) -> Result<BackupSummary, RestoreError> {
    let mut entries = 0u64;
    let mut trees: Vec<String> = Vec::new();
    let header = read_checked(input, |entry| {
        entries += 1;
        if trees.last() != Some(&entry.tree) {
            trees.push(entry.tree);
        }
    })?;
    Ok(BackupSummary {
        entries,
        trees,
        created_at: header.created_at,
    })
}

fn read_verified(input: impl BufRead) -> Result<(BackupHeader, Vec<BackupEntry>), RestoreError> {
    let mut entries = Vec::new();
    let header = read_checked(input, |entry| entries.push(entry))?;
    Ok((header, entries))
}

/// Reads a backup, handing each entry to `on_entry`, and returns its header once the
/// trailer matched. Anything wrong (a cut, a changed byte, lines after the trailer) is
/// an error.
fn read_checked(
    input: impl BufRead,
    mut on_entry: impl FnMut(BackupEntry),
) -> Result<BackupHeader, RestoreError> {
    let mut lines = input.lines();
    let first = lines
        .next()
        .transpose()?
        .ok_or_else(|| RestoreError::NotABackup("an empty file".into()))?;
    let header: BackupHeader =
        serde_json::from_str(&first).map_err(|_| RestoreError::NotABackup("the file".into()))?;
    if header.format != BACKUP_FORMAT {
        return Err(RestoreError::NotABackup("the file".into()));
    }
    if header.version > BACKUP_VERSION {
        return Err(RestoreError::NewerFormat {
            found: header.version,
            supported: BACKUP_VERSION,
        });
    }
    if header.schema_version > SCHEMA_VERSION {
        return Err(RestoreError::NewerSchema {
            found: header.schema_version,
            supported: SCHEMA_VERSION,
        });
    }
    let mut hasher = Sha256::new();
    hasher.update(first.as_bytes());
    hasher.update(b"\n");
    let mut count = 0u64;
    while let Some(line) = lines.next() {
        let line = line?;
        if let Ok(trailer) = serde_json::from_str::<BackupTrailer>(&line) {
            if trailer.entries != count {
                return Err(RestoreError::Damaged(format!(
                    "the trailer counts {} entries, the file has {count}",
                    trailer.entries,
                )));
            }
            if trailer.sha256 != hex(&hasher.finalize()) {
                return Err(RestoreError::Damaged("the checksum does not match".into()));
            }
            if lines.next().is_some() {
                return Err(RestoreError::Damaged(
                    "there is more after the trailer".into(),
                ));
            }
            return Ok(header);
        }
        let entry: BackupEntry = serde_json::from_str(&line)
            .map_err(|error| RestoreError::Damaged(format!("entry {}: {error}", count + 1)))?;
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
        count += 1;
        on_entry(entry);
    }
    Err(RestoreError::Damaged(
        "the file ends without its trailer (truncated?)".into(),
    ))
}

fn check_target(target: &Path) -> Result<(), RestoreError> {
    if !target.exists() {
        return Ok(());
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(target)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    if names.iter().all(|name| name == GENERATED_KEY_FILE) {
        Ok(())
    } else {
        Err(RestoreError::TargetNotEmpty {
            path: target.to_path_buf(),
        })
    }
}

fn restore_key(target: &Path, key_file: Option<&Path>) -> Result<TokenCipher, RestoreError> {
    let expected = target.join(GENERATED_KEY_FILE);
    if key_file.is_none() && !expected.exists() {
        return Err(RestoreError::NoKey { expected });
    }
    let (cipher, _) = TokenCipher::load_or_generate(key_file, target)?;
    Ok(cipher)
}

fn sibling(target: &Path, suffix: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".into());
    target.with_file_name(format!(".{name}.{suffix}"))
}

fn write_staging(
    staging: &Path,
    header: &BackupHeader,
    entries: &[BackupEntry],
) -> Result<(), RestoreError> {
    let db = sled::open(staging).map_err(StoreError::from)?;
    let meta = db.open_tree(META_TREE).map_err(StoreError::from)?;
    meta.insert(SCHEMA_KEY, &header.schema_version.to_be_bytes())
        .map_err(StoreError::from)?;
    meta.insert(KEY_CHECK_KEY, header.key_check.as_bytes())
        .map_err(StoreError::from)?;
    for entry in entries {
        let damaged =
            |what: &str| RestoreError::Damaged(format!("an entry's {what} is not base64"));
        let key = BASE64.decode(&entry.key).map_err(|_| damaged("key"))?;
        let value = BASE64.decode(&entry.value).map_err(|_| damaged("value"))?;
        db.open_tree(&entry.tree)
            .and_then(|tree| tree.insert(key, value))
            .map_err(StoreError::from)?;
    }
    db.flush().map_err(StoreError::from)?;
    Ok(())
}

fn move_into_place(staging: &Path, target: &Path) -> Result<(), RestoreError> {
    if target.exists() {
        let key = target.join(GENERATED_KEY_FILE);
        if key.exists() {
            std::fs::rename(&key, staging.join(GENERATED_KEY_FILE))?;
        }
        std::fs::remove_dir(target)?;
    }
    std::fs::rename(staging, target)?;
    sync_dir(parent_dir(target))?;
    Ok(())
}

/// Where `path` leads once every symlink at its end is followed (the path itself when it
/// is not a link, or does not exist). A dangling link leads to where it points.
fn follow_links(path: &Path) -> Result<PathBuf, RestoreError> {
    let mut path = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let link = std::fs::read_link(&path)?;
                // An absolute link replaces the whole path; a relative one is relative
                // to the link's directory.
                path = parent_dir(&path).join(link);
            }
            _ => return Ok(path),
        }
    }
    Err(RestoreError::Io(std::io::Error::other(format!(
        "{}: too many levels of symbolic links",
        path.display()
    ))))
}

#[cfg(test)]
mod tests;
