//! What a connector serves: the regular files under its root, listed and described, with
//! each file's SHA-256 cached per (path, size, mtime) once it has been read in full.

use std::collections::{HashMap, VecDeque};
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use crate::protocol::{DatasetInfo, MAX_LISTED_DATASETS};
use crate::safe_path::{self, PathRefusal};

/// Deepest directory level a listing descends to.
pub const MAX_LIST_DEPTH: usize = 16;

/// The encoded size a listing may reach, half a control message: each entry is counted as
/// its name plus [`LISTING_ENTRY_OVERHEAD`] bytes (field names, numbers, a hash).
pub const LISTING_BUDGET_BYTES: usize = crate::protocol::MAX_MESSAGE_BYTES / 2;

/// What one listed entry costs in the message besides its name (generously).
pub const LISTING_ENTRY_OVERHEAD: usize = 160;

/// Most hashes kept; the oldest goes first past it.
pub const HASH_CACHE_ENTRIES: usize = 4096;

/// What identifies one version of a file: a change of size or mtime is a new version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileVersion {
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ms: i64,
}

impl FileVersion {
    pub fn of(path: &Path, meta: &Metadata) -> Self {
        Self {
            path: path.to_owned(),
            size: meta.len(),
            mtime_ms: mtime_ms(meta),
        }
    }
}

/// SHA-256 of files read in full, by version, bounded to [`HASH_CACHE_ENTRIES`].
#[derive(Debug, Default)]
pub struct HashCache {
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    hashes: HashMap<FileVersion, String>,
    order: VecDeque<FileVersion>,
}

impl HashCache {
    pub fn get(&self, version: &FileVersion) -> Option<String> {
        let inner = self
            .inner
            .lock()
            .expect("hash cache lock is never poisoned");
        inner.hashes.get(version).cloned()
    }

    pub fn insert(&self, version: FileVersion, sha256: String) {
        let mut inner = self
            .inner
            .lock()
            .expect("hash cache lock is never poisoned");
        if inner.hashes.insert(version.clone(), sha256).is_none() {
            inner.order.push_back(version);
        }
        while inner.order.len() > HASH_CACHE_ENTRIES {
            if let Some(old) = inner.order.pop_front() {
                inner.hashes.remove(&old);
            }
        }
    }
}

fn mtime_ms(meta: &Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn info(name: String, path: &Path, meta: &Metadata, cache: &HashCache) -> DatasetInfo {
    let version = FileVersion::of(path, meta);
    DatasetInfo {
        name,
        size: version.size,
        mtime_ms: version.mtime_ms,
        sha256: cache.get(&version),
    }
}

/// Describes dataset `name` under the canonical `root`. Blocking.
pub fn stat(root: &Path, name: &str, cache: &HashCache) -> Result<DatasetInfo, PathRefusal> {
    let path = safe_path::resolve(root, name)?;
    let meta = std::fs::metadata(&path).map_err(|err| PathRefusal::Io(err.to_string()))?;
    Ok(info(name.to_owned(), &path, &meta, cache))
}

/// Every dataset under the canonical `root`, sorted by name, at most
/// [`MAX_LISTED_DATASETS`] and [`LISTING_BUDGET_BYTES`] (then `true`: truncated), so the
/// answer always fits one control message. Only names [`safe_path::resolve`]
/// accepts are listed, so everything listed can be fetched: symlinks leading outside the
/// root, special files and names with escapes that read as traversal are left out.
/// Blocking.
pub fn list(root: &Path, cache: &HashCache) -> (Vec<DatasetInfo>, bool) {
    let mut found = Vec::new();
    let mut truncated = false;
    let mut budget = LISTING_BUDGET_BYTES;
    let mut dirs = vec![(root.to_owned(), 0usize)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if depth + 1 < MAX_LIST_DEPTH {
                    dirs.push((path, depth + 1));
                }
                continue;
            }
            let Some(name) = path
                .strip_prefix(root)
                .ok()
                .and_then(|rel| rel.to_str())
                .map(str::to_owned)
            else {
                continue;
            };
            let Ok(target) = safe_path::resolve(root, &name) else {
                continue;
            };
            let Ok(meta) = std::fs::metadata(&target) else {
                continue;
            };
            let cost = name.len() + LISTING_ENTRY_OVERHEAD;
            if found.len() == MAX_LISTED_DATASETS || cost > budget {
                truncated = true;
                break;
            }
            budget -= cost;
            found.push(info(name, &target, &meta, cache));
        }
        if truncated {
            break;
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    (found, truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_only_what_can_be_fetched() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = safe_path::canonical_root(dir.path()).unwrap();
        std::fs::write(root.join("b.csv"), b"12345").unwrap();
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join("sub/deeper/a.bin"), b"1").unwrap();
        std::fs::write(root.join("%2e%2e"), b"1").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink(root.join("b.csv"), root.join("in")).unwrap();
        let cache = HashCache::default();
        let (listed, truncated) = list(&root, &cache);
        let names: Vec<(&str, u64)> = listed.iter().map(|d| (d.name.as_str(), d.size)).collect();
        assert_eq!(names, [("b.csv", 5), ("in", 5), ("sub/deeper/a.bin", 1)]);
        assert!(!truncated);
        assert!(listed.iter().all(|d| d.mtime_ms > 0 && d.sha256.is_none()));

        // A cached hash is announced for the same version only.
        let path = root.join("b.csv");
        let meta = std::fs::metadata(&path).unwrap();
        cache.insert(FileVersion::of(&path, &meta), "ab".repeat(32));
        assert_eq!(
            stat(&root, "b.csv", &cache).unwrap().sha256,
            Some("ab".repeat(32))
        );
        std::fs::write(&path, b"123456").unwrap();
        assert_eq!(stat(&root, "b.csv", &cache).unwrap().sha256, None);
        assert_eq!(
            stat(&root, "out", &cache).unwrap_err(),
            PathRefusal::OutsideRoot
        );
    }

    #[test]
    fn the_hash_cache_is_bounded() {
        let cache = HashCache::default();
        let version = |i: usize| FileVersion {
            path: PathBuf::from(format!("/f{i}")),
            size: 1,
            mtime_ms: 1,
        };
        for i in 0..HASH_CACHE_ENTRIES + 10 {
            cache.insert(version(i), format!("{i}"));
        }
        assert_eq!(cache.get(&version(0)), None);
        assert_eq!(cache.get(&version(9)), None);
        assert_eq!(cache.get(&version(10)), Some("10".into()));
        let inner = cache.inner.lock().unwrap();
        assert_eq!(inner.hashes.len(), HASH_CACHE_ENTRIES);
    }
}
