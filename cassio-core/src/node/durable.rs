//! Writing to a storage engine from a runtime thread: in batch sync mode a
//! write is durable only once the commit log's group commit has fsynced it,
//! and that wait must not block the thread, which serves other connections
//! meanwhile.

use crate::error::{Error, Result};
use crate::storage::{Cell, Engine, Lsn};

/// Writes `writes` in one batch and returns once they are durable as the
/// engine's sync mode defines it: at once in periodic mode; in batch mode
/// after the engine's sync thread reports the fsync (shared with every other
/// write waiting then).
pub(crate) async fn write_durably<K: AsRef<[u8]>>(
    engine: &Engine,
    writes: Vec<(K, Cell)>,
) -> Result<()> {
    synced(engine, engine.write_batch_unsynced(writes)?).await
}

/// Returns once the commit log is fsynced up to `lsn`, from
/// [`Engine::write_batch_unsynced`]; at once for `None` (nothing to wait for).
pub(crate) async fn synced(engine: &Engine, lsn: Option<Lsn>) -> Result<()> {
    let Some(lsn) = lsn else {
        return Ok(());
    };
    let (synced_tx, synced) = tokio::sync::oneshot::channel();
    engine.when_synced(
        lsn,
        Box::new(move |outcome| {
            let _ = synced_tx.send(outcome);
        }),
    );
    // Dropped uncalled only if the engine's sync thread died: not durable.
    synced.await.unwrap_or(Err(Error::Closed))
}

/// Writes `writes` without waiting for their fsync, for writes whose loss
/// is harmless (a hint's removal: the hint is replayed again). In batch
/// mode the sync thread still fsyncs them with its next group (a failure
/// there fails the commit log, which later writes report); with no sync
/// thread (inline mode) this syncs on the caller's thread.
pub(crate) fn write_eventually<K: AsRef<[u8]>>(
    engine: &Engine,
    writes: Vec<(K, Cell)>,
) -> Result<()> {
    if let Some(lsn) = engine.write_batch_unsynced(writes)? {
        engine.when_synced(lsn, Box::new(|_| {}));
    }
    Ok(())
}
