//! Background tasks with an owner: a component spawns into its [`Tasks`] instead of
//! `tokio::spawn`, and the tasks stop with it ([`Tasks::shutdown`], or when it is dropped).
//! Nothing it started outlives the component's shutdown.

use std::future::Future;
use std::sync::Mutex;

use tokio::task::JoinSet;

/// A set of background tasks one component owns: aborted together by
/// [`Tasks::shutdown`] or on drop. Finished tasks are reaped at each spawn, so a
/// long-lived owner that spawns often keeps only the tasks still running.
pub struct Tasks {
    /// `None` once shut down: nothing is spawned after that.
    set: Mutex<Option<JoinSet<()>>>,
    /// The runtime the owner was made on, which its tasks run on wherever they are
    /// spawned from: a request on an ingress thread (`crate::cores`) may start a task
    /// that outlives it (a barrier's drive), and that belongs with the node's other
    /// background work, not on the thread serving that connection. `None` outside a
    /// runtime: the spawner's.
    runtime: Option<tokio::runtime::Handle>,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks::new()
    }
}

impl Tasks {
    pub fn new() -> Self {
        Tasks { set: Mutex::new(Some(JoinSet::new())), runtime: tokio::runtime::Handle::try_current().ok() }
    }

    /// Run `task` in the background until it ends or the owner shuts down. False (and
    /// `task` dropped unstarted) once the owner has shut down.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> bool {
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        let Some(set) = set.as_mut() else { return false };
        while set.try_join_next().is_some() {}
        match &self.runtime {
            Some(rt) => drop(set.spawn_on(task, rt)),
            None => drop(set.spawn(task)),
        }
        true
    }

    /// Tasks still running (finished ones not yet reaped do not count).
    pub fn running(&self) -> usize {
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        let Some(set) = set.as_mut() else { return 0 };
        while set.try_join_next().is_some() {}
        set.len()
    }

    /// Abort every task and wait until they have stopped; later spawns are refused.
    pub async fn shutdown(&self) {
        let taken = self.set.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut set) = taken {
            set.abort_all();
            while set.join_next().await.is_some() {}
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::Tasks;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Set when dropped: a task's future is dropped once the task is aborted (also what
    /// runtime/http.rs's tests watch for).
    pub(crate) struct Flag(pub(crate) Arc<AtomicBool>);

    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn shutdown_stops_every_task_and_refuses_new_ones() {
        let tasks = Tasks::new();
        let stopped = Arc::new(AtomicBool::new(false));
        let flag = Flag(stopped.clone());
        assert!(tasks.spawn(async move {
            let _flag = flag;
            std::future::pending::<()>().await
        }));
        assert!(tasks.spawn(async {}));
        tokio::task::yield_now().await;
        assert_eq!(tasks.running(), 1, "the finished task is reaped");
        tasks.shutdown().await;
        assert!(stopped.load(Ordering::SeqCst), "shutdown returned with the task still running");
        assert!(!tasks.spawn(async {}), "a spawn after shutdown must be refused");
        assert_eq!(tasks.running(), 0);
    }

    #[tokio::test]
    async fn dropping_the_owner_aborts_its_tasks() {
        let stopped = Arc::new(AtomicBool::new(false));
        let flag = Flag(stopped.clone());
        let tasks = Tasks::new();
        tasks.spawn(async move {
            let _flag = flag;
            std::future::pending::<()>().await
        });
        drop(tasks);
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while !stopped.load(Ordering::SeqCst) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the task was not aborted when its owner dropped");
    }

    #[tokio::test]
    async fn tasks_run_on_the_owners_runtime_wherever_they_are_spawned_from() {
        let tasks = Arc::new(Tasks::new());
        let owner = std::thread::current().id();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // A request on an ingress thread: another runtime, on another thread.
        let t = tasks.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async move {
                assert!(t.spawn(async move {
                    let _ = tx.send(std::thread::current().id());
                }));
            });
        })
        .join()
        .unwrap();
        assert_eq!(rx.await.unwrap(), owner, "the task ran off the owner's runtime");
    }
}
