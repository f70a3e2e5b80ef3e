//! Which top-level names a template reads (`host`, `products`, `fleet`, `map`, `vars`,
//! `product`), from its parsed form, so that a render puts into the Tera context only what
//! its templates use: serialising `fleet` and `products` of a 10,000-host map for every
//! reconcile costs more than rendering a host's files (issue 13). Conservative: anything it
//! cannot follow (includes, macros, inheritance, computed subscripts) reads everything.

use std::collections::BTreeSet;

use tera::ast::{Expr, ExprVal, Node};

/// What a template reads from the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reads {
    /// These top-level names (and perhaps loop or `set` variables of its own).
    Names(BTreeSet<String>),
    /// Anything: the analysis could not tell.
    Everything,
}

impl Reads {
    /// Whether `name` may be read.
    pub fn reads(&self, name: &str) -> bool {
        match self {
            Reads::Names(names) => names.contains(name),
            Reads::Everything => true,
        }
    }

    /// Both together.
    pub fn union(self, other: Reads) -> Reads {
        match (self, other) {
            (Reads::Names(mut a), Reads::Names(b)) => {
                a.extend(b);
                Reads::Names(a)
            }
            _ => Reads::Everything,
        }
    }
}

/// What the template `ast` reads.
pub(super) fn of(ast: &[Node]) -> Reads {
    let mut walk = Walk::default();
    walk.nodes(ast);
    if walk.everything {
        Reads::Everything
    } else {
        Reads::Names(walk.names)
    }
}

#[derive(Default)]
struct Walk {
    names: BTreeSet<String>,
    everything: bool,
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

    fn names(list: &[&str]) -> Reads {
        Reads::Names(list.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn names_are_found_in_every_kind_of_expression() {
        assert_eq!(reads("{{ product.domain }}"), names(&["product"]));
        assert_eq!(
            reads("{% for m in product.pools.memcached %}{{ m.address }}:{{ vars.port | default(value=host.id) }}{% endfor %}"),
            names(&["host", "m", "product", "vars"])
        );
        assert_eq!(
            reads("{% if fleet.web is defined and map.generation > 1 %}x{% else %}{{ products | length }}{% endif %}"),
            names(&["fleet", "map", "products"])
        );
        assert_eq!(
            reads("{% set a = host.az ~ '-' %}{{ a }}{{ 'x' in vars.list }}"),
            names(&["a", "host", "vars"])
        );
        assert_eq!(reads("plain text"), names(&[]));
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
