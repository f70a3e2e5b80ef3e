use super::*;

fn file(path: &str, content: &str) -> RenderedFile {
    RenderedFile {
        path: PathBuf::from(path),
        content: content.as_bytes().into(),
        owner: "root".into(),
        group: "root".into(),
        mode: 0o644,
        service: Some("apache2".into()),
        role: "web".into(),
        product: None,
        template: "web/vhost.conf.tera".into(),
        is_secret: false,
    }
}

fn on_disk(content: &str, mode: u32) -> DiskState {
    DiskState::File(FileState {
        content: content.as_bytes().into(),
        owner: "root".into(),
        group: "root".into(),
        mode,
    })
}

fn allowed() -> Vec<PathBuf> {
    vec![PathBuf::from("/etc/apache2"), PathBuf::from("/etc/cron.d")]
}

/// A cron file of no service with `content`.
fn cron_file(content: &str) -> RenderedFile {
    let mut cron = file("/etc/cron.d/rolecall-videos", content);
    cron.service = None;
    cron
}

/// Why planning `desired` alone, on an empty disk, fails.
fn refusal(desired: &[RenderedFile]) -> Refused {
    plan(desired, &BTreeMap::new(), &Records::new(), &allowed()).unwrap_err()
}

fn record(service: &str) -> Record {
    Record {
        role: "web".into(),
        service: Some(service.into()),
        sha256: String::new(),
    }
}

#[test]
fn no_change_gives_an_empty_plan() {
    let desired = vec![file("/etc/apache2/a.conf", "x\n")];
    let disk = BTreeMap::from([(PathBuf::from("/etc/apache2/a.conf"), on_disk("x\n", 0o644))]);
    let records = Records::from([(PathBuf::from("/etc/apache2/a.conf"), record("apache2"))]);
    let plan = plan(&desired, &disk, &records, &allowed()).unwrap();
    assert!(plan.is_empty(), "{plan:?}");
    assert!(plan.services().is_empty());
}

#[test]
fn classifies_create_update_metadata() {
    let desired = vec![
        file("/etc/apache2/a.conf", "new\n"),
        file("/etc/apache2/b.conf", "x\n"),
        file("/etc/apache2/c.conf", "y\n"),
    ];
    let disk = BTreeMap::from([
        (
            PathBuf::from("/etc/apache2/a.conf"),
            on_disk("old\n", 0o644),
        ),
        (PathBuf::from("/etc/apache2/b.conf"), on_disk("x\n", 0o600)),
    ]);
    let plan = plan(&desired, &disk, &Records::new(), &allowed()).unwrap();
    let actions: Vec<Action> = plan.changes.iter().map(|c| c.action).collect();
    assert_eq!(
        actions,
        vec![Action::Update, Action::Metadata, Action::Create]
    );
    assert_eq!(plan.services(), BTreeSet::from(["apache2".to_string()]));
}

#[test]
fn recorded_files_no_longer_desired_are_removed() {
    let disk = BTreeMap::from([(
        PathBuf::from("/etc/apache2/old.conf"),
        on_disk("x\n", 0o644),
    )]);
    let records = Records::from([
        (PathBuf::from("/etc/apache2/old.conf"), record("apache2")),
        (PathBuf::from("/etc/apache2/gone.conf"), record("apache2")),
    ]);
    let plan = plan(&[], &disk, &records, &allowed()).unwrap();
    assert_eq!(plan.changes.len(), 1);
    assert_eq!(plan.changes[0].action, Action::Remove);
    assert_eq!(plan.forget, vec![PathBuf::from("/etc/apache2/gone.conf")]);
}

#[test]
fn unrecorded_files_are_never_removed() {
    let disk = BTreeMap::from([(
        PathBuf::from("/etc/apache2/theirs.conf"),
        on_disk("x\n", 0o644),
    )]);
    let plan = plan(&[], &disk, &Records::new(), &allowed()).unwrap();
    assert!(plan.is_empty());
}

#[test]
fn refuses_symlinks_and_paths_outside_allowed_roots() {
    let desired = vec![
        file("/etc/apache2/link.conf", "x\n"),
        file("/etc/passwd", "x\n"),
        file("/etc/apache2/../passwd", "x\n"),
    ];
    let disk = BTreeMap::from([(PathBuf::from("/etc/apache2/link.conf"), DiskState::Symlink)]);
    let err = plan(&desired, &disk, &Records::new(), &allowed()).unwrap_err();
    assert_eq!(err.problems.len(), 3, "{err}");
    assert!(err.to_string().contains("symlink"));
    assert!(err.to_string().contains("/etc/passwd is outside"));
}

#[test]
fn refuses_bad_cron_files() {
    let err = refusal(&[cron_file("*/15 * * * rolecall snapshot")]);
    assert!(err.problems.iter().any(|p| p.contains("newline")), "{err}");
}

#[test]
fn a_secret_cron_files_problems_quote_none_of_its_lines() {
    let mut cron = cron_file("*/15 * * * hunter2 rolecall snapshot\n");
    let clear = refusal(&[cron.clone()]);
    assert!(clear.to_string().contains("hunter2"), "control: {clear}");
    cron.is_secret = true;
    let err = refusal(&[cron]);
    let text = err.to_string();
    assert!(
        !text.contains("hunter2") && text.contains("line 1: cron would reject it"),
        "{text}"
    );
}

#[test]
fn diff_is_unified_and_hides_secrets() {
    let desired = vec![file("/etc/apache2/a.conf", "one\ntwo\n")];
    let disk = BTreeMap::from([(
        PathBuf::from("/etc/apache2/a.conf"),
        on_disk("one\n", 0o644),
    )]);
    let mut p = plan(&desired, &disk, &Records::new(), &allowed()).unwrap();
    let text = diff(&p.changes[0]);
    assert!(
        text.contains("--- a/etc/apache2/a.conf") && text.contains("+two"),
        "{text}"
    );
    p.changes[0].is_secret = true;
    let text = diff(&p.changes[0]);
    assert!(!text.contains("two") && text.contains("secret"), "{text}");
}

#[test]
fn a_stamp_is_one_line_that_reads_back_as_itself() {
    let stamp = Stamp {
        dev: 65024,
        ino: 10_046_241,
        size: 1905,
        mtime: (1_796_507_852, 976_827),
        ctime: (-5, 999_999_999),
        mode: 0o100_644,
        uid: 0,
        gid: u32::MAX,
    };
    let text = serde_json::to_string(&stamp).expect("json");
    assert_eq!(
        text,
        "\"65024:10046241:1905:1796507852.000976827:-5.999999999:100644:0:4294967295\""
    );
    assert_eq!(serde_json::from_str::<Stamp>(&text).expect("back"), stamp);
    for bad in [
        "\"1:2:3\"",
        "\"1:2:3:4.5:6.7:9:0:0\"",
        "\"a:2:3:4.5:6.7:644:0:0\"",
    ] {
        let err = serde_json::from_str::<Stamp>(bad)
            .expect_err(bad)
            .to_string();
        assert!(err.contains("not a file stamp"), "{err}");
    }
}

#[test]
fn records_read_by_path_are_as_serde_reads_them_in_any_order() {
    let texts = [
        r#"{"/etc/b": {"role": "web", "service": null, "sha256": "1"}, "/etc/a/b": {"role": "db", "service": "mariadb", "sha256": "2"}}"#,
        r#"{"/etc/a.b": {"role": "web", "service": null, "sha256": "1"}, "/etc/a/b": {"role": "web", "service": null, "sha256": "2"}, "/etc/a": {"role": "web", "service": null, "sha256": "3"}}"#,
        r#"{"/etc/b": {"role": "web", "service": null, "sha256": "1"}, "/etc/b": {"role": "db", "service": null, "sha256": "2"}}"#,
        "{}",
    ];
    for text in texts {
        let by_serde: Records = serde_json::from_str(text).unwrap();
        let RecordsFile(by_path) = serde_json::from_str(text).unwrap();
        assert_eq!(by_path, by_serde, "{text}");
    }
    let RecordsFile(twice) = serde_json::from_str::<RecordsFile>(texts[2]).unwrap();
    assert_eq!(
        twice[Path::new("/etc/b")].role,
        "db",
        "the last entry is kept"
    );
    assert!(
        serde_json::from_str::<RecordsFile>("[]").is_err(),
        "a map is expected"
    );
}
