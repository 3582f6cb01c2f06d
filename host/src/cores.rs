//! Connection threads (`--ingress-threads per-core`, the default): one thread per core,
//! each running its own single-threaded tokio runtime and accepting on its own socket of
//! the ingress address (`SO_REUSEPORT`, `server::serve`); a thread keeps the connections
//! it accepts unless another has fewer open ([`Cores::place`]). A request on such a
//! connection is read, run and answered on one thread: never woken on another or stolen
//! by another worker, which a multi-threaded runtime does for every request at this rate
//! (docs/BENCHMARKS.md, "Kept, 2026-12-06: ingress connections on a runtime per core").
//!
//! The threads are pinned one per CPU when they cover the process's CPUs: unpinned, the
//! kernel at times put two on one core, and in those rounds reused `hello`'s p99 reached
//! 3.3-4.4 ms against the shared runtime's 0.8-2.1 (pinned: 0.7-1.1).
//!
//! The trade-off: connections, not requests, are balanced. A long guest shares its thread
//! with the connections placed there (epoch interruption still gives them turns) while the
//! other may idle, and a lone client waits for its thread's wake-up on a VM that halts idle
//! vCPUs at once (the start-up hint says so). `--ingress-threads shared` runs connections
//! on the node's multi-threaded runtime instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Where the ingress runs its connections (`--ingress-threads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IngressThreads {
    /// A runtime per core; each connection on the one with the fewest open.
    #[default]
    PerCore,
    /// The node's multi-threaded runtime, whose workers share every connection.
    Shared,
}

impl std::str::FromStr for IngressThreads {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "per-core" => Ok(IngressThreads::PerCore),
            "shared" => Ok(IngressThreads::Shared),
            _ => Err(format!("unknown ingress threading {s:?}: use per-core or shared")),
        }
    }
}

/// How long a connection thread's runtime waits, once stopped, for blocking work its
/// requests started (a RocksDB call) before it lets go of it.
const BLOCKING_GRACE: Duration = Duration::from_secs(2);

/// The threads. [`Cores::stop`] (or dropping this) stops them: whatever still runs on
/// them is cut.
pub struct Cores {
    handles: Vec<Handle>,
    /// Connections open on each thread.
    open: Arc<[AtomicUsize]>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The CPU each thread is pinned to, if they are.
    pins: Option<Vec<usize>>,
    /// Where ties start: the process id modulo the threads. Nodes sharing a machine
    /// (a dev cluster, tests) would otherwise put each one's lone connection on thread 0,
    /// all pinned to the same CPU.
    first: usize,
}

impl Cores {
    /// `n` (at least one) threads named `{name}-{i}`. When they are as many as the CPUs
    /// this process may run on (its affinity mask), each is pinned to its own: left to
    /// the kernel, two of them at times shared one core while the other ran the client,
    /// and that thread's connections waited (docs/BENCHMARKS.md, "Kept, 2026-12-06:
    /// connection threads pinned"). Fewer threads than CPUs (a CPU quota) stay unpinned.
    pub fn start(name: &str, n: usize) -> std::io::Result<Cores> {
        Cores::start_at(name, n, std::process::id() as usize)
    }

    /// [`Cores::start`] with ties starting at thread `seed % n`.
    fn start_at(name: &str, n: usize, seed: usize) -> std::io::Result<Cores> {
        let n = n.max(1);
        let cpus = affinity::allowed();
        let pins = (cpus.len() == n).then_some(cpus);
        let open = (0..n).map(|_| AtomicUsize::new(0)).collect();
        let first = seed % n;
        let mut cores = Cores { handles: vec![], open, stops: vec![], threads: vec![], pins: pins.clone(), first };
        for i in 0..n {
            let mut builder = tokio::runtime::Builder::new_current_thread();
            if let Some(all) = pins.clone() {
                // A thread inherits its creator's mask, and a thread's runtime starts its
                // blocking threads (the grid's RocksDB calls) from it: those go anywhere.
                builder.on_thread_start(move || drop(affinity::set(&all)));
            }
            let rt = builder.enable_all().build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            cores.handles.push(rt.handle().clone());
            cores.stops.push(stop);
            let pin = pins.as_ref().map(|cpus| cpus[i]);
            let thread = std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || {
                if let Some(cpu) = pin
                    && let Err(e) = affinity::set(&[cpu])
                {
                    tracing::warn!(cpu, error = %e, "could not pin a connection thread to its CPU; it runs unpinned");
                }
                let _ = rt.block_on(stopped);
                rt.shutdown_timeout(BLOCKING_GRACE);
            })?;
            cores.threads.push(thread);
        }
        Ok(cores)
    }

    /// One per core this process may use.
    pub fn per_core(name: &str) -> std::io::Result<Cores> {
        Cores::start(name, std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// How many threads there are.
    pub fn threads(&self) -> usize {
        self.handles.len()
    }

    /// The CPU each thread was pinned to (thread `i` to the `i`th), or `None`: unpinned.
    pub fn pinned(&self) -> Option<&[usize]> {
        self.pins.as_deref()
    }

    /// What `mode` asks for: threads per core, or none (the shared runtime).
    pub fn for_mode(mode: IngressThreads, name: &str) -> std::io::Result<Option<Cores>> {
        match mode {
            IngressThreads::PerCore => Cores::per_core(name).map(Some),
            IngressThreads::Shared => Ok(None),
        }
    }

    /// The runtime a new connection goes to: the one with the fewest open, counted until
    /// the returned [`OnCore`] drops. A tie goes to the first of them counting from a
    /// thread the process id picks.
    pub fn next(&self) -> (&Handle, OnCore) {
        let (_, rt, on) = self.place(usize::MAX);
        (rt, on)
    }

    /// Where a connection accepted on thread `here` runs: there, unless another thread
    /// has fewer open (then on the one with the fewest, as [`Cores::next`]), so threads
    /// stay balanced and a connection moves only when they are not. Returns the thread's
    /// index with its runtime.
    pub fn place(&self, here: usize) -> (usize, &Handle, OnCore) {
        let n = self.open.len();
        let least =
            (0..n).map(|k| (self.first + k) % n).min_by_key(|&i| self.open[i].load(Ordering::Relaxed)).unwrap_or(0);
        let i = match self.open.get(here) {
            Some(o) if o.load(Ordering::Relaxed) <= self.open[least].load(Ordering::Relaxed) => here,
            _ => least,
        };
        self.open[i].fetch_add(1, Ordering::Relaxed);
        (i, &self.handles[i], OnCore { open: self.open.clone(), i })
    }

    /// Thread `i`'s runtime.
    pub fn handle(&self, i: usize) -> &Handle {
        &self.handles[i]
    }

    /// Stop the threads and wait for them (off the async runtime: a thread ends once its
    /// runtime has dropped what ran on it).
    pub async fn stop(mut self) {
        self.stops.clear();
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))).await;
    }
}

/// A connection counted on its thread ([`Cores::next`]) while this lives.
pub struct OnCore {
    open: Arc<[AtomicUsize]>,
    i: usize,
}

impl Drop for OnCore {
    fn drop(&mut self) {
        self.open[self.i].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Cores {
    /// Tells the threads to stop; [`Cores::stop`] also waits for them.
    fn drop(&mut self) {
        self.stops.clear();
    }
}

/// The process's CPU affinity, through `sched_getaffinity` / `sched_setaffinity`.
mod affinity {
    /// The CPUs the calling thread may run on (the process's mask, inherited), in order;
    /// empty where the mask cannot be read.
    pub fn allowed() -> Vec<usize> {
        // SAFETY: `cpu_set_t` is plain bits; the call writes at most its size.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
            return vec![];
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
    }

    /// Let the calling thread run on `cpus`.
    pub fn set(cpus: &[usize]) -> std::io::Result<()> {
        // SAFETY: as above; each CPU is below `CPU_SETSIZE` (they came from `allowed`).
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &cpu in cpus {
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        match unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_by_name() {
        assert_eq!("per-core".parse(), Ok(IngressThreads::PerCore));
        assert_eq!("shared".parse(), Ok(IngressThreads::Shared));
        let e = "threads".parse::<IngressThreads>().unwrap_err();
        assert!(e.contains("use per-core or shared"), "{e}");
    }

    async fn thread_of(cores: &Cores) -> (String, OnCore) {
        let (rt, on) = cores.next();
        let name = rt.spawn(async { std::thread::current().name().map(str::to_string) });
        (name.await.unwrap().unwrap(), on)
    }

    #[tokio::test]
    async fn connections_go_to_the_thread_with_the_fewest_and_stop_ends_them() {
        let cores = Cores::start_at("t-core", 2, 0).unwrap();
        let (a, on_a) = thread_of(&cores).await;
        let (b, _on_b) = thread_of(&cores).await;
        let (c, on_c) = thread_of(&cores).await;
        assert_eq!([a.as_str(), b.as_str(), c.as_str()], ["t-core-0", "t-core-1", "t-core-0"]);
        // Both of thread 0's connections close: the next goes there (1 still has one),
        // and on a tie the first thread takes it.
        drop((on_a, on_c));
        let (d, _on_d) = thread_of(&cores).await;
        let (e, _on_e) = thread_of(&cores).await;
        let (f, _on_f) = thread_of(&cores).await;
        assert_eq!([d.as_str(), e.as_str(), f.as_str()], ["t-core-0", "t-core-0", "t-core-1"]);
        // A task still running when the threads stop is cut, not waited for.
        let forever = cores.next().0.spawn(std::future::pending::<()>());
        cores.stop().await;
        assert!(forever.await.unwrap_err().is_cancelled());
    }

    #[tokio::test]
    async fn ties_start_where_the_seed_says_so_lone_connections_of_two_nodes_part() {
        let one = Cores::start_at("t-one", 2, 4).unwrap();
        let other = Cores::start_at("t-other", 2, 5).unwrap();
        let (a, _on_a) = thread_of(&one).await;
        let (b, _on_b) = thread_of(&other).await;
        assert_eq!([a.as_str(), b.as_str()], ["t-one-0", "t-other-1"]);
        // From there on, the fewest open: the other thread, then the seed's again.
        let (c, _on_c) = thread_of(&other).await;
        let (d, _on_d) = thread_of(&other).await;
        assert_eq!([c.as_str(), d.as_str()], ["t-other-0", "t-other-1"]);
        one.stop().await;
        other.stop().await;
    }

    #[tokio::test]
    async fn a_connection_stays_on_the_thread_that_accepted_it_unless_another_has_fewer() {
        let cores = Cores::start_at("t-place", 2, 0).unwrap();
        // A tie: where it was accepted.
        let (i, _, a) = cores.place(1);
        assert_eq!(i, 1);
        // Thread 1 has one more than thread 0: it moves there.
        let (i, _, b) = cores.place(1);
        assert_eq!(i, 0);
        let (i, _, c) = cores.place(0);
        assert_eq!(i, 0);
        // Thread 0 now has two, thread 1 one.
        let (i, _, _d) = cores.place(0);
        assert_eq!(i, 1);
        drop((a, b, c));
        cores.stop().await;
    }

    async fn cpus_of(cores: &Cores) -> Vec<Vec<usize>> {
        let mut out = vec![];
        for rt in &cores.handles {
            out.push(rt.spawn(async { affinity::allowed() }).await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn threads_are_pinned_one_per_cpu_only_when_they_cover_the_mask() {
        let cpus = affinity::allowed();
        assert!(!cpus.is_empty(), "the affinity mask reads");
        let cores = Cores::start("t-pin", cpus.len()).unwrap();
        assert_eq!(cores.pinned(), Some(&cpus[..]));
        // Thread i on the ith CPU.
        let each: Vec<Vec<usize>> = cpus.iter().map(|&c| vec![c]).collect();
        assert_eq!(cpus_of(&cores).await, each);
        // Their blocking work (RocksDB calls) runs anywhere.
        let blocking = cores.handles[0].spawn(async { tokio::task::spawn_blocking(affinity::allowed).await.unwrap() });
        assert_eq!(blocking.await.unwrap(), cpus);
        cores.stop().await;

        // One thread more than CPUs (a quota would give fewer): nobody is pinned.
        let cores = Cores::start("t-free", cpus.len() + 1).unwrap();
        assert_eq!(cores.pinned(), None);
        assert!(cpus_of(&cores).await.iter().all(|mask| *mask == cpus));
        cores.stop().await;
    }
}
