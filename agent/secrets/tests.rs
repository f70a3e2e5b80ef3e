//! The refresh decisions, without a store: the clock is tokio's, paused.

use super::*;

fn reference(text: &str) -> Reference {
    Reference::parse(text).unwrap()
}

fn ask<'a>(wanted: &[&str], inputs: &'a str) -> Ask<'a> {
    Ask {
        wanted: wanted.iter().map(|t| reference(t)).collect(),
        vars: BTreeMap::new(),
        inputs,
        force: false,
        refresh: Duration::from_secs(3600),
        timeout: Duration::from_secs(1),
    }
}

fn cached(secrets: &Secrets, text: &str, inputs: &str) {
    let value = Value::new("v".into()).unwrap();
    let values = BTreeMap::from([(reference(text), value)]);
    secrets.keep(&ask(&[text], inputs), &values, true);
}

#[test]
fn the_jitter_only_ever_shortens_the_period_by_up_to_a_tenth() {
    let hour = Duration::from_secs(3600);
    assert_eq!(jittered(hour, 0.0), hour);
    assert_eq!(jittered(hour, 1.0), Duration::from_secs(3240));
    assert_eq!(jittered(hour, 7.0), Duration::from_secs(3240));
}

#[tokio::test(start_paused = true)]
async fn cached_values_serve_the_same_inputs_until_the_refresh_is_due() {
    let secrets = Secrets::default();
    assert_eq!(secrets.due_in(), None, "no secrets, nothing due");
    cached(&secrets, "ssm:/a", "inputs-1");
    let (values, to_read, fresh) = secrets.split(&ask(&["ssm:/a"], "inputs-1"));
    assert!(fresh && to_read.is_empty() && values.len() == 1);
    let due = secrets.due_in().unwrap();
    assert!(due <= Duration::from_secs(3600) && due >= Duration::from_secs(3240));
    assert!(secrets.is_current());
    tokio::time::advance(due).await;
    assert!(!secrets.is_current(), "due");
    let (values, to_read, fresh) = secrets.split(&ask(&["ssm:/a"], "inputs-1"));
    assert!(
        !fresh && values.is_empty() && to_read.len() == 1,
        "due: read again"
    );
}

#[tokio::test(start_paused = true)]
async fn changed_inputs_read_everything_again_and_new_references_are_read_at_once() {
    let secrets = Secrets::default();
    cached(&secrets, "ssm:/a", "inputs-1");
    let (_, to_read, fresh) = secrets.split(&ask(&["ssm:/a"], "inputs-2"));
    assert!(!fresh && to_read.len() == 1, "map or catalog changed");
    let (values, to_read, fresh) = secrets.split(&ask(&["ssm:/a", "ssm:/b"], "inputs-1"));
    assert!(fresh && values.len() == 1);
    assert_eq!(to_read, BTreeSet::from([reference("ssm:/b")]));
}

#[tokio::test(start_paused = true)]
async fn a_host_without_secrets_reads_nothing_and_is_never_due() {
    let secrets = Secrets::default();
    cached(&secrets, "ssm:/a", "inputs-1");
    let resolved = secrets.resolve(ask(&[], "inputs-2")).await;
    assert!(resolved.values.is_empty() && resolved.failed.is_empty());
    assert_eq!(secrets.due_in(), None);
}
