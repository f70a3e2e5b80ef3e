//! The last-good map cache in the state directory (SPEC §7.2): bytes, ETag, version and
//! generation of the last applied map, used when the source is unreachable (boot included).
//! Two files, `map.toml` (the exact bytes) and `map.meta.json`, each replaced atomically; the
//! metadata holds the bytes' SHA-256, so a torn pair reads as "no cache". Small synchronous
//! local I/O.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Error;
use crate::render::MapInfo;
use crate::text::sha256_hex;

const MAP_FILE: &str = "map.toml";
const META_FILE: &str = "map.meta.json";
/// A new map staged by a reconcile, made the cache at its commit.
const NEXT_FILE: &str = "map.toml.next";

/// The last map this host applied, with what it takes to use it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedMap {
    /// Exact bytes of the map.
    pub bytes: Vec<u8>,
    /// Where it came from; a cache from another URL is the caller's to ignore.
    pub info: MapInfo,
}

impl CachedMap {
    /// The metadata that goes with the map, its SHA-256 computed.
    pub fn meta(&self) -> CacheMeta {
        CacheMeta {
            info: self.info.clone(),
            sha256: sha256_hex(&self.bytes),
        }
    }
}

/// `map.meta.json`: what a poll needs to know about the cached map without reading it.
/// Read leniently (no `deny_unknown_fields`) so that an agent rolled back to an older
/// version still uses a cache written by a newer one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheMeta {
    /// Where the map came from (keys `url`, `etag`, `version`, `generation`).
    #[serde(flatten)]
    pub info: MapInfo,
    /// Hex SHA-256 of `map.toml`, which ties the two files together.
    pub sha256: String,
}

/// The cache files in one directory (the state directory).
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache kept in `state_dir`; nothing is read or created yet.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: state_dir.into(),
        }
    }

    /// The cached map, or `None` when there is none. A metadata file that does not parse, or
    /// a map file that is missing or does not match it, is logged at warn and read as `None`.
    ///
    /// # Errors
    /// `Error::Cache` when a cache file exists but cannot be read (permissions, I/O).
    pub fn load(&self) -> Result<Option<CachedMap>, Error> {
        let Some(meta) = self.meta()? else {
            return Ok(None);
        };
        let map_path = self.dir.join(MAP_FILE);
        let Some(bytes) = read_if_exists(&map_path)? else {
            tracing::warn!(path = %map_path.display(), "cached map missing, cache ignored");
            return Ok(None);
        };
        if sha256_hex(&bytes) != meta.sha256 {
            tracing::warn!(
                path = %map_path.display(),
                "cached map does not match its metadata, cache ignored"
            );
            return Ok(None);
        }
        Ok(Some(CachedMap {
            bytes,
            info: meta.info,
        }))
    }

    /// Replace the cache with the map `bytes` and their `meta` (whose `sha256` must be the
    /// bytes'; [`CachedMap::meta`] makes it): the map file first, then its metadata, each through a
    /// temporary file in the same directory, fsync, rename and a directory fsync. A crash
    /// between the two leaves a pair that `load` reads as no cache, never a wrong one.
    ///
    /// # Errors
    /// `Error::Cache` naming the file that could not be written.
    pub fn store(&self, bytes: &[u8], meta: &CacheMeta) -> Result<(), Error> {
        write_atomic(&self.dir, MAP_FILE, bytes)?;
        self.store_meta(meta)
    }

    /// The metadata of the map file just put in place.
    fn store_meta(&self, meta: &CacheMeta) -> Result<(), Error> {
        let json = self.meta_json(meta)?;
        write_atomic(&self.dir, META_FILE, &json)?;
        self.cached(meta);
        Ok(())
    }

    /// `meta` as its file holds it.
    fn meta_json(&self, meta: &CacheMeta) -> Result<Vec<u8>, Error> {
        serde_json::to_vec_pretty(meta).map_err(|err| Error::Cache {
            path: self.dir.join(META_FILE),
            source: err.into(),
        })
    }

    /// Say that `meta`'s map is the cache now.
    fn cached(&self, meta: &CacheMeta) {
        tracing::debug!(
            path = %self.dir.display(),
            generation = meta.info.generation,
            map_etag = ?meta.info.etag,
            "map cached"
        );
    }

    /// Write a new map's `bytes` beside the cache (`map.toml.next`), not yet durable and not
    /// yet the cache: a reconcile stages its map when it loads it, so it need not hold the
    /// bytes until its commit, which [`Cache::promote`]s them (issue 13).
    ///
    /// # Errors
    /// `Error::Cache` naming the file.
    pub fn stage(&self, bytes: &[u8]) -> Result<(), Error> {
        let path = self.dir.join(NEXT_FILE);
        crate::sys::fs::stage_state(&path, bytes).map_err(failed(&path))
    }

    /// Make the map this process [`Cache::stage`]d the cache, with its `meta` (whose
    /// `sha256` must be the staged bytes'): the map file made durable and renamed into place,
    /// then the metadata written beside it, one directory fsync naming both. A crash before
    /// that fsync may leave a pair that `load` reads as no cache, never a wrong one. Only
    /// promote what was staged in the same run: a stale staged file would be read back as
    /// no cache too (its SHA-256 is not the metadata's).
    ///
    /// # Errors
    /// `Error::Cache` naming the file; nothing staged is "not found".
    pub fn promote(&self, meta: &CacheMeta) -> Result<(), Error> {
        let (next, map) = (self.dir.join(NEXT_FILE), self.dir.join(MAP_FILE));
        let json = self.meta_json(meta)?;
        crate::sys::fs::promote_state(&next, &map, (META_FILE, &json)).map_err(failed(&map))?;
        self.cached(meta);
        Ok(())
    }

    /// The cached map's metadata alone (a small JSON file), or `None` when it is missing
    /// or does not parse. The map bytes are neither read nor checked: [`Cache::load`] does.
    ///
    /// # Errors
    /// `Error::Cache` when the file exists but cannot be read.
    pub fn meta(&self) -> Result<Option<CacheMeta>, Error> {
        let meta_path = self.dir.join(META_FILE);
        let Some(raw_meta) = read_if_exists(&meta_path)? else {
            tracing::debug!(path = %meta_path.display(), "no cached map");
            return Ok(None);
        };
        match serde_json::from_slice(&raw_meta) {
            Ok(meta) => Ok(Some(meta)),
            Err(err) => {
                tracing::warn!(
                    path = %meta_path.display(),
                    error = %err,
                    "cached map metadata unreadable, cache ignored"
                );
                Ok(None)
            }
        }
    }
}

/// Read through `sys::fs`, which never follows a symlink at a state file (issue 15 #9).
fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    crate::sys::fs::read_state(path).map_err(failed(path))
}

/// Replace `dir/name` with `bytes` atomically, through `sys::fs` (the only writer).
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), Error> {
    let path = dir.join(name);
    crate::sys::fs::write_state(&path, bytes).map_err(failed(&path))
}

/// A state-file error at `path` as the cache's error, its causes kept in the text.
fn failed(path: &Path) -> impl FnOnce(crate::sys::fs::Error) -> Error + '_ {
    move |e| Error::Cache {
        source: std::io::Error::other(crate::text::chain(&e)),
        path: path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CachedMap {
        CachedMap {
            bytes: b"schema = 1\ngeneration = 41\n".to_vec(),
            info: MapInfo {
                url: "s3://fleet-config/rolemap.toml".to_owned(),
                etag: Some("\"9b2cf535f27731c974343645a3985328\"".to_owned()),
                version: Some("3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY".to_owned()),
                generation: 41,
            },
        }
    }

    /// `map.meta.json` keeps its flat keys, so agents before and after this one read each
    /// other's cache: the file as earlier versions wrote it reads back, and what this
    /// version writes has the same keys at the top level.
    #[test]
    fn the_metadata_file_keeps_its_flat_keys() {
        let (dir, cache) = holding_sample();
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(META_FILE)).expect("meta"))
                .expect("json");
        let mut keys: Vec<&str> = written
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["etag", "generation", "sha256", "url", "version"]);

        let older = serde_json::json!({
            "url": "s3://fleet-config/rolemap.toml",
            "generation": 41,
            "etag": "\"9b2cf535f27731c974343645a3985328\"",
            "version": "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY",
            "sha256": sha256_hex(&sample().bytes),
            "written_by": "a later version",
        });
        std::fs::write(dir.path().join(META_FILE), older.to_string()).expect("older meta");
        assert_eq!(cache.load().expect("load"), Some(sample()));
    }

    /// A cache in a temp dir that holds [`sample`].
    fn holding_sample() -> (tempfile::TempDir, Cache) {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = Cache::new(dir.path());
        cache
            .store(&sample().bytes, &sample().meta())
            .expect("store");
        (dir, cache)
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn stored_map_loads_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = Cache::new(dir.path().join("state"));
        assert_eq!(cache.load().expect("load empty"), None);
        cache
            .store(&sample().bytes, &sample().meta())
            .expect("store");
        assert_eq!(cache.load().expect("load"), Some(sample()));
        let mut newer = sample();
        newer.info.generation = 42;
        newer.info.etag = None;
        newer.info.version = None;
        cache
            .store(&newer.bytes, &newer.meta())
            .expect("store again");
        assert_eq!(cache.load().expect("load again"), Some(newer));
        assert_eq!(entries(&dir.path().join("state")), [META_FILE, MAP_FILE]);
    }

    /// A staged map is not the cache until it is promoted; promoted, it loads back as if
    /// stored, and nothing staged cannot be promoted. A symlink at the staged name is
    /// refused, not followed.
    #[test]
    fn a_staged_map_is_the_cache_only_once_promoted() {
        let (dir, cache) = holding_sample();
        let mut newer = sample();
        newer.bytes = b"schema = 1\ngeneration = 42\n".to_vec();
        newer.info.generation = 42;
        cache.stage(&newer.bytes).expect("stage");
        assert_eq!(
            cache.load().expect("load"),
            Some(sample()),
            "staged is not cached"
        );
        cache.promote(&newer.meta()).expect("promote");
        assert_eq!(cache.load().expect("load"), Some(newer.clone()));
        assert_eq!(entries(dir.path()), [META_FILE, MAP_FILE]);

        let err = cache.promote(&sample().meta()).expect_err("nothing staged");
        assert!(err.to_string().contains(MAP_FILE), "{err}");
        assert_eq!(cache.load().expect("load"), Some(newer.clone()));

        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, b"schema = 1\n").expect("write");
        std::os::unix::fs::symlink(&elsewhere, dir.path().join(NEXT_FILE)).expect("symlink");
        assert!(cache.promote(&sample().meta()).is_err(), "symlink promoted");
        assert_eq!(cache.load().expect("load"), Some(newer.clone()));
        assert_eq!(std::fs::read(&elsewhere).expect("read"), b"schema = 1\n");
    }

    /// The metadata is written beside the promoted map (one directory fsync for both): a
    /// symlink at its name is refused before the staged map takes the cache's name, and
    /// the file it points to is left as it was.
    #[test]
    fn a_symlink_at_the_metadata_refuses_the_promotion_before_the_map_moves() {
        let (dir, cache) = holding_sample();
        let newer = b"schema = 1\ngeneration = 42\n";
        cache.stage(newer).expect("stage");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, b"{}").expect("write");
        std::fs::remove_file(dir.path().join(META_FILE)).expect("remove meta");
        std::os::unix::fs::symlink(&elsewhere, dir.path().join(META_FILE)).expect("symlink");
        let mut meta = sample().meta();
        meta.sha256 = sha256_hex(newer);
        let err = cache
            .promote(&meta)
            .expect_err("promoted through a symlink");
        let text = crate::text::chain(&err);
        assert!(text.contains(META_FILE), "{text}");
        assert_eq!(std::fs::read(&elsewhere).expect("read"), b"{}");
        let read = |name: &str| std::fs::read(dir.path().join(name)).expect(name);
        assert_eq!(read(MAP_FILE), sample().bytes, "the map moved");
        assert_eq!(read(NEXT_FILE), newer, "the staged map went");
    }

    #[test]
    fn corrupt_metadata_is_no_cache() {
        let (dir, cache) = holding_sample();
        std::fs::write(dir.path().join(META_FILE), b"{\"url\": ").expect("corrupt meta");
        assert_eq!(cache.load().expect("load"), None);
    }

    #[test]
    fn map_that_does_not_match_its_metadata_is_no_cache() {
        let (dir, cache) = holding_sample();
        std::fs::write(dir.path().join(MAP_FILE), b"schema = 1\n").expect("torn write");
        assert_eq!(cache.load().expect("load"), None);
        std::fs::remove_file(dir.path().join(MAP_FILE)).expect("remove map");
        assert_eq!(cache.load().expect("load"), None);
    }

    #[test]
    fn unreadable_metadata_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join(META_FILE)).expect("directory in the way");
        let err = Cache::new(dir.path())
            .load()
            .expect_err("a directory is not a file");
        assert!(matches!(err, Error::Cache { .. }), "{err:?}");
    }
}
