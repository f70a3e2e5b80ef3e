//! Stage 3's parse without a tree (issue 13). toml reads a document into a tree of every
//! table, key and value, then serde reads the tree into [`RoleMap`]: for a 10,000-host map
//! the tree is some 30 times the text and building it is most of the parse. [`parse`] builds
//! the typed map straight from the events of toml_parser, the lexer and parser toml itself
//! uses, for maps written the way rolecall writes them: `[products.P]`,
//! `[products.P.database]`, `[products.P.groups.G]`, `[products.P.users.U]`,
//! `[products.P.secrets]`, `[hosts.ID]` and `[rollout]` headers over `key = value` lines of
//! strings, integers, a datetime and arrays of them, root keys first.
//!
//! Anything else gives `None`, and the caller parses the whole text with toml, which decides
//! and words every error: a TOML error, dotted keys, inline tables, arrays of tables, a table
//! defined before its parent or twice, a key twice, an unknown key, a value of the wrong
//! type. So a `Some` is what toml gives; the unit tests and the fuzz target `map` compare
//! the two.
//!
//! The text is read a piece at a time (a piece ends before a line that starts with `[`): a
//! piece of the plain lines a published map has is scanned line by line ([`lines`]), any
//! other is lexed, so only one piece's tokens are held (one a half: a large text is read in
//! two halves side by side, cut as pieces are). A piece that ends inside a multi-line string
//! or array is a TOML error of that piece, so the pieces parse without error exactly when
//! they read as the whole text does.

use foldhash::HashSet;
use std::borrow::Cow;
use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use toml::value::Datetime;
use toml_parser::decoder::{Encoding, ScalarKind};
use toml_parser::parser::{parse_document, EventReceiver};
use toml_parser::{ErrorSink, ParseError, Raw, Source, Span};

use super::types::{Database, Group, Host, Name, Names, Product, RoleMap, Rollout, User};

mod lines;

/// About how many bytes are lexed at a time: a piece's tokens take some eight times its
/// size, and a text read in halves has two pieces' at once.
const PIECE: usize = 32 * 1024;

/// From this size on, the second half of the text is read on another thread while this one
/// reads the first (the parse is most of stage 3 on a large map, and one core).
const SPLIT: usize = 256 * 1024;

/// The map in `text`, or `None` when `text` is not written as above or toml would refuse it.
///
/// A large text is read in two halves side by side, the second cut where a line opens a
/// table, as the pieces are. The halves' tables are joined as the map would have them: a
/// table the first half has too is refused, as TOML refuses it. A second half that does not
/// read alone (a product's table whose product the first half defines, or an error of its
/// own) is read again after the first, so the map is always the one read in one go.
pub fn parse(text: &str) -> Option<RoleMap> {
    parse_cut(text, cut(text))
}

/// [`parse`] with the second half from byte `at`: the start of a line that opens a table,
/// or the text's length (no second half).
fn parse_cut(text: &str, at: usize) -> Option<RoleMap> {
    let (first, second) = text.split_at(at);
    debug_assert!(second.is_empty() || second.starts_with('['));
    let (later, build) = crate::threads::join(
        !second.is_empty(),
        || read(Build::new()?, second),
        || read(Build::new()?, first),
    );
    let mut build = build?;
    match later.and_then(Build::closed) {
        Some(later) => build.join(later)?,
        None => build = read(build, second)?,
    }
    build.finish()
}

/// The pieces of `text` read into `build`; `None` when a piece is refused. A piece of lines
/// written as rolecall writes them is read line by line ([`lines`]), any other from
/// toml_parser's events.
fn read(mut build: Build, text: &str) -> Option<Build> {
    let mut tokens = Vec::new();
    let mut scanned = Vec::new();
    for piece in pieces(text) {
        scanned.clear();
        if lines::scan(piece, &mut scanned).is_some() {
            build.lines(scanned.drain(..))?;
            continue;
        }
        let source = Source::new(piece);
        tokens.clear();
        tokens.extend(source.lex());
        let mut reader = Reader::new(source, &mut build);
        let mut error: Option<ParseError> = None;
        parse_document(&tokens, &mut reader, &mut error);
        if reader.refused || error.is_some() {
            return None;
        }
    }
    Some(build)
}

/// Where [`parse`] cuts `text` in two: at the first line opening a table after its middle;
/// at its end (no second half) when it is smaller than [`SPLIT`] or has no such line.
fn cut(text: &str) -> usize {
    match text.len() >= SPLIT {
        true => header_from(text, text.len() / 2),
        false => text.len(),
    }
}

/// Where the first line that opens a table after byte `from` starts (after its newline);
/// the text's length when there is none.
fn header_from(text: &str, from: usize) -> usize {
    let bytes = text.as_bytes();
    bytes[from..]
        .windows(2)
        .position(|pair| pair == b"\n[")
        .map_or(bytes.len(), |at| from + at + 1)
}

/// `text` in pieces of about [`PIECE`] bytes, each but the last ending with a newline that
/// a `[` follows.
fn pieces(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (piece, after) = rest.split_at(header_from(rest, PIECE.min(rest.len())));
        rest = after;
        Some(piece)
    })
}

/// A decoded value.
enum Value<'s> {
    Str(Cow<'s, str>),
    Int(i64),
    Datetime(Datetime),
    Array(Vec<Value<'s>>),
}

impl<'s> Value<'s> {
    /// A `String`, or a [`Name`] kept inline.
    fn string<T: From<Cow<'s, str>>>(self) -> Option<T> {
        match self {
            Value::Str(text) => Some(T::from(text)),
            _ => None,
        }
    }

    fn int(self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(n),
            _ => None,
        }
    }

    fn datetime(self) -> Option<Datetime> {
        match self {
            Value::Datetime(at) => Some(at),
            _ => None,
        }
    }

    fn strings<T: From<Cow<'s, str>>>(self) -> Option<Vec<T>> {
        self.array()?.into_iter().map(Value::string).collect()
    }

    fn ints(self) -> Option<Vec<i64>> {
        self.array()?.into_iter().map(Value::int).collect()
    }

    fn array(self) -> Option<Vec<Self>> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// The events of one piece, turned into calls on the [`Build`].
struct Reader<'s, 'b> {
    source: Source<'s>,
    build: &'b mut Build,
    /// The keys of the header or the `key =` being read.
    keys: Vec<Cow<'s, str>>,
    header: bool,
    /// The key whose value is being read.
    key: Option<Cow<'s, str>>,
    /// The keys the open table has: TOML refuses a key twice.
    seen: Vec<Cow<'s, str>>,
    /// The items of the array being read.
    array: Option<Vec<Value<'s>>>,
    refused: bool,
}

impl<'s, 'b> Reader<'s, 'b> {
    fn new(source: Source<'s>, build: &'b mut Build) -> Self {
        Self {
            source,
            build,
            keys: Vec::new(),
            header: false,
            key: None,
            seen: Vec::new(),
            array: None,
            refused: false,
        }
    }

    fn raw(&self, span: Span, encoding: Option<Encoding>) -> Option<Raw<'s>> {
        let text = self.source.input().get(span.start()..span.end())?;
        Some(Raw::new_unchecked(text, encoding, span))
    }

    fn decode(
        &self,
        span: Span,
        encoding: Option<Encoding>,
        error: &mut dyn ErrorSink,
    ) -> Option<Value<'s>> {
        let mut text = Cow::Borrowed("");
        Some(
            match self.raw(span, encoding)?.decode_scalar(&mut text, error) {
                ScalarKind::String => Value::Str(text),
                ScalarKind::Integer(radix) => {
                    Value::Int(i64::from_str_radix(&text, radix.value()).ok()?)
                }
                ScalarKind::DateTime => Value::Datetime(text.parse().ok()?),
                ScalarKind::Boolean(_) | ScalarKind::Float => return None,
            },
        )
    }

    /// A whole value for the key before its `=`.
    fn value(&mut self, value: Value<'s>) {
        let Some(key) = self.key.take() else {
            return self.refuse();
        };
        if self.build.set_once(&mut self.seen, key, value).is_none() {
            self.refuse();
        }
    }

    fn refuse(&mut self) {
        self.refused = true;
    }
}

impl EventReceiver for Reader<'_, '_> {
    fn std_table_open(&mut self, _: Span, _: &mut dyn ErrorSink) {
        self.header = true;
        self.keys.clear();
        self.seen.clear();
    }

    fn std_table_close(&mut self, _: Span, _: &mut dyn ErrorSink) {
        self.header = false;
        if !self.refused && self.build.open(&self.keys).is_none() {
            self.refuse();
        }
        self.keys.clear();
    }

    fn array_table_open(&mut self, _: Span, _: &mut dyn ErrorSink) {
        self.refuse();
    }

    fn inline_table_open(&mut self, _: Span, _: &mut dyn ErrorSink) -> bool {
        self.refuse();
        false
    }

    fn array_open(&mut self, _: Span, _: &mut dyn ErrorSink) -> bool {
        if self.array.is_some() {
            self.refuse();
            return false;
        }
        self.array = Some(Vec::new());
        true
    }

    fn array_close(&mut self, _: Span, _: &mut dyn ErrorSink) {
        if let (false, Some(items)) = (self.refused, self.array.take()) {
            self.value(Value::Array(items));
        }
    }

    fn simple_key(&mut self, span: Span, encoding: Option<Encoding>, error: &mut dyn ErrorSink) {
        let Some(raw) = self.raw(span, encoding) else {
            return self.refuse();
        };
        let mut key = Cow::Borrowed("");
        raw.decode_key(&mut key, error);
        self.keys.push(key);
    }

    fn key_sep(&mut self, _: Span, _: &mut dyn ErrorSink) {
        if !self.header {
            self.refuse();
        }
    }

    fn key_val_sep(&mut self, _: Span, _: &mut dyn ErrorSink) {
        match (self.keys.pop(), self.keys.is_empty()) {
            (Some(key), true) => self.key = Some(key),
            _ => self.refuse(),
        }
    }

    fn scalar(&mut self, span: Span, encoding: Option<Encoding>, error: &mut dyn ErrorSink) {
        if self.refused {
            return;
        }
        let Some(value) = self.decode(span, encoding, error) else {
            return self.refuse();
        };
        match &mut self.array {
            Some(items) => items.push(value),
            None => self.value(value),
        }
    }

    fn comment(&mut self, span: Span, error: &mut dyn ErrorSink) {
        match self.raw(span, None) {
            Some(raw) => raw.decode_comment(error),
            None => self.refuse(),
        }
    }

    fn newline(&mut self, span: Span, error: &mut dyn ErrorSink) {
        match self.raw(span, None) {
            Some(raw) => raw.decode_newline(error),
            None => self.refuse(),
        }
    }

    fn error(&mut self, _: Span, _: &mut dyn ErrorSink) {
        self.refuse();
    }
}

/// The table whose `key = value` lines are being read, built apart and added to the map
/// when the next header opens (or the text ends).
enum Table {
    Root,
    Product(String, Product),
    Database(String, Database),
    Group(String, String, Group),
    User(String, String, User),
    Secrets(String, std::collections::BTreeMap<String, String>),
    Host(Name, Host),
    Rollout(Rollout),
}

/// The map so far, kept from piece to piece.
struct Build {
    map: RoleMap,
    table: Table,
    /// Products whose `[products.P.secrets]` was read.
    secrets: BTreeSet<String>,
    /// The hosts read so far, in the text's order: the tree is built from them once, at the
    /// end, instead of a search from its root for each of them (issue 13).
    hosts: Vec<(Name, Host)>,
    /// Hosts' lists of roles and products.
    lists: Lists,
    blank: Blank,
}

/// What serde makes of an empty table of each type: the values of absent keys.
struct Blank {
    product: Product,
    database: Database,
    group: Group,
    user: User,
    host: Host,
    rollout: Rollout,
}

fn blank<T: DeserializeOwned>() -> Option<T> {
    toml::from_str("").ok()
}

impl Build {
    fn new() -> Option<Self> {
        Some(Self {
            map: blank()?,
            table: Table::Root,
            secrets: BTreeSet::new(),
            hosts: Vec::new(),
            lists: Lists::default(),
            blank: Blank {
                product: blank()?,
                database: blank()?,
                group: blank()?,
                user: blank()?,
                host: blank()?,
                rollout: blank()?,
            },
        })
    }

    /// The scanned lines of one piece: each header opens its table, each key is set once.
    fn lines<'s>(&mut self, scanned: impl Iterator<Item = lines::Line<'s>>) -> Option<()> {
        let (mut keys, mut seen) = (Vec::new(), Vec::new());
        for line in scanned {
            match line {
                lines::Line::Header(header) => {
                    keys.clear();
                    keys.extend(header.split('.'));
                    self.open(&keys)?;
                    seen.clear();
                }
                lines::Line::Pair(key, value) => self.set_once(&mut seen, key, value)?,
            }
        }
        Some(())
    }

    /// Open the table of a header's `keys`, after adding the open one to the map.
    fn open<K: AsRef<str>>(&mut self, keys: &[K]) -> Option<()> {
        self.close()?;
        let name = |i: usize| keys.get(i).map(|key| key.as_ref().to_string());
        let blank = &self.blank;
        self.table = match (keys.len(), keys.first()?.as_ref(), keys.get(2)) {
            (1, "rollout", _) => Table::Rollout(blank.rollout.clone()),
            (2, "hosts", _) => Table::Host(keys.get(1)?.as_ref().into(), blank.host.clone()),
            (2, "products", _) => Table::Product(name(1)?, blank.product.clone()),
            (3, "products", Some(sub)) => match sub.as_ref() {
                "database" => Table::Database(name(1)?, blank.database.clone()),
                "secrets" => Table::Secrets(name(1)?, Default::default()),
                _ => return None,
            },
            (4, "products", Some(sub)) => match sub.as_ref() {
                "groups" => Table::Group(name(1)?, name(3)?, blank.group.clone()),
                "users" => Table::User(name(1)?, name(3)?, blank.user.clone()),
                _ => return None,
            },
            _ => return None,
        };
        Some(())
    }

    /// Add the open table to the map, unless the map has it already (TOML refuses a table
    /// defined twice) or it is a product's and the product is not defined before it.
    fn close(&mut self) -> Option<()> {
        match std::mem::replace(&mut self.table, Table::Root) {
            Table::Root => {}
            Table::Product(name, product) => none(self.map.products.insert(name, product))?,
            Table::Database(name, database) => {
                let slot = &mut self.map.products.get_mut(&name)?.database;
                none(slot.replace(database))?;
            }
            Table::Group(name, group, value) => {
                none(
                    self.map
                        .products
                        .get_mut(&name)?
                        .groups
                        .insert(group, value),
                )?;
            }
            Table::User(name, user, value) => {
                none(self.map.products.get_mut(&name)?.users.insert(user, value))?;
            }
            Table::Secrets(name, secrets) => {
                let product = self.map.products.get_mut(&name)?;
                self.secrets.insert(name).then_some(())?;
                product.secrets = secrets;
            }
            Table::Host(id, host) => self.hosts.push((id, host)),
            Table::Rollout(rollout) => none(self.map.rollout.replace(rollout))?,
        }
        Some(())
    }

    /// [`Build::set`], unless the open table's keys `seen` so far have `key`: TOML refuses a
    /// key twice.
    fn set_once<K: AsRef<str> + PartialEq>(
        &mut self,
        seen: &mut Vec<K>,
        key: K,
        value: Value<'_>,
    ) -> Option<()> {
        if seen.contains(&key) {
            return None;
        }
        self.set(key.as_ref(), value)?;
        seen.push(key);
        Some(())
    }

    /// Set `key` of the open table: the schema's keys, one line each.
    fn set(&mut self, key: &str, value: Value<'_>) -> Option<()> {
        match (&mut self.table, key) {
            (Table::Root, "schema") => self.map.schema = value.int()?,
            (Table::Root, "generation") => self.map.generation = value.int()?,
            (Table::Product(_, product), "domain") => product.domain = value.string()?,
            (Table::Product(_, product), "aliases") => product.aliases = value.strings()?,
            (Table::Product(_, product), "docroot") => product.docroot = value.string()?,
            (Table::Product(_, product), "health_path") => product.health_path = value.string()?,
            (Table::Database(_, db), "name") => db.name = value.string()?,
            (Table::Database(_, db), "master") => db.master = value.string()?,
            (Table::Database(_, db), "replicas") => db.replicas = value.strings()?,
            (Table::Database(_, db), "backup") => db.backup = Some(value.string()?),
            (Table::Database(_, db), "backup_url") => db.backup_url = Some(value.string()?),
            (Table::Database(_, db), "removed") => db.removed = value.strings()?,
            (Table::Group(_, _, group), "gid") => group.gid = value.int()?,
            (Table::User(_, _, user), "uid") => user.uid = value.int()?,
            (Table::User(_, _, user), "group") => user.group = value.string()?,
            (Table::User(_, _, user), "home") => user.home = value.string()?,
            (Table::User(_, _, user), "shell") => user.shell = value.string()?,
            (Table::User(_, _, user), "groups") => user.groups = value.strings()?,
            (Table::Secrets(_, secrets), _) => none(secrets.insert(key.into(), value.string()?))?,
            (Table::Host(_, host), "address") => host.address = value.string()?,
            (Table::Host(_, host), "az") => host.az = value.string()?,
            (Table::Host(_, host), "roles") => host.roles = self.lists.intern(ROLES, value)?,
            (Table::Host(_, host), "products") => {
                host.products = self.lists.intern(PRODUCTS, value)?;
            }
            (Table::Host(_, host), "db_port") => host.db_port = Some(value.int()?.try_into().ok()?),
            (Table::Rollout(rollout), "waves") => rollout.waves = value.ints()?,
            (Table::Rollout(rollout), "bake") => rollout.bake = value.string()?,
            (Table::Rollout(rollout), "start") => rollout.start = Some(value.datetime()?),
            (Table::Rollout(rollout), "max_failed") => rollout.max_failed = value.int()?,
            _ => return None,
        }
        Some(())
    }

    /// The map, once its open table is added and its hosts are in their tree: `None` when a
    /// host's table is defined twice (TOML refuses it).
    fn finish(mut self) -> Option<RoleMap> {
        self.close()?;
        let mut hosts = std::mem::take(&mut self.hosts);
        // Sorted through a table of keys, the hosts (130 bytes each) swapped into place once
        // it is, instead of moved and their ids compared by a sort of the hosts themselves:
        // an id's first eight bytes, as a number, order most pairs (issue 13: that sort of a
        // 10,000-host map's hosts was a millisecond of its parse).
        hosts.sort_by_cached_key(|(id, _)| (head(id), id.clone()));
        if hosts.windows(2).any(|pair| pair[0].0 == pair[1].0) {
            return None;
        }
        self.map.hosts = hosts.into_iter().collect();
        Some(self.map)
    }

    /// This build with its open table added: `None` when that table is refused.
    fn closed(mut self) -> Option<Self> {
        self.close()?;
        Some(self)
    }

    /// Add the tables of `later`, the build of the text after this one's (which starts with
    /// a header, so it has no root keys): each table must be new to this map (a host's is
    /// checked when the map is finished). Its hosts keep their own copies of the lists they
    /// name.
    fn join(&mut self, later: Build) -> Option<()> {
        self.close()?;
        let Build {
            map: RoleMap {
                products, rollout, ..
            },
            mut hosts,
            ..
        } = later;
        for (name, product) in products {
            none(self.map.products.insert(name, product))?;
        }
        self.hosts.reserve_exact(hosts.len());
        self.hosts.append(&mut hosts);
        if let Some(rollout) = rollout {
            none(self.map.rollout.replace(rollout))?;
        }
        Some(())
    }
}

/// The [`Lists`] slot of hosts' `roles` and of their `products`.
const ROLES: usize = 0;
const PRODUCTS: usize = 1;

/// Every list of roles or products read so far, one copy each.
#[derive(Default)]
struct Lists {
    all: HashSet<Names>,
    /// The last list of each key: the hosts of a pool follow each other in a map and list
    /// the same names, which are compared here without being hashed.
    last: [Option<Names>; 2],
}

impl Lists {
    /// The list of names `value` holds for the key `slot` ([`ROLES`] or [`PRODUCTS`]), the
    /// copy of one read before when there is one.
    fn intern(&mut self, slot: usize, value: Value<'_>) -> Option<Names> {
        let last = &mut self.last[slot];
        if let Some(known) = last.as_ref().filter(|known| same(&value, known)) {
            return Some(Names::clone(known));
        }
        let names: Vec<Name> = value.strings()?;
        let names = match self.all.get(names.as_slice()) {
            Some(known) => Names::clone(known),
            None => {
                let names = Names::from(names);
                self.all.insert(Names::clone(&names));
                names
            }
        };
        Some(Names::clone(last.insert(names)))
    }
}

/// Whether `value` is an array of the strings `names`.
fn same(value: &Value<'_>, names: &[Name]) -> bool {
    let Value::Array(items) = value else {
        return false;
    };
    items.len() == names.len()
        && items.iter().zip(names).all(|(item, name)| match item {
            Value::Str(text) => text.as_ref() == name.as_str(),
            _ => false,
        })
}

/// `Some` when there was nothing before.
fn none<T>(before: Option<T>) -> Option<()> {
    before.is_none().then_some(())
}

/// The first eight bytes of `id` (zeros after a shorter one) as a big-endian number: two
/// ids whose heads differ are in the order of their heads; equal heads leave the order to
/// the whole ids.
fn head(id: &str) -> u64 {
    let mut bytes = [0; 8];
    let n = id.len().min(8);
    bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
    u64::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rolemap::sample::large_map;

    /// The whole text parsed by toml, which the caller falls back to.
    fn whole(text: &str) -> Result<RoleMap, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Whether `text` was read directly; when it was, the map is toml's.
    fn agrees(text: &str) -> bool {
        match (parse(text), whole(text)) {
            (Some(map), Ok(expected)) => {
                assert_eq!(map, expected, "read otherwise than toml reads it:\n{text}");
                true
            }
            (Some(_), Err(e)) => panic!("read a text toml refuses ({e}):\n{text}"),
            (None, _) => false,
        }
    }

    /// Every key of the map's schema, in each way TOML may spell a key or a value.
    const FULL: &str = "# a fleet\r\nschema = 1\r\ngeneration = 1_000\n\n\
        [products.shop]\ndomain = \"shop.example\" # main\naliases = [\n  'www.shop.example', # one\n  \"\\u0073hop.example\",\n]\n\
        docroot = '/srv/shop'\nhealth_path = \"\"\"/health\"\"\"\n\n\
        [products.shop.database]\nname = \"shop\"\nmaster = \"db-1\"\nreplicas = [\"db-2\", \"db-3\"]\n\
        backup = \"db-4\"\nbackup_url = \"s3://b/shop/\"\nremoved = [\"db-0\"]\n\n\
        [products.shop.groups.deploy]\ngid = 0x7d0\n\n\
        [products.shop.users.app]\nuid = +2000\ngroup = \"deploy\"\nhome = \"/srv/app\"\n\
        shell = \"/bin/sh\"\ngroups = [\"adm\"]\n\n\
        [products.shop.secrets]\ndb_password = \"ssm:/shop/db\"\n\"api key\" = \"secretsmanager:shop#api\"\n\n\
        [products.\"blog\"]\n\n\
        [ hosts . db-1 ]\naddress = \"10.0.0.1\"\naz = \"a\"\nroles = [\"db\"]\nproducts = [\"shop\"]\ndb_port = 3307\n\n\
        [hosts.'web 1']\n\"address\" = \"10.0.0.2\"\nroles = []\n\n\
        [rollout]\nwaves = [10, 50, 100]\nbake = \"10m\"\nstart = 2026-12-06T10:00:00Z\nmax_failed = 0o2\n";

    #[test]
    fn maps_written_as_rolecall_writes_them_are_read_directly_as_toml_reads_them() {
        let full = whole(FULL).expect("valid TOML");
        assert_eq!(full.products["shop"].users["app"].uid, 2000);
        assert_eq!(full.products["blog"].health_path, "/", "serde's default");
        let written = full.to_toml().expect("serializes");
        let large = large_map(3000);
        for text in [FULL, &written, super::super::SAMPLE, &large, ""] {
            assert!(agrees(text), "not read directly:\n{text}");
        }
    }

    /// Hosts are ordered by their whole ids, not only the first eight bytes the sort keys on
    /// first: ids that share those bytes, or are a prefix of another, or are not ASCII, read
    /// as toml reads them; the same id twice, however far apart, is refused (toml refuses a
    /// table defined twice), including after one that shares its first eight bytes.
    #[test]
    fn hosts_are_sorted_by_their_whole_ids_and_an_id_twice_is_refused() {
        let ids = [
            "web-12345",
            "web-1234",
            "web-1234a",
            "web",
            "web-",
            "wéb-1",
            "web-12344",
            "a",
            "web-1234é",
            "db-7-0",
        ];
        let host = |id: &str| format!("[hosts.\"{id}\"]\naddress = \"10.0.0.1\"\n\n");
        let mut text = String::from("schema = 1\ngeneration = 1\n\n");
        ids.iter().for_each(|id| text += &host(id));
        assert!(agrees(&text), "not read directly:\n{text}");
        let map = parse(&text).expect("read directly");
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        let read: Vec<&str> = map.hosts.keys().map(Name::as_str).collect();
        assert_eq!(read, sorted);
        for twice in ["web-1234", "web-12345", "a", "wéb-1"] {
            let doubled = format!("{text}{}", host(twice));
            assert!(parse(&doubled).is_none(), "{twice} twice was read");
            assert!(whole(&doubled).is_err(), "toml reads {twice} twice");
        }
    }

    /// Hosts that list the same roles or products share one copy of the list.
    #[test]
    fn hosts_listing_the_same_names_share_one_list() {
        let text = large_map(300);
        let map = parse(&text).expect("read directly");
        let (a, b, c) = (&map.hosts["web-0"], &map.hosts["web-1"], &map.hosts["db-0"]);
        assert_eq!(a.roles, b.roles);
        assert!(
            std::sync::Arc::ptr_eq(&a.roles, &b.roles),
            "two copies of [\"web\"]"
        );
        assert!(!std::sync::Arc::ptr_eq(&a.roles, &c.roles));
        assert_eq!(
            (&*a.roles, &*c.roles),
            (&["web".into()][..], &["db".into()][..])
        );
        assert_ne!(a.products, b.products);
        assert!(std::sync::Arc::ptr_eq(
            &a.products,
            &map.hosts["web-200"].products
        ));
    }

    /// The pieces of lines written as rolecall writes them are scanned, the others read from
    /// the parser's events, and one text may have both.
    #[test]
    fn scanned_pieces_and_pieces_read_from_events_make_one_map() {
        let text = large_map(3000);
        let mut scanned = Vec::new();
        for piece in pieces(&text) {
            assert!(lines::scan(piece, &mut scanned).is_some(), "not scanned");
        }
        let escaped = text.replacen("\"p1.example\"", "\"p\\u0031.example\"", 1);
        let dated = format!("{text}\n[rollout]\nwaves = [10, 100]\nstart = 2026-12-06T10:00:00Z\n");
        let twice = format!("{text}\n[rollout]\nwaves = [10, 100]\nwaves = [10, 100]\n");
        for odd in [&escaped, &dated] {
            assert!(agrees(odd), "not read directly");
        }
        assert!(!agrees(&twice), "a key twice in a scanned piece");
        let map = parse(&escaped).expect("read directly");
        assert_eq!(map.products["p1"].domain, "p1.example");
        assert_eq!(map.hosts.len(), 3000 + 67);
    }

    #[test]
    fn texts_toml_refuses_are_never_read() {
        for text in REFUSED {
            assert!(whole(text).is_err(), "toml accepts {text:?}");
            assert!(!agrees(text), "read {text:?}");
        }
        // Arrays nested deeper than any stack: refused at the second level, not recursed.
        let deep = format!(
            "[hosts.a]\nroles = {}{}\n",
            "[".repeat(200_000),
            "]".repeat(200_000)
        );
        assert!(!agrees(&deep));
    }

    #[test]
    fn valid_texts_written_otherwise_are_left_to_toml() {
        for text in OTHERS {
            assert!(whole(text).is_ok(), "toml refuses {text:?}");
            assert!(!agrees(text), "read {text:?} directly");
            assert_eq!(
                crate::rolemap::types::parse(text).map_err(|e| e.to_string()),
                whole(text),
                "the fallback"
            );
        }
    }

    #[test]
    fn pieces_end_before_a_line_that_opens_a_table() {
        let text = large_map(6000);
        let cut: Vec<&str> = pieces(&text).collect();
        assert!(cut.len() >= 4, "{} pieces", cut.len());
        assert_eq!(cut.concat(), text);
        for pair in cut.windows(2) {
            assert!(pair[0].len() >= PIECE && pair[0].ends_with('\n'));
            assert!(pair[1].starts_with('['));
        }
        assert!(agrees(&text), "a large map is read directly");
        assert_eq!(pieces(&text[..10]).collect::<Vec<_>>(), [&text[..10]]);
        assert_eq!(pieces("").count(), 0);
    }

    /// Cut at every line that opens a table (where [`cut`] may), each text reads as it does
    /// in one go: the same map, or refused.
    #[test]
    fn a_text_cut_at_any_table_reads_as_in_one_go() {
        let small = large_map(5);
        let more = [
            FULL,
            super::super::SAMPLE,
            &small,
            "[products.p]\n[hosts.a]\n[products.p.database]\nname = \"d\"\n",
            "[hosts.a]\nroles = [\n[\"web\"]]\n",
        ];
        let mut cuts = 0;
        for text in REFUSED.iter().chain(OTHERS).chain(&more) {
            let whole = parse_cut(text, text.len());
            for (at, _) in text.match_indices("\n[") {
                assert_eq!(
                    parse_cut(text, at + 1),
                    whole,
                    "cut at {}: {text:?}",
                    at + 1
                );
                cuts += 1;
            }
        }
        assert!(cuts > 300, "only {cuts} cuts");
    }

    /// A large map is read in two halves; what the second adds is joined as one read would.
    #[test]
    fn the_halves_of_a_large_map_read_as_the_whole_text_does() {
        let text = large_map(4000);
        let (first, second) = text.split_at(cut(&text));
        assert!(second.starts_with("[hosts.") && first.len() > SPLIT / 2);
        let host = "\n[hosts.web-3999]\naddress = \"10.9.9.9\"\n";
        assert!(
            first.contains("[hosts.web-3999]"),
            "a host of the first half"
        );
        // A new product and its tables, and a table of a product the first half defines
        // (the second half alone refuses it: it is read again after the first).
        let late =
            "\n[products.late]\ndomain = \"late.example\"\n[products.late.groups.g]\ngid = 7\n";
        let earlier = "\n[products.p0.groups.g]\ngid = 8\n";
        for tail in [late, earlier, "\n[rollout]\nbake = \"1m\"\n"] {
            let joined = format!("{text}{tail}");
            assert!(agrees(&joined), "not read directly: {tail:?}");
        }
        let map = parse(&format!("{text}{late}{earlier}")).expect("read directly");
        assert_eq!(map.products["late"].groups["g"].gid, 7);
        assert_eq!(map.products["p0"].groups["g"].gid, 8);
        assert_eq!(map.hosts.len(), 4000 + 67);
        // A table of the first half defined again in the second is refused, as toml does.
        let rollout = "\n[rollout]\nbake = \"1m\"\n";
        let twice = [
            format!("{text}{host}"),
            format!("{text}\n[products.p1]\n"),
            format!("{}{rollout}\n{}{rollout}", first, second),
        ];
        for text in &twice {
            assert!(whole(text).is_err(), "toml accepts a table twice");
            assert!(!agrees(text), "a table twice read directly");
        }
    }

    /// As at a piece's end: where the halves would be cut inside a string, the text is left
    /// to toml, never read as tables.
    #[test]
    fn a_multi_line_string_across_the_halves_cut_is_never_misread() {
        let text = large_map(4000);
        let (first, second) = text.split_at(cut(&text));
        let (mut direct, mut left, mut inside) = (0, 0, 0);
        for pad in (0..600).step_by(5) {
            let text = format!(
                "{first}# {}\n[products.odd]\ndomain = \"\"\"\n[hosts.z]\n[hosts.y]\n\"\"\"\n\n{second}",
                "x".repeat(pad)
            );
            inside += usize::from(text[..cut(&text)].ends_with("\"\"\"\n"));
            if agrees(&text) {
                direct += 1;
            } else {
                left += 1;
            }
        }
        assert!(inside > 0, "never cut inside the string");
        assert!(
            direct > 0 && left > 0,
            "{direct} read directly, {left} left"
        );
    }

    #[test]
    fn a_multi_line_string_across_a_piece_end_is_never_misread() {
        // A product's domain with lines that open tables, at offsets all around the first
        // piece's end: where a piece would end inside it, the text is left to toml.
        let hosts = large_map(900);
        let at = hosts.find("\n[hosts.").expect("hosts") + 1;
        let (mut direct, mut left) = (0, 0);
        for shift in (0..400).step_by(7) {
            let pad = PIECE - 200 - at.min(PIECE - 200) + shift;
            let text = format!(
                "{}# {}\n[products.odd]\ndomain = \"\"\"\n[hosts.z]\n[hosts.y]\n\"\"\"\n\n{}",
                &hosts[..at],
                "x".repeat(pad),
                &hosts[at..]
            );
            if agrees(&text) {
                direct += 1;
            } else {
                left += 1;
            }
        }
        assert!(
            direct > 0 && left > 0,
            "{direct} read directly, {left} left"
        );
    }

    /// Texts toml refuses, each in a way the direct read must see.
    const REFUSED: &[&str] = &[
        // A key, a table or a header twice, in every kind of table.
        "schema = 1\nschema = 1\n",
        "[hosts.a]\naz = \"x\"\naz = \"x\"\n",
        "[hosts.a]\naz = \"x\"\n\"az\" = \"y\"\n",
        "[hosts.a]\n[products.p]\n[hosts.a]\n",
        "[products.p]\n[products.p]\n",
        "[products.p]\n[products.p.database]\n[products.p.database]\n",
        "[products.p]\n[products.p.groups.g]\n[products.p.groups.g]\n",
        "[products.p]\n[products.p.users.u]\n[products.p.users.u]\n",
        "[products.p]\n[products.p.secrets]\n[products.p.secrets]\n",
        "[products.p]\n[products.p.secrets]\na = \"x\"\na = \"y\"\n",
        "[rollout]\n[hosts.a]\n[rollout]\n",
        "[products.p.database]\n[products.p]\n[products.p.database]\n",
        // Values of the wrong type or out of range.
        "schema = \"1\"\n",
        "schema = true\n",
        "schema = 1.0\n",
        "generation = 9223372036854775808\n",
        "[hosts.a]\ndb_port = 65536\n",
        "[hosts.a]\ndb_port = -1\n",
        "[hosts.a]\nroles = [\"web\", 1]\n",
        "[hosts.a]\nroles = [[\"web\"]]\n",
        "[hosts.a]\naddress = 1979-05-27\n",
        "[rollout]\nstart = \"2026-12-06T10:00:00Z\"\n",
        "[rollout]\nwaves = [1, \"2\"]\n",
        "[products.p]\ndatabase = \"x\"\n[products.p.database]\n",
        // TOML errors.
        "schema = 1[hosts.a]\naz = \"x\"\n",
        "[hosts.a]\naz = \"\\q\"\n",
        "[hosts.a]\naz = \"x\n",
        "# a \u{7} bell\n",
        "[hosts.a]\naz = \"x\" \"y\"\n",
        "[hosts.a\n",
        "[hosts.a]\naz = 1979-13-45\n",
        "[hosts.a]\nroles = [\"a\" \"b\"]\n",
        "x = \"\"\"\n[hosts.a]\n\"\"\"\n[hosts.a]\n[hosts.a]\n",
        "hosts = { a = {} }\n[hosts.a]\n",
        "hosts = []\n[hosts.a]\n",
    ];

    /// Valid texts not written as rolecall writes maps: left to toml.
    const OTHERS: &[&str] = &[
        "hosts.a.az = \"x\"\n",
        "[hosts]\n[hosts.a]\naz = \"x\"\n",
        "[hosts.a]\naz = \"x\"\n[hosts.a.extra]\nz = 1\n",
        "[products.p.database]\nname = \"d\"\n[products.p]\ndomain = \"x\"\n",
        "[hosts.a]\nextra = true\n",
        "other = 1\n",
        "[[other]]\nx = 1\n",
        "[hosts.a]\nextra = { v4 = \"x\" }\n",
        "[products.p]\ndatabase = { name = \"d\" }\n",
        "[products.p.groups]\n",
        "x = \"\"\"\n[hosts.a]\n\"\"\"\n[hosts.b]\n",
    ];
}
