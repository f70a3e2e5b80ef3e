//! The tables of the unit tests' sample role maps (issue 11): one macro per kind of table,
//! so a test's map lists its fleet and the TOML layout of a host, a product or an account
//! is written once. Each expands to a string literal that starts with a blank line, so a
//! sample map stays a `const`: `concat!` its tables after `schema` and `generation`.

/// A TOML array of strings: `["a", "b"]`.
macro_rules! list {
    ($first:literal $(, $rest:literal)*) => {
        concat!("[\"", $first, "\"", $(", \"", $rest, "\"",)* "]")
    };
}

/// `[hosts.ID]` with its address, zone, roles and, when given, products.
macro_rules! host {
    ($id:literal, $address:literal, $az:literal, [$($role:literal),+] $(, [$($product:literal),+])?) => {
        concat!(
            "\n[hosts.", $id, "]\naddress = \"", $address, "\"\naz = \"", $az, "\"\n",
            "roles = ", $crate::rolemap::sample::list!($($role),+), "\n",
            $("products = ", $crate::rolemap::sample::list!($($product),+), "\n",)?
        )
    };
}

/// `[products.NAME]` with its domain and docroot.
macro_rules! product {
    ($name:literal, $domain:literal, $docroot:literal) => {
        concat!(
            "\n[products.",
            $name,
            "]\ndomain = \"",
            $domain,
            "\"\ndocroot = \"",
            $docroot,
            "\"\n"
        )
    };
}

/// `[products.PRODUCT.groups.NAME]` with its gid.
macro_rules! group {
    ($product:literal, $name:literal, $gid:literal) => {
        concat!(
            "\n[products.",
            $product,
            ".groups.",
            $name,
            "]\ngid = ",
            $gid,
            "\n"
        )
    };
}

/// `[products.PRODUCT.users.NAME]` with its uid, group, home, shell and, when given,
/// supplementary groups.
macro_rules! user {
    ($product:literal, $name:literal, $uid:literal, $group:literal, $home:literal, $shell:literal $(, [$($groups:literal),+])?) => {
        concat!(
            "\n[products.", $product, ".users.", $name, "]\nuid = ", $uid, "\n",
            "group = \"", $group, "\"\nhome = \"", $home, "\"\nshell = \"", $shell, "\"\n",
            $("groups = ", $crate::rolemap::sample::list!($($groups),+), "\n",)?
        )
    };
}

pub(crate) use {group, host, list, product, user};

/// A valid map of `hosts` web hosts over 200 products, a third of them with a database on
/// a host of its own.
pub(crate) fn large_map(hosts: usize) -> String {
    let mut text = String::from("schema = 1\ngeneration = 7\n");
    for p in 0..200 {
        text.push_str(&format!(
            "\n[products.p{p}]\ndomain = \"p{p}.example\"\ndocroot = \"/srv/p{p}\"\n"
        ));
        if p % 3 == 0 {
            text.push_str(&format!(
                "\n[products.p{p}.database]\nname = \"p{p}\"\nmaster = \"db-{p}\"\n\
                 \n[hosts.db-{p}]\naddress = \"10.2.0.{p}\"\naz = \"b\"\nroles = [\"db\"]\n"
            ));
        }
    }
    for h in (0..hosts).rev() {
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
