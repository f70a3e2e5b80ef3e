//! Obtaining the map for a reconcile (SPEC §7.2, §5): a conditional fetch on the cached
//! ETag, validation, replay protection (generation), and the fall-back to the last-good
//! cache when the source is unreachable or serves a map that is refused.

use tracing::warn;
use walkdir::WalkDir;

use super::Agent;
use crate::error::Error;
use crate::identity::Identity;
use crate::render::MapInfo;
use crate::report::MapReport;
use crate::rolemap::{self, Resolution, RoleMap};
use crate::source::{AnySource, CacheMeta, CachedMap, Fetched, MapSource};
use crate::text::{chain, sha256_hex};

/// A validated map ready to reconcile from, resolved for this host.
#[derive(Debug, Clone)]
pub struct LoadedMap {
    /// The host's view of the map, or that it waits for a role.
    pub resolution: Resolution,
    /// What templates see as `map`.
    pub info: MapInfo,
    /// Raw bytes (for the cache); empty once [`stage`]d.
    pub bytes: Vec<u8>,
    /// How many bytes the map has.
    pub len: usize,
    /// Its bytes were written beside the cache by [`stage`], for the commit to promote.
    pub cache_staged: bool,
    /// Hex SHA-256 of `bytes`.
    pub sha256: String,
    /// Came from the cache rather than the source.
    pub from_cache: bool,
    /// Why the cache was used; or why the live map was rejected.
    pub cache_reason: Option<String>,
    /// The live map was rejected as bad input (invalid or stale).
    pub live_rejected: bool,
    /// New bytes from the source, to be cached once applied.
    pub is_new: bool,
    /// The map's staged rollout, when it has one (SPEC §9.2).
    pub staged: Option<Box<crate::fleet::gate::Staged>>,
}

impl LoadedMap {
    pub(super) fn report(&self) -> MapReport {
        MapReport {
            info: self.info.clone(),
            from_cache: self.from_cache,
            cache_reason: self.cache_reason.clone(),
        }
    }
}

/// What the status record says of a map the source still holds unchanged.
pub(super) fn unchanged_report(meta: &CacheMeta) -> MapReport {
    MapReport {
        info: meta.info.clone(),
        from_cache: false,
        cache_reason: None,
    }
}

/// Fetch (conditionally on the cached ETag) and validate, falling back to the cache.
///
/// # Errors
/// When the source fails or serves a bad map and there is no cache to fall back to.
pub async fn obtain_map(
    agent: &Agent,
    source: &AnySource,
    identity: &Identity,
) -> Result<LoadedMap, Error> {
    let fetch = fetch(agent, source).await;
    load(agent, fetch, identity).await
}

/// What one conditional fetch found: the source's answer and the cache it was asked
/// against. Nothing parsed yet.
#[derive(Debug)]
pub(super) struct Fetch {
    /// Metadata of the cached map of this URL, if any.
    pub cached: Option<CacheMeta>,
    /// The source's answer.
    pub fetched: Result<Fetched, crate::source::Error>,
}

impl Fetch {
    /// The size of the map the source sent, if it sent one.
    pub fn len(&self) -> Option<usize> {
        match &self.fetched {
            Ok(Fetched::Map(m)) => Some(m.bytes.len()),
            _ => None,
        }
    }

    /// The source still holds the cached map: its metadata.
    pub fn unchanged(&self) -> Option<&CacheMeta> {
        match self.fetched {
            Ok(Fetched::NotModified) => self.cached.as_ref(),
            _ => None,
        }
    }
}

/// Stage 2: ask the source for the map, conditionally on the cached ETag. Reads only the
/// cache's small metadata file, so an unchanged map costs no read of the cached bytes.
pub(super) async fn fetch(agent: &Agent, source: &AnySource) -> Fetch {
    let cached = cached_meta(agent);
    let fetched = source
        .fetch(cached.as_ref().and_then(|c| c.info.etag.as_deref()))
        .await;
    Fetch { cached, fetched }
}

/// The metadata of the last-good cache of this URL, if any. A cache of another map (the URL
/// was changed in agent.toml) is no fallback for this one.
pub(super) fn cached_meta(agent: &Agent) -> Option<CacheMeta> {
    let cached = agent.cache().meta().unwrap_or_else(|e| {
        warn!(error = %chain(&e), "last-good cache unreadable, ignoring it");
        None
    });
    cached.filter(|c| c.info.url == agent.settings.map_url)
}

/// Stage 3: verify, validate and resolve for `identity` what [`fetch`] found, falling back
/// to the cache.
///
/// # Errors
/// When the source fails or serves a bad map and there is no cache to fall back to.
pub(super) async fn load(
    agent: &Agent,
    fetch: Fetch,
    identity: &Identity,
) -> Result<LoadedMap, Error> {
    let url = &agent.settings.map_url;
    let had_cache = fetch.cached.is_some();
    let refusal = match fetch.fetched {
        Ok(Fetched::NotModified) => return unmodified(agent, had_cache, identity),
        Ok(Fetched::Map(m)) => {
            let applied = fetch.cached.as_ref().map(|c| c.info.generation);
            match take(agent, m, applied, identity).await {
                Ok(loaded) => return Ok(loaded),
                Err(e) => Refusal::refused(url, e),
            }
        }
        Err(e) if e.is_bad_map() => Refusal::refused(url, e.into()),
        Err(e) => Refusal {
            reason: format!("{url} unreachable: {}", chain(&e)),
            rejected: false,
            error: e.into(),
        },
    };
    match cached_map(agent, had_cache) {
        Some(c) => {
            warn!(reason = %refusal.reason, generation = c.info.generation, "using cached map");
            from_cache(c, identity, refusal.reason, refusal.rejected)
        }
        None => Err(refusal.error),
    }
}

/// Why the live map is not used: the cache is, if there is one; else `error` ends the
/// reconcile.
struct Refusal {
    reason: String,
    /// The source served a map, and it was refused (bad input, not an outage).
    rejected: bool,
    error: Error,
}

impl Refusal {
    fn refused(url: &str, error: Error) -> Refusal {
        Refusal {
            reason: format!("map from {url} refused: {}", chain(&error)),
            rejected: true,
            error,
        }
    }
}

/// A map the source served: verified, validated, not older than the `applied` one, resolved.
async fn take(
    agent: &Agent,
    m: crate::source::MapBytes,
    applied: Option<u64>,
    identity: &Identity,
) -> Result<LoadedMap, Error> {
    verify(agent, &m.bytes).await?;
    let resolved = accept(&m.bytes, applied, identity)?;
    let url = &agent.settings.map_url;
    Ok(loaded(
        resolved,
        (m.bytes, m.sha256),
        m.etag,
        m.version,
        url,
    ))
}

/// The source still holds the cached map (or a staged rollout keeps it): load it from the
/// cache as the live one.
pub(super) fn unmodified(
    agent: &Agent,
    had_cache: bool,
    identity: &Identity,
) -> Result<LoadedMap, Error> {
    let Some(c) = cached_map(agent, had_cache) else {
        let url = agent.settings.map_url.clone();
        return Err(crate::source::Error::NotCached { url }.into());
    };
    let mut m = from_cache(c, identity, String::new(), false)?;
    m.from_cache = false;
    m.cache_reason = None;
    Ok(m)
}

/// The cached map of this URL, read only when its metadata was found by the fetch.
fn cached_map(agent: &Agent, had_cache: bool) -> Option<CachedMap> {
    if !had_cache {
        return None;
    }
    agent
        .cache()
        .load()
        .unwrap_or_else(|e| {
            warn!(error = %chain(&e), "last-good cache unreadable, ignoring it");
            None
        })
        .filter(|c| c.info.url == agent.settings.map_url)
}

/// With `map.verify_key` set, a map is used only with a valid detached signature.
async fn verify(agent: &Agent, bytes: &[u8]) -> Result<(), crate::source::Error> {
    match &agent.settings.verify_key {
        Some(key) => {
            let url = &agent.settings.map_url;
            crate::source::verify::check(url, bytes, key, agent.settings.fetch_timeout).await
        }
        None => Ok(()),
    }
}

/// Validate and resolve `bytes`, and refuse a generation older than the `applied` one.
pub(super) fn accept(
    bytes: &[u8],
    applied: Option<u64>,
    identity: &Identity,
) -> Result<(RoleMap, Resolution), rolemap::Error> {
    let (map, resolution) = rolemap::load_for(bytes, identity)?;
    if let Some(applied) = applied {
        if map.generation() < applied {
            return Err(rolemap::Error::Stale {
                found: map.generation(),
                applied,
            });
        }
    }
    Ok((map, resolution))
}

/// The cached map `c`, validated and resolved for `identity`; its bytes are moved into the
/// loaded map, not copied (1.3 MB on a 10,000-host map).
pub(super) fn from_cache(
    c: CachedMap,
    identity: &Identity,
    reason: String,
    rejected: bool,
) -> Result<LoadedMap, Error> {
    let resolved = rolemap::load_for(&c.bytes, identity)?;
    let MapInfo {
        url, etag, version, ..
    } = c.info;
    let mut m = loaded(resolved, (c.bytes, None), etag, version, &url);
    m.from_cache = true;
    m.is_new = false;
    m.cache_reason = Some(reason);
    m.live_rejected = rejected;
    Ok(m)
}

/// The loaded map of `bytes`; `sha256` is their hash when the source computed it already.
pub(super) fn loaded(
    (map, resolution): (RoleMap, Resolution),
    (bytes, sha256): (Vec<u8>, Option<String>),
    etag: Option<String>,
    version: Option<String>,
    url: &str,
) -> LoadedMap {
    let info = MapInfo {
        etag,
        version,
        generation: map.generation(),
        url: url.to_string(),
    };
    let staged = crate::fleet::gate::Staged::of(&map).map(Box::new);
    LoadedMap {
        resolution,
        info,
        sha256: sha256.unwrap_or_else(|| sha256_hex(&bytes)),
        len: bytes.len(),
        bytes,
        cache_staged: false,
        from_cache: false,
        cache_reason: None,
        live_rejected: false,
        is_new: true,
        staged,
    }
}

/// A new map's bytes written beside the cache now and let go: the commit promotes them
/// (issue 13: a 10,000-host map's 1.3 MB are otherwise held through render and apply). If
/// they cannot be staged they are kept, and the commit stores them as before.
pub(super) fn stage(agent: &Agent, mut loaded: LoadedMap) -> LoadedMap {
    if !loaded.is_new {
        return loaded;
    }
    match agent.cache().stage(&loaded.bytes) {
        Ok(()) => {
            loaded.cache_staged = true;
            loaded.bytes = Vec::new();
        }
        Err(e) => warn!(error = %chain(&e), "new map not staged for the cache"),
    }
    loaded
}

/// sha256 over everything a render depends on: this agent's version, its settings, the
/// host's identity, the map (by its SHA-256) and every catalog and template file. Equal
/// fingerprints render equal files, so a converged host with equal inputs has nothing to
/// do, and a failed one would fail again.
pub(super) fn fingerprint(agent: &Agent, identity: &Identity, map_sha256: &str) -> String {
    let mut all = format!(
        "{}\n{:?}\n{identity:?}\n{map_sha256}\n",
        env!("CARGO_PKG_VERSION"),
        agent.settings
    )
    .into_bytes();
    let (catalog, templates) = (&agent.settings.catalog_dir, &agent.settings.templates_dir);
    // One directory may hold both (the example's agent.toml): it is read once.
    let dirs = std::iter::once(catalog).chain(Some(templates).filter(|t| *t != catalog));
    for dir in dirs {
        // Unreadable entries are left out: loading the catalog names them.
        let entries = WalkDir::new(dir).follow_links(true).sort_by_file_name();
        for f in entries
            .into_iter()
            .flatten()
            .filter(|e| !e.file_type().is_dir())
        {
            all.extend_from_slice(f.path().to_string_lossy().as_bytes());
            all.push(0);
            all.extend(std::fs::read(f.path()).unwrap_or_default());
            all.push(0);
        }
    }
    sha256_hex(&all)
}
