//! The worker pool of decode: the matrix-vector products and the small per-token ops of
//! a decode step (state update, norms) run their chunks here rather than on rayon.
//!
//! Why not rayon: a batch-1 decode step is ~150 short parallel regions (≈ 5–300 µs
//! each). A rayon call from a thread outside its pool injects a job, puts the caller to
//! sleep on a latch and wakes a worker, and idle workers spin (yielding) for a while
//! before they sleep; with one core taken by another process, those spinning workers and
//! the sleeping caller halved decode throughput. Here:
//!
//! * the calling thread works too (it claims chunks like the helpers), so a region
//!   costs no sleep/wake on the caller's side when the helpers are late;
//! * chunks are claimed dynamically (an atomic counter), so a helper descheduled by a
//!   competing process holds back at most the chunk it is in, and the caller takes the
//!   rest;
//! * a helper spins only briefly after a region ([`HELPER_SPIN`], long enough to bridge
//!   the gaps between the GEMVs of a step, so there is no park/wake per GEMV) and then
//!   parks on a condition variable, using no CPU between steps;
//! * the caller waiting for a late helper spins only [`CALLER_SPIN`] and then blocks,
//!   which frees its core for the scheduler to run that helper on.
//!
//! * a caller kept waiting longer than [`STALL`] (a helper was descheduled inside a
//!   chunk: the cores are shared), or descheduled itself inside one of its chunks,
//!   [`BURST`] times within [`BURST_WINDOW`], runs the regions of the next
//!   [`SOLO_MIN`] … [`SOLO_MAX`] (doubling while it recurs) alone. A descheduled helper costs the caller a scheduler
//!   time slice, milliseconds, per stall: with one core taken by another process, two
//!   threads decoded slower than one (f32 18 vs 20 tok/s, q8 35 vs 51 on the Xeon of
//!   BENCHMARKS.md), so under contention the pool settles on one thread and probes for
//!   the second core now and then. One stall alone is not enough: a virtual machine's
//!   vCPU is preempted by its host now and then (on the Zen 2 EPYC of BENCHMARKS.md ~7
//!   stalls a second with the guest otherwise idle, against ~90 with a core taken), and
//!   going solo on each of those cost 10–15 % of quiet decode there.
//!
//! `MAMBA_CPU_THREADS` sets the thread count (caller included; default: the cores
//! available to the process). One region runs at a time; a second caller (another
//! thread, or a region started inside a chunk) runs its chunks itself, serially.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a helper polls for the next region before it parks.
const HELPER_SPIN: Duration = Duration::from_micros(200);
/// How long the caller polls for late helpers before it blocks.
const CALLER_SPIN: Duration = Duration::from_micros(30);
/// A wait for helpers, or one of the caller's own chunks, longer than this means a thread
/// was descheduled (chunks take ~5–100 µs).
const STALL: Duration = Duration::from_micros(300);
/// The first period the caller runs alone after a stall; it doubles while stalls recur.
const SOLO_MIN: Duration = Duration::from_millis(10);
/// The longest period alone between probes of the helpers.
const SOLO_MAX: Duration = Duration::from_millis(640);
/// A period alone this long after the previous one starts again from [`SOLO_MIN`].
const SOLO_FORGET: Duration = Duration::from_secs(2);
/// Stalls within [`BURST_WINDOW`] that send the caller solo.
const BURST: u64 = 3;
/// See [`BURST`]: with a core taken ~4 stalls fall in this window, on an idle but
/// preempted VM ~0.35.
const BURST_WINDOW: Duration = Duration::from_millis(50);

struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    n: usize,
    next: AtomicUsize,
    panicked: AtomicBool,
}

struct Pool {
    /// Helper threads started (set once, after they are spawned).
    helpers: AtomicUsize,
    /// The region being run (null between regions), its lifetime erased: it lives on
    /// the caller's stack, and the caller does not return before `users` is back to 0.
    job: AtomicPtr<Job<'static>>,
    /// Bumped when a region is posted.
    generation: AtomicUsize,
    /// Helpers that may be looking at `job`.
    users: AtomicUsize,
    /// Helpers parked on `wake`.
    sleepers: AtomicUsize,
    /// Whether the caller is blocked on `finished`.
    caller_blocked: AtomicBool,
    /// Whether a region is running (one caller at a time).
    busy: AtomicBool,
    /// The start of the pool's clock ([`Pool::now`]), set on first use: never read
    /// where there are no helpers (wasm32, whose `Instant::now` panics).
    epoch: OnceLock<Instant>,
    /// Until when (ns on the pool's clock) regions run on the caller alone.
    solo_until: AtomicU64,
    /// The current solo period (ns), and when the last one started (ns).
    solo_period: AtomicU64,
    last_solo: AtomicU64,
    /// When the current burst of stalls began (ns), and the stalls in it.
    burst_start: AtomicU64,
    burst: AtomicU64,
    lock: Mutex<()>,
    wake: Condvar,
    finished: Condvar,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::env::var("MAMBA_CPU_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&t| t > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let pool: &'static Pool = Box::leak(Box::new(Pool::new()));
        let mut spawned = 0;
        for i in 1..threads {
            let ok = std::thread::Builder::new()
                .name(format!("mamba-cpu-{i}"))
                .spawn(move || helper(pool))
                .is_ok();
            spawned += ok as usize;
        }
        pool.helpers.store(spawned, SeqCst);
        pool
    })
}

impl Pool {
    fn new() -> Pool {
        Pool {
            helpers: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            generation: AtomicUsize::new(0),
            users: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            caller_blocked: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            epoch: OnceLock::new(),
            solo_until: AtomicU64::new(0),
            solo_period: AtomicU64::new(0),
            last_solo: AtomicU64::new(0),
            burst_start: AtomicU64::new(0),
            burst: AtomicU64::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            finished: Condvar::new(),
        }
    }

    /// Nanoseconds on the pool's clock.
    fn now(&self) -> u64 {
        self.epoch.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }

    /// After a region whose caller waited `waited` for its helpers: [`BURST`] stalls
    /// within [`BURST_WINDOW`] start (or double) a period of running alone. Only the
    /// caller of a region calls this (one region runs at a time), so plain loads and
    /// stores of the atomics suffice.
    fn note_wait(&self, waited: Duration) {
        if waited <= STALL {
            return;
        }
        let now = self.now();
        let window = BURST_WINDOW.as_nanos() as u64;
        let start = self.burst_start.load(SeqCst);
        let stalls = if start == 0 || now.saturating_sub(start) > window {
            self.burst_start.store(now.max(1), SeqCst);
            1
        } else {
            self.burst.load(SeqCst) + 1
        };
        if stalls < BURST {
            self.burst.store(stalls, SeqCst);
            return;
        }
        self.burst_start.store(0, SeqCst);
        self.burst.store(0, SeqCst);
        let (min, max) = (SOLO_MIN.as_nanos() as u64, SOLO_MAX.as_nanos() as u64);
        let recent =
            now.saturating_sub(self.last_solo.load(SeqCst)) < SOLO_FORGET.as_nanos() as u64;
        let period = match self.solo_period.load(SeqCst) {
            p if recent && p > 0 => (2 * p).min(max),
            _ => min,
        };
        self.solo_period.store(period, SeqCst);
        self.last_solo.store(now, SeqCst);
        self.solo_until.store(now + period, SeqCst);
    }

    /// Whether regions now run on the caller alone (see [`STALL`]).
    fn solo(&self) -> bool {
        let until = self.solo_until.load(SeqCst);
        until != 0 && self.now() < until
    }
}

/// Threads a region runs on (the caller and the helpers).
pub(crate) fn threads() -> usize {
    pool().helpers.load(SeqCst) + 1
}

fn work(job: &Job<'_>) {
    loop {
        let c = job.next.fetch_add(1, SeqCst);
        if c >= job.n {
            return;
        }
        (job.f)(c);
    }
}

fn helper(pool: &'static Pool) {
    let mut seen = pool.generation.load(SeqCst);
    loop {
        let since = Instant::now();
        let mut polls = 0u32;
        loop {
            let g = pool.generation.load(SeqCst);
            if g != seen {
                seen = g;
                break;
            }
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(64) && since.elapsed() > HELPER_SPIN {
                let mut guard = pool.lock.lock().unwrap_or_else(|e| e.into_inner());
                pool.sleepers.fetch_add(1, SeqCst);
                while pool.generation.load(SeqCst) == seen {
                    guard = pool.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
                pool.sleepers.fetch_sub(1, SeqCst);
                seen = pool.generation.load(SeqCst);
                break;
            }
            std::hint::spin_loop();
        }
        pool.users.fetch_add(1, SeqCst);
        let p = pool.job.load(SeqCst);
        if !p.is_null() {
            // SAFETY: a non-null `job` is alive until `users` returns to 0: the caller
            // clears `job` and then waits for `users == 0` (both SeqCst, as here, so
            // either it sees this helper's increment or this load sees null).
            let job = unsafe { &*p };
            if catch_unwind(AssertUnwindSafe(|| work(job))).is_err() {
                job.panicked.store(true, SeqCst);
            }
        }
        pool.users.fetch_sub(1, SeqCst);
        if pool.caller_blocked.load(SeqCst) {
            let _guard = pool.lock.lock().unwrap_or_else(|e| e.into_inner());
            pool.finished.notify_all();
        }
    }
}

/// Clears the posted region and waits until no helper looks at it, also when the
/// caller's own chunk panics (so a helper never sees a dead stack frame).
struct Finish<'p>(&'p Pool);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let pool = self.0;
        pool.job.store(std::ptr::null_mut(), SeqCst);
        let since = Instant::now();
        while pool.users.load(SeqCst) != 0 {
            if since.elapsed() > CALLER_SPIN {
                let mut guard = pool.lock.lock().unwrap_or_else(|e| e.into_inner());
                pool.caller_blocked.store(true, SeqCst);
                while pool.users.load(SeqCst) != 0 {
                    guard = pool.finished.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
                pool.caller_blocked.store(false, SeqCst);
                break;
            }
            std::hint::spin_loop();
        }
        pool.note_wait(since.elapsed());
        pool.busy.store(false, SeqCst);
    }
}

/// Runs `f(0) .. f(n - 1)`, each exactly once, on the caller and the pool's helpers;
/// returns when all have run. A panic in any of them is raised here.
pub(crate) fn run(n: usize, f: &(dyn Fn(usize) + Sync)) {
    let pool = pool();
    let serial = n <= 1
        || pool.helpers.load(SeqCst) == 0
        || pool.solo()
        || pool
            .busy
            .compare_exchange(false, true, SeqCst, SeqCst)
            .is_err();
    if serial {
        (0..n).for_each(f);
        return;
    }
    let job = Job {
        f,
        n,
        next: AtomicUsize::new(0),
        panicked: AtomicBool::new(false),
    };
    {
        let _finish = Finish(pool);
        let p = &job as *const Job<'_> as *mut Job<'static>;
        pool.job.store(p, SeqCst);
        pool.generation.fetch_add(1, SeqCst);
        if pool.sleepers.load(SeqCst) > 0 {
            let _guard = pool.lock.lock().unwrap_or_else(|e| e.into_inner());
            pool.wake.notify_all();
        }
        // The caller's own chunks, timed: one that took longer than STALL means the
        // caller was descheduled (its core is shared), a stall like a late helper's.
        let mut longest = Duration::ZERO;
        loop {
            let c = job.next.fetch_add(1, SeqCst);
            if c >= job.n {
                break;
            }
            let t = Instant::now();
            f(c);
            longest = longest.max(t.elapsed());
        }
        pool.note_wait(longest);
    }
    assert!(!job.panicked.load(SeqCst), "a CPU worker panicked");
}

/// A pointer that may cross to the helpers; each chunk index derives a disjoint range.
struct Shared<T>(*mut T);
// SAFETY: only used by `par_chunks_mut`/`par_chunks2_mut`, which hand each chunk index
// (claimed exactly once by `run`) a disjoint sub-slice; T: Send moves those across.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// Chunk `c` of length `len` of a slice of `total` elements.
    ///
    /// # Safety
    /// Each `c` is used once at a time, and `c·len < total`.
    unsafe fn chunk<'a>(&self, c: usize, len: usize, total: usize) -> &'a mut [T] {
        let start = c * len;
        // SAFETY: start < total (the caller's contract) and the length is clamped to it;
        // distinct `c` give disjoint ranges of the one exclusively borrowed slice.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len.min(total - start)) }
    }
}

/// `f(c, chunk)` for every `chunk`-long piece of `data` (the last may be shorter), in
/// parallel on the pool.
pub(crate) fn par_chunks_mut<T: Send>(
    data: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let (total, chunk) = (data.len(), chunk.max(1));
    let p = Shared(data.as_mut_ptr());
    run(total.div_ceil(chunk), &|c| {
        // SAFETY: `run` passes each c < ceil(total / chunk) once, so c·chunk < total.
        f(c, unsafe { p.chunk(c, chunk, total) })
    });
}

/// As [`par_chunks_mut`] over two slices cut into the same number of chunks (`a` in
/// pieces of `ca`, `b` of `cb`).
pub(crate) fn par_chunks2_mut<A: Send, B: Send>(
    a: &mut [A],
    ca: usize,
    b: &mut [B],
    cb: usize,
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync,
) {
    let (ta, tb, ca, cb) = (a.len(), b.len(), ca.max(1), cb.max(1));
    let n = ta.div_ceil(ca).min(tb.div_ceil(cb));
    let (pa, pb) = (Shared(a.as_mut_ptr()), Shared(b.as_mut_ptr()));
    run(n, &|c| {
        // SAFETY: c < n, so c·ca < ta and c·cb < tb; each c once (see `par_chunks_mut`).
        let (sa, sb) = unsafe { (pa.chunk(c, ca, ta), pb.chunk(c, cb, tb)) };
        f(c, sa, sb)
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every index runs exactly once, from several threads at once (the second caller
    /// runs serially), and nested regions run too.
    #[test]
    fn every_chunk_runs_once() {
        std::thread::scope(|s| {
            for t in 0..4 {
                s.spawn(move || {
                    for n in [0usize, 1, 2, 3, 17, 1000] {
                        let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                        super::run(n, &|c| {
                            hits[c].fetch_add(1, Ordering::Relaxed);
                            if c == 0 && t == 0 {
                                super::run(3, &|_| {});
                            }
                        });
                        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "n {n}");
                    }
                });
            }
        });
        let mut v: Vec<usize> = vec![0; 1001];
        super::par_chunks_mut(&mut v, 64, |c, s| s.iter_mut().for_each(|x| *x += c + 1));
        assert!(v.iter().enumerate().all(|(i, &x)| x == i / 64 + 1));
    }

    /// A burst of stalls starts a period alone that doubles while bursts recur, up to
    /// SOLO_MAX; short waits and isolated stalls change nothing.
    #[test]
    fn stalls_send_the_caller_solo() {
        use super::*;
        let p = Pool::new();
        assert!(!p.solo());
        p.note_wait(STALL / 2);
        assert!(!p.solo());
        // Stalls further apart than BURST_WINDOW (a VM's vCPU preempted now and then)
        // never send it solo.
        for _ in 0..2 * BURST {
            p.note_wait(STALL * 2);
            assert!(!p.solo());
            std::thread::sleep(BURST_WINDOW + Duration::from_millis(10));
        }
        // BURST of them in a row do.
        for i in 1..=BURST {
            assert!(!p.solo(), "solo after {i} of {BURST} stalls");
            p.note_wait(STALL * 2);
        }
        assert!(p.solo());
        assert_eq!(p.solo_period.load(SeqCst), SOLO_MIN.as_nanos() as u64);
        for _ in 0..10 * BURST {
            p.note_wait(STALL * 2);
        }
        assert_eq!(p.solo_period.load(SeqCst), SOLO_MAX.as_nanos() as u64);
        assert!(p.solo_until.load(SeqCst) > p.now() + SOLO_MAX.as_nanos() as u64 / 2);
        // A region still runs every chunk once while the global pool is solo.
        for _ in 0..BURST {
            pool().note_wait(STALL * 2);
        }
        let n = AtomicUsize::new(0);
        super::run(50, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 50);
    }

    /// A panic in a chunk reaches the caller, and the pool still works afterwards.
    #[test]
    fn a_panicking_chunk_is_reported() {
        let r = std::panic::catch_unwind(|| {
            super::run(64, &|c| {
                if c == 40 {
                    panic!("chunk 40");
                }
            })
        });
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        super::run(64, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 64);
    }
}
