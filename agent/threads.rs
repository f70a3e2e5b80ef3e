//! Pieces of work side by side on scoped threads, for the stages that gain from a second
//! core (the map's validation and resolution, reading or `lstat`ing many managed files) or
//! wait on several fsyncs (the commit step's state files), and large values freed off the
//! way to the report. A leaf: pure stages and `sys` can both use it.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

/// Set by [`exits_after_one`].
static EXITS_AFTER_ONE: AtomicBool = AtomicBool::new(false);

/// This process exits once its one reconcile is done (`rolecall sync` without a daemon):
/// what [`drop_aside`] is given then is left to the exit, which takes the whole heap back
/// at once, instead of being freed a block at a time on a thread that competes with the
/// reconcile's last writes for the host's cores (issue 13: a 10,000-host map's parsed
/// tree, a web host's thousand rendered files and their records; half of a moved master's
/// time in `free`, and a millisecond of its 37). The daemon never calls it: it frees what
/// each poll lets go of.
pub fn exits_after_one() {
    EXITS_AFTER_ONE.store(true, Ordering::Relaxed);
}

thread_local! {
    /// Set while this thread's work keeps to it (see [`alone`]).
    static ALONE: Cell<bool> = const { Cell::new(false) };
}

/// `work()`, with every [`join`], [`split`] and [`beside`] in it done in turn on this thread:
/// for work done beside a stage that has both cores busy already, which should take no
/// more of them (stage 4's reads done ahead while the map loads).
pub fn alone<R>(work: impl FnOnce() -> R) -> R {
    let was = ALONE.replace(true);
    let result = work();
    ALONE.set(was);
    result
}

/// `(a(), b())`, with `a` on another thread if `side_by_side` and the system grants one (a
/// task limit may not: then `a` runs here after `b`).
pub fn join<A: Send, B>(
    side_by_side: bool,
    a: impl Fn() -> A + Sync,
    b: impl FnOnce() -> B,
) -> (A, B) {
    if !side_by_side || ALONE.get() {
        return (a(), b());
    }
    thread::scope(|scope| {
        let spawned = thread::Builder::new().spawn_scoped(scope, &a);
        let b = b();
        let a = match spawned {
            Ok(handle) => joined(handle),
            Err(_) => a(),
        };
        (a, b)
    })
}

/// `here()`, with each of `jobs` on a thread of its own meanwhile (run here after `here` when
/// the system grants none); returns once all are done. The threads enter the caller's
/// tracing span: what they log says which reconcile it belongs to.
pub fn beside<R>(jobs: &[&(dyn Fn() + Sync)], here: impl FnOnce() -> R) -> R {
    if ALONE.get() {
        let result = here();
        jobs.iter().for_each(|job| job());
        return result;
    }
    let span = tracing::Span::current();
    thread::scope(|scope| {
        let span = &span;
        let spawned: Vec<_> = jobs
            .iter()
            .map(|&job| {
                let thread = thread::Builder::new().spawn_scoped(scope, move || span.in_scope(job));
                (job, thread)
            })
            .collect();
        let result = here();
        for (job, thread) in spawned {
            match thread {
                Ok(handle) => joined(handle),
                Err(_) => job(),
            }
        }
        result
    })
}

/// `each` of `items[..cut]` and of `items[cut..]`: side by side when there are at least
/// `2 * min` items, else one after the other here. Returns the first part's result, then
/// the second's.
pub fn split<T: Sync, R: Send>(
    items: &[T],
    cut: usize,
    min: usize,
    each: impl Fn(&[T]) -> R + Sync,
) -> (R, R) {
    let (first, second) = items.split_at(cut.min(items.len()));
    let (second, first) = join(items.len() >= 2 * min, || each(second), || each(first));
    (first, second)
}

/// Drop `value` on a thread of its own: for what a reconcile lets go of at its end (its
/// inputs, a web host's thousand rendered files and records: 1.6 ms on a 10,000-host map,
/// issue 13). Not for a value freed while more is still to be allocated: memory not freed
/// yet is not reused, and the peak grows (the parsed map, freed before the render: +0.9 MB).
/// Dropped here if the system grants no thread; a process that exits first leaves the
/// memory to the kernel, and one that [`exits_after_one`] reconcile leaves it so at once.
/// So only for plain memory: never a value whose drop does something (removes a temp file,
/// releases a lock).
pub fn drop_aside<T: Send + 'static>(value: T) {
    drop(aside(value, EXITS_AFTER_ONE.load(Ordering::Relaxed)));
}

/// [`drop_aside`]: `value` left to the exit when the process `exits` after this reconcile,
/// else dropped on the thread returned (`None`: dropped here, no thread granted).
fn aside<T: Send + 'static>(value: T, exits: bool) -> Option<thread::JoinHandle<()>> {
    if exits {
        std::mem::forget(value);
        return None;
    }
    // A refused spawn drops its closure, and `value` with it, here.
    thread::Builder::new().spawn(move || drop(value)).ok()
}

/// Whether the system grants this process another thread now (a task limit may not): one
/// is started and joined to find out.
pub fn available() -> bool {
    thread::Builder::new()
        .spawn(|| ())
        .is_ok_and(|started| started.join().is_ok())
}

/// A scoped thread's result; its panic, if it panicked, goes on in this thread.
pub fn joined<T>(handle: thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_done_alone_keeps_to_its_thread_and_work_after_it_does_not() {
        let here = thread::current().id();
        let on = || thread::current().id();
        let (a, b) = alone(|| join(true, on, on));
        assert_eq!((a, b), (here, here), "join left the thread inside alone");
        let split_on = alone(|| split(&[1; 8], 4, 1, |_| on()));
        assert_eq!(split_on, (here, here), "split left the thread inside alone");
        let beside_on = std::sync::Mutex::new(None);
        alone(|| beside(&[&|| *beside_on.lock().unwrap() = Some(on())], || ()));
        assert_eq!(
            *beside_on.lock().unwrap(),
            Some(here),
            "beside left the thread"
        );
        let (a, _) = join(true, on, on);
        assert_ne!(a, here, "join stayed on the thread after alone ended");
    }

    /// Counts its drops.
    struct Counted(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn what_is_dropped_aside_is_freed_unless_the_process_exits_after_one_reconcile() {
        let drops = std::sync::Arc::default();
        let freeing = aside(Counted(std::sync::Arc::clone(&drops)), false);
        freeing.expect("a thread").join().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1, "not dropped on its thread");
        let left = aside(Counted(std::sync::Arc::clone(&drops)), true);
        assert!(left.is_none(), "a thread was started to free it");
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "dropped although left to the exit"
        );
    }
}
