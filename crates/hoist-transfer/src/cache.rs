//! The persistent blob cache: what each layer became when it was last
//! pushed, so a repeat push costs a HEAD per layer and no compression.
//!
//! One JSON file, `blobs.json`, in the cache directory maps
//! (diff_id, compression settings) to (digest, size, media type, and the
//! `registry/repository`s where the blob was seen). Several hoist processes may
//! share it: saving takes an exclusive lock on `blobs.lock`, re-reads the
//! file, merges, and replaces it atomically. A cache that cannot be read is
//! ignored with a warning; it is only ever an optimisation.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hoist_oci::Digest;
use serde::{Deserialize, Serialize};

const FILE: &str = "blobs.json";
const LOCK: &str = "blobs.lock";
const VERSION: u32 = 1;
/// Locations remembered per blob; the oldest are forgotten first.
const MAX_SEEN: usize = 16;

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
    /// Keys recorded by this process, merged into the file on save.
    changed: Mutex<BTreeSet<String>>,
}

impl BlobCache {
    /// A cache that neither reads nor writes anything (`--no-cache`).
    pub fn disabled() -> Self {
        Self { dir: None, entries: Mutex::default(), changed: Mutex::default() }
    }

    /// Opens the cache in `dir`; a missing, unreadable or corrupt file gives
    /// an empty cache (with a warning for the corrupt case).
    pub fn open(dir: &Path) -> Self {
        let entries = read_file(&dir.join(FILE));
        Self { dir: Some(dir.to_owned()), entries: Mutex::new(entries), changed: Mutex::default() }
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

    /// Merges this process's records into the file, under an exclusive lock.
    pub fn save(&self) -> io::Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let changed = std::mem::take(&mut *self.changed.lock().expect("cache lock"));
        if changed.is_empty() {
            return Ok(());
        }
        fs::create_dir_all(dir)?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(LOCK))?;
        lock.lock()?;
        let mut merged = read_file(&dir.join(FILE));
        {
            let entries = self.entries.lock().expect("cache lock");
            for key in changed {
                if let Some(ours) = entries.get(&key) {
                    match merged.get_mut(&key) {
                        Some(theirs) if theirs.digest == ours.digest => theirs.seen.extend(ours.seen.iter().cloned()),
                        _ => {
                            merged.insert(key, ours.clone());
                        }
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

fn read_file(path: &Path) -> BTreeMap<String, CachedBlob> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(error) => {
            tracing::warn!("ignoring the blob cache {}: {error}", path.display());
            return BTreeMap::new();
        }
    };
    match serde_json::from_slice::<CacheFile>(&bytes) {
        Ok(file) if file.version == VERSION => file.blobs,
        Ok(file) => {
            tracing::warn!("ignoring the blob cache {}: version {} is not {VERSION}", path.display(), file.version);
            BTreeMap::new()
        }
        Err(error) => {
            tracing::warn!("ignoring the corrupt blob cache {} ({error}); it will be rewritten", path.display());
            BTreeMap::new()
        }
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
        cache.save().unwrap();
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
        first.save().unwrap();
        second.save().unwrap();
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
        cache.save().unwrap();
        assert!(BlobCache::open(dir.path()).lookup(&digest(1), "s").is_some());
    }

    #[test]
    fn a_disabled_cache_writes_nothing() {
        let cache = BlobCache::disabled();
        cache.record(&digest(1), "s", &digest(2), 1, "t", "r/a");
        cache.save().unwrap();
        assert!(cache.lookup(&digest(1), "s").is_none());
    }
}
