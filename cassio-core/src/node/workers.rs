//! Client threads: a node serves its Redis-protocol connections on several
//! threads, each with a runtime of its own (thread per core, as ScyllaDB
//! does), so one node is not held to one core. The node's own runtime keeps
//! gossip, the native protocol and accepting; an accepted client connection
//! moves to one of these threads (round-robin) and stays there, with its own
//! pooled connections to peers so that a request's messages never cross
//! threads.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::error::{Error, Result};

thread_local! {
    /// 0 on a node's own thread, `i + 1` on its client thread `i`.
    static CLIENT_THREAD: Cell<usize> = const { Cell::new(0) };
}

/// Which thread of its node the caller runs on (0: the node's own); peer
/// connections are pooled per thread.
pub(crate) fn current_thread_index() -> usize {
    CLIENT_THREAD.with(Cell::get)
}

/// The runtime of each of a node's threads: current-thread, and out of work
/// it lets a thread waiting for this core (often the client or coordinator
/// sending the next request) run first, so the poll after finds that request
/// ready instead of sleeping and being woken for it. That halves context
/// switches when threads outnumber cores, and costs one syscall when not.
pub(crate) fn node_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(std::thread::yield_now)
        .build()
}

/// How often a client thread's timer fires with nothing to do.
const TIMER_TICK_MS: u64 = 50;

/// Keeps a timer due within [`TIMER_TICK_MS`] on this thread, for ever.
/// Every request registers a deadline; tokio interrupts its driver (an
/// eventfd write, and a wasted wake-up) whenever a new timer is due before
/// the driver's next planned wake, and with no timer at all that is every
/// new one. A timer always due soon makes request deadlines (seconds away)
/// later than that wake, so registering them costs no syscall.
async fn keep_timer_wake_near() {
    let mut tick = tokio::time::interval(Duration::from_millis(TIMER_TICK_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

pub(crate) struct ClientThreads {
    handles: Vec<Handle>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
    next: AtomicUsize,
}

impl ClientThreads {
    /// Starts `count` threads, each running a current-thread runtime until
    /// [`ClientThreads::stop`].
    pub(crate) fn start(count: usize, node_name: &str) -> Result<ClientThreads> {
        let (stop, stopped) = watch::channel(false);
        let mut handles = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = node_runtime().map_err(|e| Error::io("client thread runtime", e))?;
            handles.push(runtime.handle().clone());
            let mut stopped = stopped.clone();
            let thread = std::thread::Builder::new()
                .name(format!("cassio-{node_name}-client-{i}"))
                .spawn(move || {
                    CLIENT_THREAD.with(|c| c.set(i + 1));
                    runtime.block_on(async move {
                        tokio::select! {
                            biased;
                            _ = stopped.wait_for(|stop| *stop) => {}
                            _ = keep_timer_wake_near() => {}
                        }
                    });
                    // Dropping the runtime here (not in async code) cancels
                    // the connections it still serves.
                    drop(runtime);
                })
                .map_err(|e| Error::io("client thread", e))?;
            threads.push(thread);
        }
        Ok(ClientThreads {
            handles,
            threads: Mutex::new(threads),
            stop,
            next: AtomicUsize::new(0),
        })
    }

    /// The runtime of the next thread in turn.
    pub(crate) fn next(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }

    /// Stops every thread and waits until they ended, so no client command
    /// runs any more (the node flushes storage after this).
    pub(crate) async fn stop(&self) {
        let _ = self.stop.send(true);
        let threads = std::mem::take(&mut *self.threads.lock());
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        if joined.await.is_err() {
            tracing::error!("a client thread panicked");
        }
    }
}
