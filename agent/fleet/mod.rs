//! The fleet (SPEC §9): what hosts report to S3 (or a shared directory) and how the fleet
//! is read back, and the staged rollout. `waves` and `html` are pure; `record` builds a
//! host's report (pure); `store` is the I/O against S3 or a directory; `report` decides
//! when a host writes; `status` joins the map with the markers for `fleet status`.

pub(crate) mod gate;
pub(crate) mod html;
pub(crate) mod record;
pub(crate) mod report;
pub(crate) mod status;
pub(crate) mod store;
pub mod waves;

use serde::{Deserialize, Serialize};

crate::text::named! {
    /// A host's state for one generation: the `<state>` of its marker
    /// `g/<generation>/<state>/<id>`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
    pub enum State {
        /// Converged on the generation.
        Ok = "ok",
        /// Its reconcile of the generation failed or rolled back.
        Fail = "fail",
        /// Waiting for its wave to open; runs an earlier generation.
        Held = "held",
        /// Its wave opened and the halt rule stopped the rollout for it.
        Halted = "halted",
        /// Not in the map: waiting for a role.
        Waiting = "waiting",
    }
}

impl State {
    /// Every state, in the order tables show them.
    pub const ALL: [State; 5] = [
        State::Ok,
        State::Fail,
        State::Held,
        State::Halted,
        State::Waiting,
    ];

    /// The state named by a marker's path segment.
    pub fn parse(text: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Key of a host's record under the report prefix.
pub fn record_key(id: &str) -> String {
    format!("hosts/{id}.json")
}

/// Key of a host's marker under the report prefix.
pub fn marker_key(generation: u64, state: State, id: &str) -> String {
    format!("g/{generation}/{}/{id}", state.as_str())
}

/// Prefix under which one generation's markers lie.
pub fn generation_prefix(generation: u64) -> String {
    format!("g/{generation}/")
}

/// `(state, host id)` of a marker key relative to a generation's prefix (`ok/web-1`).
pub fn parse_marker(relative: &str) -> Option<(State, &str)> {
    let (state, id) = relative.split_once('/')?;
    let state = State::parse(state)?;
    (!id.is_empty() && !id.contains('/')).then_some((state, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_keys_round_trip() {
        let key = marker_key(42, State::Held, "i-0a1");
        assert_eq!(key, "g/42/held/i-0a1");
        let relative = key.strip_prefix(&generation_prefix(42)).unwrap();
        assert_eq!(parse_marker(relative), Some((State::Held, "i-0a1")));
        assert_eq!(parse_marker("bogus/i-0a1"), None);
        assert_eq!(parse_marker("ok/"), None);
        assert_eq!(parse_marker("ok/a/b"), None);
        assert_eq!(record_key("web-1"), "hosts/web-1.json");
    }
}
