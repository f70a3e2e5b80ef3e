//! Which top-level names a template reads (`host`, `products`, `fleet`, `map`, `vars`,
//! `product`), and which parts of `product`, from its parsed form, so that a render puts
//! into the Tera context only what its templates use: serialising `fleet` and `products` of
//! a 10,000-host map for every reconcile costs more than rendering a host's files, and every
//! pool of 500 products more than rendering their virtual hosts (issue 13). Conservative:
//! anything it cannot follow (includes, macros, inheritance, computed subscripts, a whole
//! value) reads everything.

use std::collections::{BTreeMap, BTreeSet};

use tera::ast::{Expr, ExprVal, Node};

/// What a template reads from the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reads {
    /// These top-level names (and perhaps loop or `set` variables of its own), and these
    /// parts of `product`.
    Names(BTreeSet<String>, Wanted),
    /// Anything: the analysis could not tell.
    Everything,
}

impl Reads {
    /// Nothing read.
    pub fn none() -> Reads {
        Reads::Names(BTreeSet::new(), Wanted::default())
    }

    /// Whether `name` may be read.
    pub fn reads(&self, name: &str) -> bool {
        match self {
            Reads::Names(names, _) => names.contains(name),
            Reads::Everything => true,
        }
    }

    /// The parts of `product` that may be read.
    pub fn product(&self) -> Wanted {
        match self {
            Reads::Names(_, product) => product.clone(),
            Reads::Everything => Wanted::Whole,
        }
    }

    /// Both together.
    pub fn union(self, other: Reads) -> Reads {
        match (self, other) {
            (Reads::Names(mut a, p), Reads::Names(b, q)) => {
                a.extend(b);
                Reads::Names(a, p.union(q))
            }
            _ => Reads::Everything,
        }
    }
}

/// The parts of a value that may be read: all of it, or these fields (each with its parts).
/// `Fields` is never empty below the top: a path read to its end is `Whole`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// These fields.
    Fields(BTreeMap<String, Wanted>),
    /// Everything.
    Whole,
}

impl Default for Wanted {
    fn default() -> Wanted {
        Wanted::Fields(BTreeMap::new())
    }
}

impl Wanted {
    /// Add the read of `path` (`["pools", "memcached"]` for `product.pools.memcached`).
    pub(super) fn add(&mut self, path: &[&str]) {
        let Wanted::Fields(fields) = self else {
            return;
        };
        match path.split_first() {
            None => *self = Wanted::Whole,
            Some((first, rest)) => fields.entry((*first).to_string()).or_default().add(rest),
        }
    }

    /// Both together.
    fn union(self, other: Wanted) -> Wanted {
        match (self, other) {
            (Wanted::Fields(mut a), Wanted::Fields(b)) => {
                for (name, wanted) in b {
                    let mine = a.remove(&name).unwrap_or_default();
                    a.insert(name, mine.union(wanted));
                }
                Wanted::Fields(a)
            }
            _ => Wanted::Whole,
        }
    }

    /// What of the field `name` may be read, if anything.
    pub fn field(&self, name: &str) -> Option<&Wanted> {
        match self {
            Wanted::Fields(fields) => fields.get(name),
            Wanted::Whole => Some(&Wanted::Whole),
        }
    }
}

/// Whether the template `ast` may read a secret's value (SPEC §10): `secrets`, the whole
/// `product` or its `secrets`, or anything it cannot follow. Its file is then secret:
/// never diffed or logged, and never readable by others.
pub(super) fn secret(ast: &[Node]) -> bool {
    let mut walk = Walk::default();
    walk.nodes(ast);
    walk.everything || walk.secret
}

/// What the template `ast` reads.
pub(super) fn of(ast: &[Node]) -> Reads {
    let mut walk = Walk::default();
    walk.nodes(ast);
    if walk.everything {
        Reads::Everything
    } else {
        Reads::Names(walk.names, walk.product)
    }
}

#[derive(Default)]
struct Walk {
    names: BTreeSet<String>,
    /// The parts of `product` read (of a loop variable of that name too: harmless).
    product: Wanted,
    everything: bool,
    /// A secret's value may be read.
    secret: bool,
}

impl Walk {
    fn nodes(&mut self, nodes: &[Node]) {
        nodes.iter().for_each(|n| self.node(n));
    }

    fn node(&mut self, node: &Node) {
        match node {
            Node::Text(_) | Node::Raw(..) | Node::Comment(..) | Node::Break(_) => {}
            Node::Continue(_) => {}
            Node::VariableBlock(_, e) => self.expr(e),
            Node::Set(_, set) => self.expr(&set.value),
            Node::Forloop(_, f, _) => {
                self.expr(&f.container);
                self.nodes(&f.body);
                if let Some(empty) = &f.empty_body {
                    self.nodes(empty);
                }
            }
            Node::If(branches, _) => {
                for (_, condition, body) in &branches.conditions {
                    self.expr(condition);
                    self.nodes(body);
                }
                if let Some((_, body)) = &branches.otherwise {
                    self.nodes(body);
                }
            }
            Node::FilterSection(_, section, _) => {
                section.filter.args.values().for_each(|e| self.expr(e));
                self.nodes(&section.body);
            }
            Node::Block(_, block, _) => self.nodes(&block.body),
            Node::Super
            | Node::Extends(..)
            | Node::Include(..)
            | Node::ImportMacro(..)
            | Node::MacroDefinition(..) => self.everything = true,
        }
    }

    fn expr(&mut self, e: &Expr) {
        self.value(&e.val);
        for filter in &e.filters {
            filter.args.values().for_each(|a| self.expr(a));
        }
    }

    fn value(&mut self, v: &ExprVal) {
        match v {
            ExprVal::String(_) | ExprVal::Int(_) | ExprVal::Float(_) | ExprVal::Bool(_) => {}
            ExprVal::Ident(name) => self.ident(name),
            ExprVal::Math(m) => {
                self.expr(&m.lhs);
                self.expr(&m.rhs);
            }
            ExprVal::Logic(l) => {
                self.expr(&l.lhs);
                self.expr(&l.rhs);
            }
            ExprVal::Test(t) => {
                self.ident(&t.ident);
                t.args.iter().for_each(|a| self.expr(a));
            }
            ExprVal::FunctionCall(f) => f.args.values().for_each(|a| self.expr(a)),
            ExprVal::Array(items) => items.iter().for_each(|a| self.expr(a)),
            ExprVal::StringConcat(c) => c.values.iter().for_each(|v| self.value(v)),
            ExprVal::In(i) => {
                self.expr(&i.lhs);
                self.expr(&i.rhs);
            }
            ExprVal::MacroCall(_) => self.everything = true,
        }
    }

    /// `a.b.c` reads `a`; a computed subscript (`a[b]`) or the whole context may read
    /// anything.
    fn ident(&mut self, name: &str) {
        if name.contains('[') || name.starts_with("__tera_context") {
            self.everything = true;
            return;
        }
        let root = name.split('.').next().unwrap_or(name);
        if root == "secrets" || name == "product" || name.starts_with("product.secrets") {
            self.secret = true;
        }
        if root == "product" {
            let path: Vec<&str> = name.split('.').skip(1).collect();
            self.product.add(&path);
        }
        self.names.insert(root.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(text: &str) -> Reads {
        let mut tera = tera::Tera::default();
        tera.add_raw_template("t", text).unwrap();
        of(&tera.get_template("t").unwrap().ast)
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn names_read(text: &str) -> BTreeSet<String> {
        match reads(text) {
            Reads::Names(names, _) => names,
            Reads::Everything => panic!("{text}: reads everything"),
        }
    }

    /// The parts of `product` `text` reads, as dotted paths.
    fn product_read(text: &str) -> Vec<String> {
        fn paths(prefix: &str, wanted: &Wanted, out: &mut Vec<String>) {
            match wanted {
                Wanted::Whole => out.push(prefix.to_string()),
                Wanted::Fields(fields) => {
                    for (name, w) in fields {
                        paths(&format!("{prefix}.{name}"), w, out);
                    }
                }
            }
        }
        let mut out = Vec::new();
        paths("product", &reads(text).product(), &mut out);
        out
    }

    #[test]
    fn names_are_found_in_every_kind_of_expression() {
        assert_eq!(names_read("{{ product.domain }}"), names(&["product"]));
        assert_eq!(
            names_read("{% for m in product.pools.memcached %}{{ m.address }}:{{ vars.port | default(value=host.id) }}{% endfor %}"),
            names(&["host", "m", "product", "vars"])
        );
        assert_eq!(
            names_read("{% if fleet.web is defined and map.generation > 1 %}x{% else %}{{ products | length }}{% endif %}"),
            names(&["fleet", "map", "products"])
        );
        assert_eq!(
            names_read("{% set a = host.az ~ '-' %}{{ a }}{{ 'x' in vars.list }}"),
            names(&["a", "host", "vars"])
        );
        assert_eq!(names_read("plain text"), names(&[]));
    }

    #[test]
    fn the_parts_of_product_read_are_found() {
        assert_eq!(
            product_read("{{ product.domain }}{% for m in product.pools.memcached %}{{ m }}{% endfor %}{% if product.database.master.address %}{{ product.database.name }}{% endif %}"),
            ["product.database.master.address", "product.database.name", "product.domain", "product.pools.memcached"]
        );
        // A part read whole covers its parts, in either order.
        assert_eq!(
            product_read("{{ product.pools.web | length }}{{ product.pools | length }}{{ product.pools.db }}"),
            ["product.pools"]
        );
        assert_eq!(
            product_read("{{ product.user is defined }}"),
            ["product.user"]
        );
        assert_eq!(product_read("{{ host.id }}"), Vec::<String>::new());
        for whole in [
            "{{ product | json_encode }}",
            "{% for k, v in product %}{{ v }}{% endfor %}",
            "{% set p = product %}{{ p.pools.web }}",
            "{{ product[vars.key] }}",
        ] {
            assert_eq!(product_read(whole), ["product"], "{whole}");
        }
        let union = reads("{{ product.name }}").union(reads("{{ product.pools.web }}"));
        let both = reads("{{ product.name }}{{ product.pools.web }}");
        assert_eq!(union.product(), both.product());
    }

    #[test]
    fn secret_readers_are_found() {
        let secret = |text: &str| {
            let mut tera = tera::Tera::default();
            tera.add_raw_template("t", text).unwrap();
            super::secret(&tera.get_template("t").unwrap().ast)
        };
        assert!(secret("{{ secrets.replication_secret }}"));
        assert!(secret(
            "{% if product.secrets.db is defined %}{{ product.secrets.db }}{% endif %}"
        ));
        assert!(secret("{% for k, v in product %}{{ v }}{% endfor %}"));
        assert!(secret("{{ product[vars.x] }}"));
        assert!(!secret(
            "{{ product.name }} {{ products | length }} {{ vars.secrets_dir }}"
        ));
    }

    #[test]
    fn what_cannot_be_followed_reads_everything() {
        assert_eq!(reads("{{ product[vars.key] }}"), Reads::Everything);
        assert_eq!(reads("{{ __tera_context }}"), Reads::Everything);
        let mut tera = tera::Tera::default();
        tera.add_raw_templates(vec![("inc", "{{ fleet }}"), ("t", "{% include \"inc\" %}")])
            .unwrap();
        assert_eq!(of(&tera.get_template("t").unwrap().ast), Reads::Everything);
    }
}
