//! Rebuilding the projections by replay: from position 0, or from a stored projection
//! snapshot at position N when it is still valid, optionally stopping at a business time.

use chat_ledger_events::{decode, Hash, Instant};
use chat_ledger_projections::{LedgerView, PROJECTION_VERSION};
use serde::{Deserialize, Serialize};

use crate::store::{EventStore, StoreError};

/// Events read per store call while replaying.
pub const REPLAY_PAGE_EVENTS: usize = 4096;

/// Name under which the projection snapshot is stored.
pub const SNAPSHOT_NAME: &str = "projections";

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event {seq} cannot be read: {reason}; run `chat-ledger verify` to find the first bad position")]
    Corrupt { seq: u64, reason: String },
}

#[derive(Deserialize)]
struct Snapshot {
    projection_version: u32,
    view: LedgerView,
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    projection_version: u32,
    view: &'a LedgerView,
}

/// Folds stored events after `view.seq` into `view`, stopping before the first event
/// that occurred after `until`.
pub fn replay_into(store: &dyn EventStore, view: &mut LedgerView, until: Option<Instant>) -> Result<(), ReplayError> {
    loop {
        let page = store.read(view.seq + 1, REPLAY_PAGE_EVENTS)?;
        if page.is_empty() {
            return Ok(());
        }
        for stored in &page {
            let event = decode(&stored.bytes).map_err(|e| ReplayError::Corrupt {
                seq: stored.seq,
                reason: e.0,
            })?;
            if until.is_some_and(|t| event.occurred_at > t) {
                return Ok(());
            }
            if event.seq != stored.seq {
                return Err(ReplayError::Corrupt {
                    seq: stored.seq,
                    reason: format!("its bytes say position {}", event.seq),
                });
            }
            view.apply(&event, Hash::of(&stored.bytes))
                .map_err(|e| ReplayError::Corrupt {
                    seq: stored.seq,
                    reason: e.to_string(),
                })?;
        }
    }
}

/// The projections at the log's head, or as of business time `until`. Starts from the
/// stored snapshot when it was written by this projection version, lies within the log
/// and still matches the log's hash at its position; otherwise from position 0.
pub fn load(store: &dyn EventStore, until: Option<Instant>) -> Result<LedgerView, ReplayError> {
    let mut view = load_snapshot(store)?
        .filter(|v| until.is_none_or(|t| v.clock.is_none_or(|clock| clock <= t)))
        .unwrap_or_default();
    replay_into(store, &mut view, until)?;
    conserved(&view)?;
    Ok(view)
}

/// Rule `money.conservation`, checked on every replay: per account and money kind, the
/// flows of the orders, bills and funding projections add up to the balance fold.
fn conserved(view: &LedgerView) -> Result<(), ReplayError> {
    view.check_conservation()
        .map_err(|reason| ReplayError::Corrupt { seq: view.seq, reason })
}

/// The projections rebuilt from position 0, ignoring any stored snapshot.
pub fn load_from_zero(store: &dyn EventStore, until: Option<Instant>) -> Result<LedgerView, ReplayError> {
    let mut view = LedgerView::default();
    replay_into(store, &mut view, until)?;
    conserved(&view)?;
    Ok(view)
}

/// The position of the stored projection snapshot, if it is valid for this build and log.
pub fn snapshot_position(store: &dyn EventStore) -> Result<Option<u64>, ReplayError> {
    Ok(load_snapshot(store)?.map(|v| v.seq))
}

fn load_snapshot(store: &dyn EventStore) -> Result<Option<LedgerView>, ReplayError> {
    let Some(bytes) = store.get_snapshot(SNAPSHOT_NAME)? else {
        return Ok(None);
    };
    let Ok(snapshot) = serde_json::from_slice::<Snapshot>(&bytes) else {
        return Ok(None);
    };
    if snapshot.projection_version != PROJECTION_VERSION || snapshot.view.seq == 0 {
        return Ok(None);
    }
    let at = store.read(snapshot.view.seq, 1)?;
    let matches = at
        .first()
        .is_some_and(|e| e.seq == snapshot.view.seq && Hash::of(&e.bytes) == snapshot.view.head_hash);
    Ok(matches.then_some(snapshot.view))
}

pub fn save_snapshot(store: &dyn EventStore, view: &LedgerView) -> Result<(), StoreError> {
    let snapshot = SnapshotRef {
        projection_version: PROJECTION_VERSION,
        view,
    };
    store.put_snapshot(SNAPSHOT_NAME, &serde_json::to_vec(&snapshot).expect("views serialize"))
}
