//! The persistent blob cache: what each layer became when it was last
//! pushed, so a repeat push costs a HEAD per layer and no compression.
//!
//! One JSON file, `blobs.json`, in the cache directory maps
//! (diff_id, compression settings) to (digest, size, media type, and the
//! `registry/repository`s where the blob was seen). Several hoist processes may
//! share it: saving takes an exclusive lock on `blobs.lock` (waiting at most
//! [`LOCK_WAIT`], and saying so after a second), re-reads the file, merges,
//! and replaces it atomically. A cache that cannot be read is ignored with a
//! warning; it is only ever an optimisation.
//!
//! What it trusts, and why: an entry is written only by hoist, after it
//! hashed the layer's content itself (the diff_id) and made the blob it
//! names. The file is the user's own, like their shell history; one that
//! others may write (group- or world-writable, or in such a directory) is
//! ignored. Even so an entry is a hint the registry can overrule: it is used
//! only if the registry holds a blob of that digest (a HEAD in the
//! destination, or a mount from a repository the entry names, which the
//! registry does only for a blob it stores under that digest); a size the
//! registry contradicts drops the entry.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hoist_oci::Digest;
use serde::{Deserialize, Serialize};

const FILE: &str = "blobs.json";
const LOCK: &str = "blobs.lock";
const VERSION: u32 = 1;
/// Locations remembered per blob; the oldest are forgotten first.
const MAX_SEEN: usize = 16;
/// A cache file larger than this is not read (a real one is a few hundred
/// bytes per layer ever pushed).
const MAX_FILE: u64 = 64 * 1024 * 1024;
/// How long saving waits for another hoist process to release the lock.
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(10);

/// What a layer became in a registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedBlob {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    /// `registry/repository` names where this blob was pushed or found.
    pub seen: BTreeSet<String>,
}

#[derive(Default, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    blobs: BTreeMap<String, CachedBlob>,
}

/// A blob cache in a directory, or a disabled one that remembers nothing.
#[derive(Debug)]
pub struct BlobCache {
    dir: Option<PathBuf>,
    entries: Mutex<BTreeMap<String, CachedBlob>>,
    /// Keys recorded (or forgotten) by this process, merged into the file on save.
    changed: Mutex<BTreeSet<String>>,
    /// Why the file was ignored, for the caller to tell the user.
    warnings: Mutex<Vec<String>>,
}

impl BlobCache {
    /// A cache that neither reads nor writes anything (`--no-cache`).
    pub fn disabled() -> Self {
        Self { dir: None, entries: Mutex::default(), changed: Mutex::default(), warnings: Mutex::default() }
    }

    /// Opens the cache in `dir`; a missing, unreadable or corrupt file gives
    /// an empty cache (with a warning for the corrupt case).
    pub fn open(dir: &Path) -> Self {
        let mut warnings = Vec::new();
        let entries = match others_may_write(dir) {
            Some(what) => {
                warnings.push(format!(
                    "ignoring the blob cache in {}: {what} can be written by other users (`chmod go-w` it, or use \
                     --cache-dir)",
                    dir.display()
                ));
                BTreeMap::new()
            }
            None => read_file(&dir.join(FILE)).unwrap_or_else(|warning| {
                warnings.push(warning);
                BTreeMap::new()
            }),
        };
        Self {
            dir: Some(dir.to_owned()),
            entries: Mutex::new(entries),
            changed: Mutex::default(),
            warnings: Mutex::new(warnings),
        }
    }

    /// What the user should know about this cache (it was ignored, and why).
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().expect("cache lock"))
    }

    /// Drops the entry for `diff_id` made with `settings`: the registry
    /// contradicted it.
    pub fn forget(&self, diff_id: &Digest, settings: &str) {
        if self.dir.is_none() {
            return;
        }
        let key = key(diff_id, settings);
        self.entries.lock().expect("cache lock").remove(&key);
        self.changed.lock().expect("cache lock").insert(key);
    }

    /// The default directory: `$XDG_CACHE_HOME/hoist`, else `~/.cache/hoist`.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("hoist"))
    }

    pub fn lookup(&self, diff_id: &Digest, settings: &str) -> Option<CachedBlob> {
        self.entries.lock().expect("cache lock").get(&key(diff_id, settings)).cloned()
    }

    /// Remembers that `diff_id`, compressed with `settings`, is `blob` and is
    /// now present at `location` (`registry/repository`).
    pub fn record(
        &self,
        diff_id: &Digest,
        settings: &str,
        digest: &Digest,
        size: u64,
        media_type: &str,
        location: &str,
    ) {
        if self.dir.is_none() {
            return;
        }
        let key = key(diff_id, settings);
        let mut entries = self.entries.lock().expect("cache lock");
        let entry = entries.entry(key.clone()).or_insert_with(|| CachedBlob {
            digest: digest.clone(),
            size,
            media_type: media_type.to_owned(),
            seen: BTreeSet::new(),
        });
        if entry.digest != *digest {
            // The settings produced other bytes than before (a different
            // compressor build): the newest result wins.
            *entry =
                CachedBlob { digest: digest.clone(), size, media_type: media_type.to_owned(), seen: BTreeSet::new() };
        }
        entry.seen.insert(location.to_owned());
        while entry.seen.len() > MAX_SEEN {
            let oldest = entry.seen.iter().next().cloned().expect("non-empty");
            entry.seen.remove(&oldest);
        }
        self.changed.lock().expect("cache lock").insert(key);
    }

    /// Merges this process's records into the file, under an exclusive
    /// lock; `waiting` is told once if another process holds it for more
    /// than a second. Gives up after [`LOCK_WAIT`].
    pub fn save(&self, waiting: &dyn Fn(&str)) -> io::Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let changed = std::mem::take(&mut *self.changed.lock().expect("cache lock"));
        if changed.is_empty() {
            return Ok(());
        }
        fs::create_dir_all(dir)?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(LOCK))?;
        acquire(&lock, &dir.join(LOCK), waiting)?;
        // A file that cannot be read is replaced by what this process knows.
        let mut merged = read_file(&dir.join(FILE)).unwrap_or_default();
        {
            let entries = self.entries.lock().expect("cache lock");
            for key in changed {
                let Some(ours) = entries.get(&key) else {
                    merged.remove(&key);
                    continue;
                };
                match merged.get_mut(&key) {
                    Some(theirs) if theirs.digest == ours.digest && theirs.size == ours.size => {
                        theirs.seen.extend(ours.seen.iter().cloned());
                    }
                    _ => {
                        merged.insert(key, ours.clone());
                    }
                }
            }
        }
        let temp = dir.join(format!("{FILE}.{}.tmp", std::process::id()));
        let mut file = File::create(&temp)?;
        serde_json::to_writer(&mut file, &CacheFile { version: VERSION, blobs: merged })?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::rename(&temp, dir.join(FILE))?;
        lock.unlock()
    }
}

fn key(diff_id: &Digest, settings: &str) -> String {
    format!("{diff_id} {settings}")
}

/// Takes the lock, waiting at most [`LOCK_WAIT`] and telling `waiting`
/// after a second.
fn acquire(lock: &File, path: &Path, waiting: &dyn Fn(&str)) -> io::Result<()> {
    let start = Instant::now();
    let mut told = false;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(()),
            Err(fs::TryLockError::Error(error)) => return Err(error),
            Err(fs::TryLockError::WouldBlock) => {}
        }
        let waited = start.elapsed();
        if waited >= LOCK_WAIT {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("another process held {} for {} s", path.display(), LOCK_WAIT.as_secs()),
            ));
        }
        if !told && waited >= Duration::from_secs(1) {
            told = true;
            waiting(&format!("waiting for the blob cache lock {} (another hoist is saving)", path.display()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What in `dir` others could write, if anything: the directory or its file.
fn others_may_write(dir: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let writable = |path: &Path| fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o022 != 0);
    if writable(dir) {
        return Some("the directory".into());
    }
    writable(&dir.join(FILE)).then(|| format!("`{FILE}`"))
}

/// The entries of the cache file; none if it does not exist; `Err` with a
/// warning when it exists but cannot be used.
fn read_file(path: &Path) -> Result<BTreeMap<String, CachedBlob>, String> {
    let ignoring = |why: String| format!("ignoring the blob cache {}: {why}; it will be rewritten", path.display());
    let bytes = match File::open(path) {
        Ok(file) => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_FILE + 1), &mut bytes)
                .map_err(|e| ignoring(e.to_string()))?;
            if bytes.len() as u64 > MAX_FILE {
                return Err(ignoring(format!("it is larger than {} MiB", MAX_FILE >> 20)));
            }
            bytes
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(error) => return Err(ignoring(error.to_string())),
    };
    match serde_json::from_slice::<CacheFile>(&bytes) {
        Ok(file) if file.version == VERSION => Ok(file.blobs),
        Ok(file) => Err(ignoring(format!("version {} is not {VERSION}", file.version))),
        Err(error) => Err(ignoring(format!("it is corrupt ({error})"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    #[test]
    fn records_survive_a_save_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path());
        cache.record(&digest(1), "gzip:6", &digest(2), 10, "t", "r/a");
        cache.save(&|_| {}).unwrap();
        let again = BlobCache::open(dir.path());
        let entry = again.lookup(&digest(1), "gzip:6").unwrap();
        assert_eq!(entry.digest, digest(2));
        assert!(entry.seen.contains("r/a"));
        assert!(again.lookup(&digest(1), "gzip:9").is_none(), "other settings are other entries");
    }

    #[test]
    fn concurrent_writers_merge_instead_of_overwriting() {
        let dir = tempfile::tempdir().unwrap();
        let first = BlobCache::open(dir.path());
        let second = BlobCache::open(dir.path());
        first.record(&digest(1), "s", &digest(2), 1, "t", "r/a");
        second.record(&digest(1), "s", &digest(2), 1, "t", "r/b");
        second.record(&digest(3), "s", &digest(4), 1, "t", "r/b");
        first.save(&|_| {}).unwrap();
        second.save(&|_| {}).unwrap();
        let merged = BlobCache::open(dir.path());
        assert_eq!(merged.lookup(&digest(1), "s").unwrap().seen.len(), 2);
        assert!(merged.lookup(&digest(3), "s").is_some());
    }

    #[test]
    fn a_corrupt_file_is_ignored_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let cache = BlobCache::open(dir.path());
        assert!(cache.lookup(&digest(1), "s").is_none());
        cache.record(&digest(1), "s", &digest(2), 1, "t", "r/a");
        cache.save(&|_| {}).unwrap();
        assert!(BlobCache::open(dir.path()).lookup(&digest(1), "s").is_some());
    }

    #[test]
    fn a_disabled_cache_writes_nothing() {
        let cache = BlobCache::disabled();
        cache.record(&digest(1), "s", &digest(2), 1, "t", "r/a");
        cache.save(&|_| {}).unwrap();
        assert!(cache.lookup(&digest(1), "s").is_none());
    }
}
