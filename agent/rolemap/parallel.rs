//! Stage 3 of a large map on several threads. A 10,000-host map is about 1.2 MB of TOML, and
//! toml needs some 35 ms for it on one core, more than the whole of stage 3's budget; [`join`]
//! then lets validation and resolution run side by side (`crate::threads::join`).
//!
//! The text is cut at lines that open a `[hosts.ID]` or `[products.NAME]` table into pieces
//! of about [`PIECE`] bytes, a few threads take the pieces in turn, and the pieces' maps are
//! merged. Small pieces keep memory low (issue 13): toml's parse tree of a piece is some 30
//! times the piece's size, and each is dropped as soon as its typed map is built, so the
//! peak is a few pieces' trees rather than the whole map's. The merge is used only when
//! it is exactly what one parse of the whole text gives; otherwise [`parse`] returns `None`
//! and the caller parses the whole text, which also words every error. Why a merge that
//! passes the checks below is exact:
//!
//! - Every piece but the last ends with a newline, and a piece that parses alone ends outside
//!   any string, array or inline table, so the whole text reads as the pieces one after
//!   another.
//! - Every piece but the first starts with `[`, so its first line is a table header: it sets
//!   no key of the root, and nothing it contains belongs to the previous piece's last table.
//! - Pieces can conflict only through tables they both reach from the root. Only `hosts` and
//!   `products` may be shared; any other root key in two pieces is refused. Under them, the
//!   pieces' entries must not overlap, so no table below them is reached by two pieces.
//! - A shared `hosts` or `products` must be a table the later pieces may extend: not inline in
//!   the first piece, and never defined by its own `[hosts]` header in a later piece (toml
//!   gives a header-defined table the header's span, which starts with `[`; an inline table's
//!   span starts with `{`; a table only implied by longer headers has its key's span).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;

use serde::Deserialize;
use toml::de::{DeTable, Deserializer};

use super::types::RoleMap;
use crate::threads::joined;

/// Below twice this many bytes, a map is parsed whole: starting threads costs more than it
/// saves.
const MIN_PIECE: usize = 128 * 1024;

/// About how many bytes each piece has.
const PIECE: usize = 64 * 1024;

/// More threads than this gain little.
const MAX_THREADS: usize = 4;

/// From this many hosts on, [`crate::threads::join`] is worth a thread for validation and
/// resolution.
pub const MIN_HOSTS: usize = 1000;

/// The root tables whose lines the text is cut at, the only ones pieces may share.
const SHARED: [&str; 2] = ["hosts", "products"];

/// The map in `text`, parsed on several threads, or `None` when the text is too small, has no
/// place to cut, or the pieces cannot be proven to merge exactly (including any TOML or type
/// error: the caller's parse of the whole text reports it).
pub fn parse(text: &str) -> Option<RoleMap> {
    if text.len() < 2 * MIN_PIECE {
        return None;
    }
    parse_at(text, &cuts(text, text.len() / PIECE))
}

/// Up to `pieces - 1` offsets, each the first cut line at or after an even share of `text`.
fn cuts(text: &str, pieces: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = Vec::with_capacity(pieces - 1);
    for share in 1..pieces {
        let from = (text.len() / pieces * share).max(cuts.last().map_or(0, |c| c + 1));
        match next_cut(text.as_bytes(), from) {
            Some(at) => cuts.push(at),
            None => break,
        }
    }
    cuts
}

/// The start of the first line at or after `from` that is exactly `[hosts.ID]` or
/// `[products.NAME]` with a bare key.
fn next_cut(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at < bytes.len() {
        let newline = at + bytes[at..].iter().position(|&b| b == b'\n')?;
        at = newline + 1;
        if opens_shared_table(&bytes[at..]) {
            return Some(at);
        }
    }
    None
}

fn opens_shared_table(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"[") else {
        return false;
    };
    let Some(key) = SHARED.iter().find_map(|table| {
        rest.strip_prefix(table.as_bytes())
            .and_then(|r| r.strip_prefix(b"."))
    }) else {
        return false;
    };
    let bare = key
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-' || **b == b'_')
        .count();
    bare > 0 && matches!(key[bare..], [b']', b'\n', ..] | [b']', b'\r', b'\n', ..])
}

/// Parse the pieces of `text` between `cuts` on their own threads and merge them. Every
/// piece must be non-empty, so the cuts rise and the first piece starts the text.
fn parse_at(text: &str, cuts: &[usize]) -> Option<RoleMap> {
    let mut bounds = Vec::with_capacity(cuts.len() + 2);
    bounds.push(0);
    bounds.extend_from_slice(cuts);
    bounds.push(text.len());
    let mut pieces = Vec::with_capacity(bounds.len() - 1);
    for pair in bounds.windows(2) {
        if pair[0] >= pair[1] {
            return None;
        }
        let piece = text.get(pair[0]..pair[1])?;
        if pair[0] > 0 && !(piece.starts_with('[') && text[..pair[0]].ends_with('\n')) {
            return None;
        }
        pieces.push(piece);
    }
    merge(parse_all(&pieces).into_iter().collect::<Option<Vec<_>>>()?)
}

/// Every piece's map, in order: this thread and up to [`MAX_THREADS`] - 1 others (one per
/// core) take the next unparsed piece until none is left. A thread the system refuses (a
/// task limit) only costs parallelism.
fn parse_all(pieces: &[&str]) -> Vec<Option<RoleMap>> {
    let cores = thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let helpers = cores.min(MAX_THREADS).min(pieces.len()).saturating_sub(1);
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Option<RoleMap>>>> =
        pieces.iter().map(|_| Mutex::new(None)).collect();
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(piece) = pieces.get(i) else { break };
        let map = parse_piece(piece, i == 0);
        *slots[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(map);
    };
    thread::scope(|scope| {
        let spawned: Vec<_> = (0..helpers)
            .filter_map(|_| thread::Builder::new().spawn_scoped(scope, work).ok())
            .collect();
        work();
        spawned.into_iter().for_each(joined);
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .flatten()
        })
        .collect()
}

/// One piece's map, if it parses and its shared tables may be merged with other pieces'.
fn parse_piece(piece: &str, first: bool) -> Option<RoleMap> {
    let table = DeTable::parse(piece).ok()?;
    for (key, value) in table.get_ref() {
        // A shared key that is not a table fails the typed parse below.
        if !SHARED.contains(&key.get_ref().as_ref()) {
            continue;
        }
        let opens = piece.as_bytes().get(value.span().start).copied();
        let mergeable = if first {
            opens != Some(b'{')
        } else {
            opens != Some(b'[')
        };
        if !mergeable {
            return None;
        }
    }
    RoleMap::deserialize(Deserializer::from(table)).ok()
}

/// The pieces' maps as one, or `None` if two pieces have an entry in common. Each table is
/// built once from all pieces' entries (appending piece after piece rebuilt the growing
/// table every time: a tenth of a 10,000-host sync).
fn merge(pieces: Vec<RoleMap>) -> Option<RoleMap> {
    let mut pieces = pieces.into_iter();
    let mut map = pieces.next()?;
    let (mut hosts, mut products, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
    for mut piece in pieces {
        hosts.push(std::mem::take(&mut piece.hosts));
        products.push(std::mem::take(&mut piece.products));
        unknown.push(std::mem::take(&mut piece.unknown));
        // `[rollout]` may sit after the cut lines; in two pieces, the whole parse words it.
        match (&map.rollout, piece.rollout.take()) {
            (Some(_), Some(_)) => return None,
            (None, Some(rollout)) => map.rollout = Some(rollout),
            _ => {}
        }
    }
    map.hosts = union_disjoint(std::mem::take(&mut map.hosts), hosts)?;
    map.products = union_disjoint(std::mem::take(&mut map.products), products)?;
    map.unknown = union_disjoint(std::mem::take(&mut map.unknown), unknown)?;
    Some(map)
}

/// All entries of `first` and `rest` in one table, or `None` if a key is in two of them.
fn union_disjoint<V>(
    first: BTreeMap<String, V>,
    rest: Vec<BTreeMap<String, V>>,
) -> Option<BTreeMap<String, V>> {
    let expected = first.len() + rest.iter().map(BTreeMap::len).sum::<usize>();
    let union: BTreeMap<String, V> = first
        .into_iter()
        .chain(rest.into_iter().flatten())
        .collect();
    (union.len() == expected).then_some(union)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole text parsed at once, as the caller falls back to.
    fn whole(text: &str) -> Result<RoleMap, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Every offset where a line starts: cut candidates, good and bad.
    fn line_starts(text: &str) -> Vec<usize> {
        (1..text.len())
            .filter(|&i| text.as_bytes()[i - 1] == b'\n')
            .collect()
    }

    /// Each of `texts` is valid TOML exactly when `valid`, and merges exactly at every cut.
    fn assert_toml_verdict_and_exact_cuts(texts: &[&str], valid: bool) {
        for text in texts {
            assert_eq!(whole(text).is_ok(), valid, "toml's verdict on {text:?}");
            assert_exact_at_every_cut(text);
        }
    }

    /// For a cut at every offset and every pair of cuts at line starts (the same one twice
    /// and the start of the text included): a merge is returned only when the whole text
    /// parses, and then it is equal to the whole parse.
    fn assert_exact_at_every_cut(text: &str) -> usize {
        let whole = whole(text);
        let mut lines = line_starts(text);
        lines.insert(0, 0);
        let mut merged = 0;
        let mut sets: Vec<Vec<usize>> = (0..=text.len()).map(|c| vec![c]).collect();
        for (i, &a) in lines.iter().enumerate() {
            sets.extend(lines[i..].iter().map(|&b| vec![a, b]));
            sets.push(vec![a, 0]);
        }
        for cuts in sets {
            if let Some(map) = parse_at(text, &cuts) {
                merged += 1;
                match &whole {
                    Ok(expected) => assert_eq!(&map, expected, "cuts {cuts:?} in\n{text}"),
                    Err(e) => panic!("cuts {cuts:?} merged a text toml refuses ({e}):\n{text}"),
                }
            }
        }
        merged
    }

    const VALID: &str = "schema = 1\ngeneration = 3\n\n[products.a]\ndomain = \"a.example\"\n\
        \n[products.a.database]\nname = \"a\"\nmaster = \"h1\"\n\n[products.b]\ndomain = \"b\"\n\
        \n[hosts.h1]\naddress = \"10.0.0.1\"\nroles = [\"db\"]\n\n[hosts.h2]\naddress = \"x\"\n\
        products = [\"a\",\n  \"b\"]\n\n[hosts.h3]\naz = \"c\"\n";

    #[test]
    fn a_valid_map_merges_exactly_wherever_it_is_cut() {
        let merged = assert_exact_at_every_cut(VALID);
        assert!(
            merged >= 4,
            "only {merged} cuts merged: the fast path is never taken"
        );
        let at_h2 = VALID.find("[hosts.h2]").expect("has h2");
        let map = parse_at(VALID, &[at_h2]).expect("a cut between hosts merges");
        assert_eq!(map.hosts.len(), 3);
        assert_eq!(map.generation, 3);
    }

    #[test]
    fn a_rollout_table_after_the_cut_lines_is_merged() {
        let rollout = "\n[rollout]\nwaves = [100]\nbake = \"1m\"\n";
        let text = format!("{VALID}{rollout}");
        assert_exact_at_every_cut(&text);
        let at_h2 = text.find("[hosts.h2]").expect("has h2");
        let map = parse_at(&text, &[at_h2]).expect("merges");
        assert_eq!(map.rollout.expect("kept").waves, vec![100]);
        // Defined twice, in two pieces: never merged (toml refuses the whole text).
        let twice = text.replace("\n[hosts.h1]", &format!("{rollout}\n[hosts.h1]"));
        assert!(whole(&twice).is_err());
        assert_exact_at_every_cut(&twice);
    }

    #[test]
    fn texts_toml_refuses_are_never_merged() {
        let refused = [
            // The same host, or a table defined twice across pieces.
            "[hosts.a]\naz = \"x\"\n[hosts.a]\naz = \"y\"\n",
            "[hosts]\n[hosts.a]\naz = \"x\"\n[hosts]\n[hosts.b]\naz = \"y\"\n",
            // An inline or dotted `hosts` extended by a later header.
            "hosts = { a = { az = \"x\" } }\n[hosts.b]\naz = \"y\"\n",
            "hosts.a.az = \"x\"\n[hosts]\n[hosts.b]\naz = \"y\"\n",
            // An unknown root table defined twice, a static array then a table.
            "[other]\nx = 1\n[hosts.a]\n[other]\ny = 2\n",
            "hosts = []\n[hosts.a]\n",
            // A header on the line of a key, which pieces parsed alone would accept.
            "schema = 1[hosts.a]\naz = \"x\"\n",
            // An inline `hosts` that a cut at the start would read as a later piece's.
            "hosts = { a = {} }\n[hosts.b]\n",
            // A cut line inside a multi-line string or a multi-line array.
            "x = \"\"\"\n[hosts.a]\n\"\"\"\n[hosts.a]\n[hosts.a]\n",
            "x = [\n[hosts.a]\n]\n[hosts.b]\n[hosts.b]\n",
        ];
        assert_toml_verdict_and_exact_cuts(&refused, false);
    }

    #[test]
    fn tricky_valid_texts_merge_exactly_or_not_at_all() {
        let valid = [
            // `[hosts]` defined once, in the first piece or implied everywhere.
            "[hosts]\n[hosts.a]\naz = \"x\"\n[hosts.b]\naz = \"y\"\n",
            "[hosts.a]\naz = \"x\"\n[hosts]\n[hosts.b]\naz = \"y\"\n",
            // A sub-table of one host after another host, a host split around products.
            "[hosts.a]\naz = \"x\"\n[hosts.b]\naz = \"y\"\n[hosts.a.extra]\nz = 1\n",
            "[hosts.a]\naz = \"x\"\n[products.p]\ndomain = \"d\"\n[hosts.b]\n[products.q]\n",
            // Cut lines inside strings and arrays of a valid text.
            "x = \"\"\"\n[hosts.a]\n\"\"\"\n[hosts.b]\n[hosts.c]\n",
            "x = '''\n[hosts.a]\n'''\n[hosts.a]\n[hosts.b]\n",
            "[hosts.a]\nproducts = [\n\"p\"]\n[hosts.b]\n",
            // Keys of a host that would read as root keys if a piece started with them.
            "[hosts.a]\naz = \"x\"\naddress = \"y\"\n[hosts.b]\n",
            // Dotted keys that make `hosts` before any header.
            "hosts.a.az = \"x\"\n[hosts.b]\naz = \"y\"\n",
        ];
        assert_toml_verdict_and_exact_cuts(&valid, true);
    }

    #[test]
    fn cuts_fall_on_host_and_product_lines_near_even_shares() {
        let mut text = String::from("schema = 1\ngeneration = 1\n");
        for i in 0..2000 {
            text.push_str(&format!(
                "\n[hosts.h{i}]\naddress = \"10.0.{}.{}\"\n",
                i / 250,
                i % 250
            ));
        }
        let cuts = cuts(&text, 4);
        assert_eq!(cuts.len(), 3);
        for (share, &cut) in cuts.iter().enumerate() {
            assert!(text[cut..].starts_with("[hosts.h"), "cut at {cut}");
            let ideal = text.len() / 4 * (share + 1);
            assert!(
                cut >= ideal && cut - ideal < 64,
                "cut {cut} far from {ideal}"
            );
        }
        let map = parse_at(&text, &cuts).expect("merges");
        assert_eq!(Ok(&map), whole(&text).as_ref());
        assert_eq!(map.hosts.len(), 2000);
    }

    /// A valid map of `hosts` web hosts over 200 products.
    fn large_map(hosts: usize) -> String {
        let mut text = String::from("schema = 1\ngeneration = 7\n");
        for p in 0..200 {
            text.push_str(&format!(
                "\n[products.p{p}]\ndomain = \"p{p}.example\"\ndocroot = \"/srv/p{p}\"\n"
            ));
        }
        for h in 0..hosts {
            text.push_str(&format!(
                "\n[hosts.web-{h}]\naddress = \"10.1.{}.{}\"\naz = \"a\"\nroles = [\"web\"]\n\
                 products = [\"p{}\"]\n",
                h / 250,
                h % 250,
                h % 200
            ));
        }
        text
    }

    #[test]
    fn a_large_map_is_parsed_on_several_threads_as_on_one() {
        let text = large_map(6000);
        assert!(
            text.len() >= 2 * MIN_PIECE,
            "{} bytes is too small",
            text.len()
        );
        let cores = thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        match parse(&text) {
            Some(map) => assert_eq!(Ok(map), whole(&text)),
            None => assert_eq!(cores, 1, "{cores} cores but parsed on one thread"),
        }
        let public = crate::rolemap::types::parse(&text).expect("valid");
        assert_eq!(Ok(public), whole(&text));
    }

    #[test]
    fn load_for_validates_and_resolves_as_load_then_resolve() {
        use crate::identity::Identity;
        use crate::rolemap::{load, load_for, resolve, Error};
        let identity = |id: &str| Identity {
            id: id.to_string(),
            address: "10.1.0.5".to_string(),
            az: "a".to_string(),
            region: "r".to_string(),
            instance_type: None,
            ami_id: None,
        };
        let small = large_map(10);
        let large = large_map(MIN_HOSTS + 10);
        for text in [&small, &large] {
            let expected = load(text.as_bytes()).expect("valid");
            for id in ["web-5", "web-unknown"] {
                let (map, resolution) = load_for(text.as_bytes(), &identity(id)).expect("valid");
                assert_eq!(resolution, resolve(&expected, &identity(id)));
                assert_eq!(map, expected);
            }
            // A duplicate address and a product not in the map: both reported, as by load.
            let bad = text
                .replacen("address = \"10.1.0.2\"", "address = \"10.1.0.1\"", 1)
                .replacen("products = [\"p9\"]", "products = [\"nope\"]", 1);
            let Err(Error::Invalid { issues: expected }) = load(bad.as_bytes()) else {
                panic!("load accepts the bad map");
            };
            assert_eq!(expected.len(), 2, "{expected:?}");
            match load_for(bad.as_bytes(), &identity("web-5")) {
                Err(Error::Invalid { issues }) => assert_eq!(issues, expected),
                other => panic!("load_for gave {other:?}"),
            }
        }
    }

    #[test]
    fn only_exact_bare_host_and_product_lines_are_cut_lines() {
        for line in ["[hosts.a-1_B]\n", "[products.p]\r\n"] {
            assert!(opens_shared_table(line.as_bytes()), "{line:?}");
        }
        for line in [
            "[hosts]\n",
            "[hosts.]\n",
            "[hosts.\"a\"]\n",
            "[hosts.a.b]\n",
            "[hosts.a] # c\n",
            "[[hosts.a]]\n",
            " [hosts.a]\n",
            "[other.a]\n",
            "[hosts.a]",
        ] {
            assert!(!opens_shared_table(line.as_bytes()), "{line:?}");
        }
    }
}
