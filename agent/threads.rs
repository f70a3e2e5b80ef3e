//! Pieces of work side by side on scoped threads, for the stages that gain from a second
//! core (the map's validation and resolution, reading or `lstat`ing many managed files) or
//! wait on several fsyncs (the commit step's state files), and large values freed off the
//! way to the report. A leaf: pure stages and `sys` can both use it.

use std::thread;

/// `(a(), b())`, with `a` on another thread if `side_by_side` and the system grants one (a
/// task limit may not: then `a` runs here after `b`).
pub fn join<A: Send, B>(
    side_by_side: bool,
    a: impl Fn() -> A + Sync,
    b: impl FnOnce() -> B,
) -> (A, B) {
    if !side_by_side {
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
/// memory to the kernel.
pub fn drop_aside<T: Send + 'static>(value: T) {
    // A refused spawn drops its closure, and `value` with it, here.
    let _ = thread::Builder::new().spawn(move || drop(value));
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
