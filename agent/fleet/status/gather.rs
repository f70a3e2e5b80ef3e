//! `fleet status`'s I/O: the map through the map sources, the LISTs, and the GETs of failed
//! and halted hosts' records.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::{join, latest_markers, Error, Fleet, Health, HostStatus, Seen};
use crate::fleet::record::Record;
use crate::fleet::store::{Listed, Store};
use crate::fleet::{generation_prefix, record_key};
use crate::rolemap::RoleMap;

/// Records read at most (those of failed and halted hosts); the others are counted.
pub const MAX_RECORD_GETS: usize = 50;

/// Where to look.
#[derive(Debug, Clone)]
pub struct Options {
    /// The map URL.
    pub map_url: String,
    /// The report prefix.
    pub report_url: String,
    /// The generation to show (default: the map's).
    pub generation: Option<u64>,
    /// The hosts' heartbeat.
    pub heartbeat: Duration,
    /// Bound of each request.
    pub timeout: Duration,
    /// With a key, the map must carry a valid signature.
    pub verify_key: Option<std::path::PathBuf>,
}

/// Read the map and the reports and join them at `now`.
///
/// # Errors
/// The map or the reports cannot be read.
pub async fn gather(options: &Options, now: SystemTime) -> Result<(RoleMap, Fleet), Error> {
    let map = read_map(options).await?;
    let store = Store::open(&options.report_url, options.timeout).await?;
    let generation = options.generation.unwrap_or_else(|| map.generation());
    let listed = store.list(&generation_prefix(generation)).await?;
    let mut seen = Seen {
        markers: latest_markers(&listed),
        records: HashMap::new(),
    };
    if map
        .hosts
        .keys()
        .any(|id| !seen.markers.contains_key(id.as_str()))
    {
        seen.records = record_times(&store.list("hosts/").await?);
    }
    let mut fleet = join(&map, generation, &seen, now, options.heartbeat);
    fleet.map_url.clone_from(&options.map_url);
    fleet.report_url = store.url().to_string();
    read_reasons(&store, &mut fleet).await;
    Ok((map, fleet))
}

async fn read_map(options: &Options) -> Result<RoleMap, Error> {
    use crate::source::{AnySource, Fetched, MapSource};
    let url = &options.map_url;
    let source = AnySource::from_url(url, options.timeout).await?;
    let Fetched::Map(fetched) = source.fetch(None).await? else {
        let url = url.clone();
        return Err(crate::source::Error::NotCached { url }.into());
    };
    if let Some(key) = &options.verify_key {
        crate::source::verify::check(url, &fetched.bytes, key, options.timeout).await?;
    }
    crate::rolemap::load(&fetched.bytes).map_err(|source| Error::Map {
        url: url.clone(),
        source,
    })
}

/// `hosts/<id>.json` listing → id → written.
fn record_times(listed: &[Listed]) -> HashMap<String, SystemTime> {
    listed
        .iter()
        .filter_map(|l| Some((l.key.strip_suffix(".json")?.to_string(), l.modified)))
        .filter(|(id, _)| !id.contains('/'))
        .collect()
}

/// Read the records of failed and halted hosts (at most [`MAX_RECORD_GETS`]) for why.
async fn read_reasons(store: &Store, fleet: &mut Fleet) {
    let failing = |h: &HostStatus| matches!(h.health, Health::Failed | Health::Halted);
    let mut read = 0;
    for host in fleet.hosts.iter_mut().filter(|h| failing(h)) {
        if read == MAX_RECORD_GETS {
            fleet.unread += 1;
            continue;
        }
        read += 1;
        let (reason, running) = match store.get(&record_key(&host.id)).await {
            Ok(Some(bytes)) => reason_of(&bytes),
            Ok(None) => ("no record".to_string(), None),
            Err(e) => (
                format!("record unreadable: {}", crate::text::chain(&e)),
                None,
            ),
        };
        host.reason = Some(reason);
        host.running = running;
    }
}

fn reason_of(bytes: &[u8]) -> (String, Option<u64>) {
    match serde_json::from_slice::<Record>(bytes) {
        Ok(r) => {
            let extra = r.failed.iter().filter(|f| !r.message.contains(f.as_str()));
            let why: Vec<&str> = std::iter::once(r.message.as_str())
                .chain(extra.map(String::as_str))
                .collect();
            (why.join("; "), r.running)
        }
        Err(e) => (format!("record unreadable: {e}"), None),
    }
}
