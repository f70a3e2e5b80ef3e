//! `rolecall plan`: the account changes, diffs, reloads and smoke tests a reconcile would
//! run; changes nothing. Account conflicts (SPEC §10) are listed and exit 1: the reconcile
//! would fail on them before changing anything.

use std::io::IsTerminal;

use crate::error::Error;
use crate::identity::IdentitySource;
use crate::pipeline::{self, Preview};
use crate::source::AnySource;

/// Options of `plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Colour the diffs: auto (on a terminal), always, never.
    #[arg(long, default_value = "auto", value_parser = ["auto", "always", "never"])]
    pub color: String,
}

pub(super) async fn run(cli: &super::Cli, args: &Args) -> Result<u8, Error> {
    let agent = super::agent(cli)?;
    let identity = agent.identity.identify().await?;
    let source = AnySource::from_url(&agent.settings.map_url, agent.settings.fetch_timeout).await?;
    let loaded = pipeline::obtain_map(&agent, &source, &identity).await?;
    if loaded.live_rejected {
        let why = loaded.cache_reason.clone().unwrap_or_default();
        return Err(Error::MapRejected { reason: why });
    }
    if let Some(reason) = loaded.cache_reason.as_deref().filter(|_| loaded.from_cache) {
        super::out(&format!("# using the cached map: {reason}\n"));
    }
    let preview = pipeline::preview(&agent, &loaded).await?;
    let Some(p) = preview else {
        super::out(&format!(
            "host {} is not in the map: waiting for role assignment\n",
            identity.id
        ));
        return Ok(super::EXIT_OK);
    };
    Ok(show(&p, loaded.info.generation, color(args)))
}

/// Prints the plan `p` of the map of `generation`; its exit code: no changes, changes
/// pending, or changes that cannot be made (account conflicts, unreadable secrets).
fn show(p: &Preview, generation: u64, color: bool) -> u8 {
    let blocked = !p.rendered.desired.blocked.is_empty();
    if p.planned.plan.is_empty() && p.planned.accounts.is_empty() && !blocked {
        super::out(&format!("no changes (generation {generation})\n"));
        return super::EXIT_OK;
    }
    super::out(&describe(p, color));
    match p.planned.accounts.conflicts.is_empty() && !blocked {
        true => super::EXIT_CHANGES,
        false => super::EXIT_FAILED,
    }
}

fn color(args: &Args) -> bool {
    match args.color.as_str() {
        "always" => true,
        "never" => false,
        _ => std::io::stdout().is_terminal(),
    }
}

fn describe(p: &Preview, color: bool) -> String {
    let mut out = String::new();
    for warning in &p.rendered.warnings {
        out.push_str(&format!("# warning: {warning}\n"));
    }
    for (service, refs) in &p.rendered.desired.blocked {
        let name = service.as_deref().unwrap_or("(files without a service)");
        let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
        out.push_str(&format!(
            "# secret not read: service {name} left as it is ({})\n",
            refs.join(", ")
        ));
    }
    for conflict in &p.planned.accounts.conflicts {
        out.push_str(&format!("# account conflict: {conflict}\n"));
    }
    for change in &p.planned.accounts.changes {
        out.push_str(&format!("# account: {change}\n"));
    }
    let plan = &p.planned.plan;
    for change in &plan.changes {
        out.push_str(&format!("# {:?} {}\n", change.action, change.path.display()).to_lowercase());
        out.push_str(&paint(&crate::plan::diff(change), color));
    }
    for path in &plan.forget {
        out.push_str(&format!("# forget {} (already gone)\n", path.display()));
    }
    for svc in plan.services() {
        out.push_str(&format!("would check and reload service {svc}\n"));
    }
    for t in &p.rendered.desired.smoke {
        out.push_str(&format!("would run smoke test {}\n", t.name));
    }
    out
}

fn paint(diff: &str, color: bool) -> String {
    if !color {
        return diff.to_string();
    }
    diff.lines()
        .map(|l| match l.chars().next() {
            Some('+') if !l.starts_with("+++") => format!("\x1b[32m{l}\x1b[0m\n"),
            Some('-') if !l.starts_with("---") => format!("\x1b[31m{l}\x1b[0m\n"),
            Some('@') => format!("\x1b[36m{l}\x1b[0m\n"),
            _ => format!("{l}\n"),
        })
        .collect()
}
