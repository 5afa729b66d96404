//! Work a coordinator leaves running after it answered: waiting for late
//! replicas (and hinting those that fail) and late read repair. Shutdown
//! waits for it, so a write acknowledged just before a stop still reaches
//! its slow replicas or their hints.
//!
//! Most batches leave some: at QUORUM of three, the third replica's answer
//! usually comes after the client's. A task per batch would cost more than
//! the rest of a one-key batch, so each thread runs its late work in one
//! task of its own, which polls it all together.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use super::workers::current_thread_index;

type Late = Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Default)]
pub(crate) struct Background {
    running: AtomicUsize,
    idle: Notify,
    /// Per thread (see [`current_thread_index`]): the queue of the task that
    /// runs that thread's late work.
    runners: Mutex<fnv::FnvHashMap<usize, mpsc::UnboundedSender<Late>>>,
}

/// Held by one piece of background work; dropping it (the work ended or
/// was cancelled) counts it out.
pub(crate) struct Running(Arc<Background>);

impl Background {
    pub(crate) fn enter(self: &Arc<Self>) -> Running {
        self.running.fetch_add(1, Ordering::AcqRel);
        Running(self.clone())
    }

    /// Runs `work` on this thread's runner, counted as running until it
    /// ends. The runner is started on first use, and again if its runtime
    /// went away.
    pub(crate) fn run(self: &Arc<Self>, work: impl Future<Output = ()> + Send + 'static) {
        let running = self.enter();
        let mut work: Late = Box::pin(async move {
            work.await;
            drop(running);
        });
        let thread = current_thread_index();
        let mut runners = self.runners.lock();
        if let Some(runner) = runners.get(&thread) {
            match runner.send(work) {
                Ok(()) => return,
                Err(closed) => work = closed.0,
            }
        }
        let (runner, queue) = mpsc::unbounded_channel();
        tokio::spawn(run_late(queue));
        let _ = runner.send(work);
        runners.insert(thread, runner);
    }

    /// Waits until no background work runs, or `limit` passed; false then.
    pub(crate) async fn wait_idle(&self, limit: Duration) -> bool {
        let idle = async {
            loop {
                let notified = self.idle.notified();
                if self.running.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, idle).await.is_ok()
    }
}

/// A thread's runner: takes work from `queue` and polls all of it until it
/// ends. Lives as long as its runtime.
async fn run_late(mut queue: mpsc::UnboundedReceiver<Late>) {
    let mut works = FuturesUnordered::new();
    loop {
        // Biased, running work first (it only ends, so new work still
        // comes in): tokio would otherwise pick a ready branch at random,
        // from a seed no simulation controls.
        tokio::select! {
            biased;
            Some(()) = works.next(), if !works.is_empty() => {}
            work = queue.recv() => match work {
                Some(work) => works.push(work),
                None => break,
            },
        }
    }
    while works.next().await.is_some() {}
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current_thread_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    }

    #[test]
    fn late_work_runs_and_is_waited_for_across_runtimes() {
        let background = Arc::new(Background::default());
        let done = Arc::new(AtomicUsize::new(0));
        for round in 1..=2 {
            // A new runtime on the same thread: the old runner is gone with
            // the old runtime, and a new one starts.
            current_thread_runtime().block_on(async {
                let (release, released) = tokio::sync::oneshot::channel::<()>();
                let finished = done.clone();
                background.run(async move {
                    let _ = released.await;
                    finished.fetch_add(1, Ordering::SeqCst);
                });
                for _ in 0..3 {
                    let finished = done.clone();
                    background.run(async move {
                        finished.fetch_add(1, Ordering::SeqCst);
                    });
                }
                assert!(
                    !background.wait_idle(Duration::from_millis(50)).await,
                    "one piece of work still waits"
                );
                let _ = release.send(());
                assert!(background.wait_idle(Duration::from_secs(5)).await);
            });
            assert_eq!(done.load(Ordering::SeqCst), 4 * round);
        }
    }

    #[test]
    fn work_cancelled_with_its_runtime_is_counted_out() {
        let background = Arc::new(Background::default());
        current_thread_runtime().block_on(async {
            background.run(std::future::pending());
            tokio::task::yield_now().await;
        });
        // The runtime dropped the runner and the work with it.
        let idle = current_thread_runtime()
            .block_on(async { background.wait_idle(Duration::from_secs(1)).await });
        assert!(idle);
    }
}
