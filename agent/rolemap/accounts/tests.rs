//! The account rules of SPEC §10, one case per rule, each asserting the TOML path(s), plus
//! lint and the product view.

use super::*;
use crate::rolemap::sample::{group, host, product, user};
use crate::rolemap::tests::view_in;
use crate::rolemap::{load, Error};

/// Two products with accounts, valid: `tv` (user and group, www-data supplementary) and
/// `radio`, which declares the shared group `media` identically.
const MAP: &str = concat!(
    "schema = 1\ngeneration = 1\n",
    product!("tv", "tv.example.com", "/srv/tv/public"),
    group!("tv", "tv", 20001),
    group!("tv", "media", 20100),
    user!(
        "tv",
        "tv",
        20001,
        "tv",
        "/srv/tv",
        "/usr/sbin/nologin",
        ["www-data", "media"]
    ),
    product!("radio", "radio.example.com", "/srv/radio"),
    group!("radio", "media", 20100),
    group!("radio", "radio", 20002),
    user!(
        "radio",
        "radio-app",
        20002,
        "radio",
        "/srv/radio",
        "/bin/sh"
    ),
    host!("web-1", "10.0.0.1", "a", ["web"], ["tv"]),
);

/// The `(path, message)` of every issue of `text`, which must parse.
fn issues(text: &str) -> Vec<(String, String)> {
    match load(text.as_bytes()) {
        Ok(_) => Vec::new(),
        Err(Error::Invalid { issues }) => issues.into_iter().map(|i| (i.path, i.message)).collect(),
        Err(e) => panic!("not a validation error: {e}"),
    }
}

fn paths(text: &str) -> Vec<String> {
    issues(text).into_iter().map(|(p, _)| p).collect()
}

/// [`MAP`] with each `(from, to)` replaced in turn.
fn edited(edits: &[(&str, &str)]) -> String {
    edits
        .iter()
        .fold(MAP.to_string(), |text, (from, to)| text.replace(from, to))
}

/// `text` has exactly one issue, at `path`, whose message contains `says`.
fn assert_one_issue(text: &str, path: &str, says: &str) {
    let found = issues(text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, path);
    assert!(found[0].1.contains(says), "{found:?}");
}

#[test]
fn the_example_is_valid() {
    // User tv has uid 20001 and group tv gid 20001: one id in each space, fine.
    assert_eq!(issues(MAP), vec![]);
}

#[test]
fn names_follow_the_strict_pattern() {
    let found = issues(&edited(&[
        ("users.radio-app]", "users.Radio]"),
        (
            "[products.tv.groups.media]\ngid",
            "[products.tv.groups.\"me dia\"]\ngid",
        ),
    ]));
    let found: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
    assert!(found.contains(&"products.radio.users.Radio"), "{found:?}");
    assert!(
        found.contains(&"products.tv.groups.\"me dia\""),
        "{found:?}"
    );
    assert!(!is_account_name("1abc"));
    assert!(!is_account_name(&"a".repeat(33)));
    assert!(is_account_name(&"a".repeat(32)));
    assert!(is_account_name("_svc-1"));
    assert!(!is_account_name("svc$"));
}

#[test]
fn home_and_shell_are_clean_absolute_paths() {
    let text = edited(&[
        ("home = \"/srv/tv\"", "home = \"srv/tv\""),
        ("shell = \"/bin/sh\"", "shell = \"/bin/../bin/sh\""),
    ]);
    let shell = "products.radio.users.radio-app.shell";
    assert_eq!(paths(&text), [shell, "products.tv.users.tv.home"]);
    for bad in [
        "/srv//tv",
        "/srv/tv/",
        "/srv/./tv",
        "/srv/t:v",
        "/srv/t v",
        "",
    ] {
        assert!(!is_clean_path(bad), "{bad:?} accepted");
    }
    assert!(is_clean_path("/"));
    assert!(is_clean_path("/usr/sbin/nologin"));
}

#[test]
fn required_fields_are_reported_with_their_paths() {
    let removed = ["uid = 20002\n", "group = \"radio\"\n", "gid = 20002\n"];
    let text = edited(&removed.map(|line| (line, "")));
    let (group, user) = (
        "products.radio.groups.radio",
        "products.radio.users.radio-app",
    );
    let expected = [
        format!("{group}.gid"),
        format!("{user}.uid"),
        format!("{user}.group"),
    ];
    assert_eq!(paths(&text), expected);
}

#[test]
fn ids_must_be_from_1_to_the_reserved_minus_one() {
    let found = issues(&edited(&[
        ("uid = 20002", "uid = 0"),
        ("gid = 20002", "gid = 4294967295"),
    ]));
    assert_eq!(
        found.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        [
            "products.radio.groups.radio.gid",
            "products.radio.users.radio-app.uid"
        ]
    );
    assert!(found[1].1.contains("root"), "{found:?}");
}

#[test]
fn the_primary_group_is_declared_in_the_same_product() {
    let text = MAP.replace("group = \"radio\"", "group = \"tv\"");
    assert_one_issue(
        &text,
        "products.radio.users.radio-app.group",
        "products.radio.groups",
    );
}

#[test]
fn a_supplementary_group_of_another_product_only_is_refused() {
    // `radio` is declared by product radio only; www-data by none (a system group: fine).
    let text = MAP.replace(
        "groups = [\"www-data\", \"media\"]",
        "groups = [\"www-data\", \"radio\"]",
    );
    assert_one_issue(&text, "products.tv.users.tv.groups[1]", "product \"radio\"");
}

#[test]
fn a_supplementary_group_listed_twice_is_refused() {
    let text = MAP.replace("[\"www-data\", \"media\"]", "[\"media\", \"media\"]");
    assert_eq!(paths(&text), ["products.tv.users.tv.groups[1]"]);
}

#[test]
fn a_uid_given_to_two_names_names_both_paths() {
    let text = MAP.replace("uid = 20002", "uid = 20001");
    assert_one_issue(
        &text,
        "products.tv.users.tv.uid",
        "products.radio.users.radio-app.uid",
    );
}

#[test]
fn a_gid_given_to_two_names_names_both_paths() {
    let text = MAP.replace("gid = 20002", "gid = 20100");
    // radio's groups come first (products in name order): media, then radio.
    assert_one_issue(
        &text,
        "products.radio.groups.radio.gid",
        "products.radio.groups.media.gid",
    );
}

#[test]
fn one_name_declared_differently_in_two_products_is_refused() {
    let text = MAP.replacen(
        "[products.radio.groups.media]\ngid = 20100",
        "[products.radio.groups.media]\ngid = 20101",
        1,
    );
    assert_one_issue(
        &text,
        "products.tv.groups.media",
        "products.radio.groups.media",
    );
}

#[test]
fn one_user_declared_identically_in_two_products_is_one_account() {
    // Radio declares tv's group and user again, the supplementary groups in another order.
    let again = concat!(
        group!("radio", "tv", 20001),
        user!(
            "radio",
            "tv",
            20001,
            "tv",
            "/srv/tv",
            "/usr/sbin/nologin",
            ["media", "www-data"]
        ),
        "\n[products.radio.groups.radio]"
    );
    let text = MAP.replace("\n[products.radio.groups.radio]", again);
    assert_eq!(issues(&text), vec![]);
    let differs = text.replacen("home = \"/srv/tv\"", "home = \"/srv/radio-tv\"", 1);
    assert_eq!(paths(&differs), ["products.tv.users.tv"]);
}

#[test]
fn unknown_account_keys_are_reported() {
    let text = edited(&[
        ("gid = 20002", "gid = 20002\nmembers = [\"x\"]"),
        ("uid = 20002", "uid = 20002\npassword = \"x\""),
    ]);
    let found = paths(&text);
    assert_eq!(found[0], "products.radio.groups.radio.members");
    assert_eq!(found[1..], ["products.radio.users.radio-app.password"]);
}

#[test]
fn messages_quote_map_strings_boundedly() {
    let long = "x".repeat(5000);
    let text = MAP.replace("home = \"/srv/tv\"", &format!("home = \"/srv/\\n{long}\""));
    let found = issues(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].1.contains("\\n"),
        "newline not escaped: {}",
        found[0].1
    );
    assert!(
        found[0].1.len() < 600,
        "unbounded message: {} bytes",
        found[0].1.len()
    );
}

#[test]
fn lint_warns_about_reserved_id_ranges_once_per_name() {
    let text = edited(&[
        ("gid = 20100", "gid = 100"),
        ("uid = 20002", "uid = 61184"),
        ("gid = 20002", "gid = 65534"),
    ]);
    let map = load(text.as_bytes()).expect("valid");
    let found: Vec<(String, Kind)> = crate::rolemap::lint::lint(&map)
        .into_iter()
        .filter(|w| w.kind == Kind::AccountId)
        .map(|w| (w.path, w.kind))
        .collect();
    let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "products.radio.groups.media.gid",
            "products.radio.groups.radio.gid",
            "products.radio.users.radio-app.uid",
        ]
    );
    assert_eq!(
        reserved_range(999).map(|r| r.contains("system")),
        Some(true)
    );
    assert_eq!(
        reserved_range(65519).map(|r| r.contains("dynamic")),
        Some(true)
    );
    assert_eq!(reserved_range(1000), None);
    assert_eq!(reserved_range(61183), None);
    assert_eq!(reserved_range(65520), None);
}

#[test]
fn the_view_names_the_products_user_and_group() {
    let host = view_in(MAP, "web-1");
    let tv = &host.products[0];
    assert_eq!(tv.user.as_deref(), Some("tv"));
    assert_eq!(tv.group.as_deref(), Some("tv"));
    assert_eq!(tv.users["tv"].uid, 20001);
    assert_eq!(tv.users["tv"].groups, ["www-data", "media"]);
    assert_eq!(tv.groups["media"].gid, 20100);
    let map = load(MAP.as_bytes()).expect("valid");
    // No user named like the product: the first by name, and its primary group.
    let radio = view("radio", &map.products["radio"]);
    assert_eq!(radio.user.as_deref(), Some("radio-app"));
    assert_eq!(radio.group.as_deref(), Some("radio"));
}

#[test]
fn a_product_without_accounts_shows_no_user_to_templates() {
    let plain = "[products.plain]\ndomain = \"plain.example.com\"\ndocroot = \"/srv/plain\"\n\n";
    let text = edited(&[
        ("[products.radio]\n", &format!("{plain}[products.radio]\n")),
        ("products = [\"tv\"]", "products = [\"plain\"]"),
    ]);
    let host = view_in(&text, "web-1");
    let json = serde_json::to_value(&host.products[0]).expect("json");
    assert!(json.get("user").is_none(), "{json}");
    assert!(json.get("group").is_none(), "{json}");
    assert_eq!(json["users"], serde_json::json!({}));
}
