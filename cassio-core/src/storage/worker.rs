//! Background threads: one flusher, one compactor and one syncer. The
//! flusher and compactor are woken through crossbeam channels; every thread
//! polls a closing flag, so shutdown never waits longer than one poll
//! interval plus the job in progress. A failed flush, compaction or
//! periodic sync marks the engine failed (writes are then refused) instead
//! of retrying forever on a broken disk; a failed group commit fails the
//! commit log, which refuses writes from then on.
//!
//! The syncer fsyncs the commit log every `sync_period_ms` in periodic mode;
//! in batch mode it is the group commit of writers that must not block
//! ([`Engine::when_synced`]): it takes every write waiting, fsyncs once for
//! all of them and tells each.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};
use parking_lot::{Condvar, Mutex};

use super::config::SyncMode;
use super::engine::{Engine, Shared, SyncDone};
use crate::error::{Error, Result};

const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A write waiting for the commit log to be fsynced up to its sequence number.
type SyncWaiter = (u64, SyncDone);

/// The writes waiting for a batch-mode fsync. A mutex and condition
/// variable rather than a channel: the sync thread sleeps until the first
/// waiter, where a channel's receive spins and yields the CPU first, which
/// cost 7% of a node's CPU under unpipelined durable writes.
#[derive(Default)]
pub(crate) struct SyncQueue {
    state: Mutex<SyncQueueState>,
    waiting: Condvar,
}

#[derive(Default)]
struct SyncQueueState {
    waiters: Vec<SyncWaiter>,
    /// The sync thread has stopped: waiters sync on their own thread.
    stopped: bool,
}

impl SyncQueue {
    /// Queues `done` for the sync thread; gives it back if that has stopped.
    pub(crate) fn push(&self, lsn: u64, done: SyncDone) -> Option<SyncWaiter> {
        let mut state = self.state.lock();
        if state.stopped {
            return Some((lsn, done));
        }
        state.waiters.push((lsn, done));
        if state.waiters.len() == 1 {
            self.waiting.notify_one();
        }
        None
    }

    /// From now on writers sync on their own thread; returns what was
    /// still queued.
    fn stop(&self) -> Vec<SyncWaiter> {
        let mut state = self.state.lock();
        state.stopped = true;
        std::mem::take(&mut state.waiters)
    }
}

/// Wake-up channels, capacity 1 each since one pending wake-up is enough;
/// and the queue of writes waiting for a batch-mode fsync.
pub(crate) struct WorkSignals {
    flush_tx: Sender<()>,
    flush_rx: Receiver<()>,
    compact_tx: Sender<()>,
    compact_rx: Receiver<()>,
    pub(crate) sync_queue: SyncQueue,
}

impl WorkSignals {
    pub(crate) fn new() -> Self {
        let (flush_tx, flush_rx) = bounded(1);
        let (compact_tx, compact_rx) = bounded(1);
        WorkSignals {
            flush_tx,
            flush_rx,
            compact_tx,
            compact_rx,
            sync_queue: SyncQueue::default(),
        }
    }

    pub(crate) fn wake_flusher(&self) {
        let _ = self.flush_tx.try_send(());
    }

    pub(crate) fn wake_compactor(&self) {
        let _ = self.compact_tx.try_send(());
    }
}

pub(crate) fn start(shared: &Arc<Shared>) -> Result<Vec<JoinHandle<()>>> {
    let Some(work) = &shared.work else {
        return Ok(Vec::new());
    };
    let mut handles = Vec::new();
    let flusher = {
        let shared = shared.clone();
        let wake = work.flush_rx.clone();
        move || {
            run_on_wake(&shared, &wake, "flush", |s| {
                while s.flush_oldest()? {
                    s.signal_compaction();
                }
                Ok(())
            })
        }
    };
    handles.push(spawn("cassio-flush", flusher)?);
    let compactor = {
        let shared = shared.clone();
        let wake = work.compact_rx.clone();
        move || {
            run_on_wake(&shared, &wake, "compaction", |s| {
                while s.compact_once(false)? {}
                Ok(())
            })
        }
    };
    handles.push(spawn("cassio-compact", compactor)?);
    let syncer = {
        let shared = shared.clone();
        match shared.config.sync_mode {
            SyncMode::Periodic => {
                // Nothing waits for a sync here; whatever would, syncs itself.
                work.sync_queue.stop();
                spawn("cassio-sync", move || sync_periodically(&shared))?
            }
            SyncMode::Batch => spawn("cassio-sync", move || group_commit(&shared))?,
        }
    };
    handles.push(syncer);
    Ok(handles)
}

/// Periodic mode: fsyncs the commit log every `sync_period_ms`.
fn sync_periodically(shared: &Shared) {
    let period = Duration::from_millis(shared.config.sync_period_ms);
    let mut waited = Duration::ZERO;
    while !shared.closing.load(Ordering::Acquire) {
        std::thread::sleep(POLL_INTERVAL.min(period));
        waited += POLL_INTERVAL.min(period);
        if waited >= period {
            waited = Duration::ZERO;
            if let Err(e) = shared.log.sync_all() {
                shared.fail("periodic commit-log sync", &e);
                return;
            }
        }
    }
}

/// Batch mode: takes every write waiting, fsyncs once for all of them (the
/// first `sync_to` covers everything appended so far, so the others find
/// their record synced) and tells each. When the engine closes it answers
/// what is queued and marks the queue stopped, so later writers sync on
/// their own thread.
fn group_commit(shared: &Shared) {
    let Some(work) = &shared.work else {
        return;
    };
    let queue = &work.sync_queue;
    let _stopped_even_by_a_panic = StopOnDrop(queue);
    loop {
        let group = {
            let mut state = queue.state.lock();
            while state.waiters.is_empty() && !shared.closing.load(Ordering::Acquire) {
                queue.waiting.wait_for(&mut state, POLL_INTERVAL);
            }
            if state.waiters.is_empty() {
                // Under the lock: from here writers sync on their own thread.
                state.stopped = true;
                return;
            }
            std::mem::take(&mut state.waiters)
        };
        for (lsn, done) in group {
            done(shared.log.sync_to(lsn));
        }
    }
}

/// Marks the queue stopped when the sync thread ends, however it ends, and
/// drops what is still queued uncalled (those writes are not durable), so no
/// writer waits for a thread that is gone.
struct StopOnDrop<'a>(&'a SyncQueue);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        drop(self.0.stop());
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| Error::io(name, e))
}

fn run_on_wake(
    shared: &Shared,
    wake: &Receiver<()>,
    what: &str,
    job: impl Fn(&Shared) -> Result<()>,
) {
    while !shared.closing.load(Ordering::Acquire) {
        if wake.recv_timeout(POLL_INTERVAL).is_err() {
            continue;
        }
        if shared.failed.load(Ordering::Acquire) || shared.closing.load(Ordering::Acquire) {
            continue;
        }
        if let Err(e) = job(shared) {
            shared.fail(what, &e);
        }
    }
}

impl Engine {
    /// Asks the background threads to stop and waits for them.
    pub(crate) fn stop_workers(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        for handle in self.workers.drain(..) {
            if handle.join().is_err() {
                tracing::error!("a storage background thread panicked");
            }
        }
    }
}
