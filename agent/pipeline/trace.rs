//! What a reconcile observes on its way, for its report: each stage runs in a `tracing`
//! span named after it and is timed; the host id, the map used and the inputs'
//! fingerprint are noted as they become known. Observation only: no stage reads it back.

use std::cell::RefCell;
use std::future::Future;
use std::time::Instant;

use tracing::{info_span, Instrument};

use super::map::LoadedMap;
use crate::fleet::gate::Note;
use crate::fleet::record::Placement;
use crate::identity::Identity;
use crate::report::{Facts, MapReport};
use crate::rolemap::Resolution;

/// The observations of one reconcile.
#[derive(Debug, Default)]
pub(super) struct Trace {
    facts: RefCell<Facts>,
    fingerprint: RefCell<Option<String>>,
    placement: RefCell<Option<Placement>>,
}

impl Trace {
    /// Run the stage `name` in its span, timing it.
    pub async fn stage<T>(&self, name: &'static str, stage: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = stage.instrument(info_span!("stage", stage = name)).await;
        self.time(name, started);
        out
    }

    /// As [`Trace::stage`], for a stage that does not wait on anything.
    pub fn now<T>(&self, name: &'static str, stage: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = info_span!("stage", stage = name).in_scope(stage);
        self.time(name, started);
        out
    }

    fn time(&self, name: &str, started: Instant) {
        let ms = crate::text::elapsed_ms(started);
        self.facts.borrow_mut().timings.insert(name.to_string(), ms);
    }

    /// The host is `id`.
    pub fn host(&self, id: &str) {
        self.facts.borrow_mut().host_id = Some(id.to_string());
    }

    /// The reconcile works from `map`.
    pub fn map(&self, map: MapReport) {
        self.facts.borrow_mut().map = Some(map);
    }

    /// The reconcile works from `loaded`, whose inputs have `fingerprint`.
    pub fn loaded(&self, loaded: &LoadedMap, fingerprint: &str) {
        self.map(loaded.report());
        if loaded.live_rejected {
            self.facts.borrow_mut().rejected =
                Some(loaded.cache_reason.clone().unwrap_or_default());
        }
        *self.fingerprint.borrow_mut() = Some(fingerprint.to_string());
    }

    /// The host's place in the fleet, from the map loaded (SPEC §9.1): before a staged
    /// rollout may put the applied map in its place, so the wave is the new map's.
    pub fn placement(&self, loaded: &LoadedMap, identity: &Identity) {
        let mut placement = Placement {
            zone: identity.az.clone(),
            map_sha256: Some(loaded.sha256.clone()),
            ..Placement::default()
        };
        if let Resolution::Assigned(view) = &loaded.resolution {
            placement.zone.clone_from(&view.host.identity.az);
            placement.roles.clone_from(&view.host.roles);
            placement.products.clone_from(&view.host.products);
        }
        placement.wave = loaded
            .staged
            .as_ref()
            .and_then(|s| s.waves.wave_of(&identity.id));
        *self.placement.borrow_mut() = Some(placement);
    }

    /// A staged rollout keeps the applied map: why.
    pub fn rollout(&self, note: Option<Note>) {
        self.facts.borrow_mut().rollout = note;
    }

    /// Everything observed, the fingerprint of the inputs if a map was loaded, and the
    /// host's place in the fleet.
    pub fn into_parts(self) -> (Facts, Option<String>, Option<Placement>) {
        (
            self.facts.into_inner(),
            self.fingerprint.into_inner(),
            self.placement.into_inner(),
        )
    }
}
