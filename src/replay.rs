//! Rebuilding the projections by replay: from position 0, or from a stored projection
//! snapshot at position N when it is still valid, optionally stopping at a business time.

use std::collections::{BTreeMap, BTreeSet};

use chat_ledger_events::{decode, AccountId, AppId, Currency, Hash, Instant, StreamId};
use chat_ledger_projections::{
    AccountView, AppView, BillView, Deadline, LedgerView, OrderView, RulebookView, PROJECTION_VERSION,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::store::{EventStore, StoreError};

/// Events read per store call while replaying.
pub const REPLAY_PAGE_EVENTS: usize = 4096;

/// Name of the projection snapshot's header; its other parts are named under it.
pub const SNAPSHOT_NAME: &str = "projections";

/// Layout of the stored projection snapshot (apart from the projections' own version,
/// [`PROJECTION_VERSION`]). 2: sharded — a small header, one part with the shared maps
/// (streams, orders, bills, deadlines), one part per account and one per app — so that a
/// query about one app reads that app alone. A snapshot of another format is ignored.
pub const SNAPSHOT_FORMAT: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event {seq} cannot be read: {reason}; run `chat-ledger verify` to find the first bad position")]
    Corrupt { seq: u64, reason: String },
}

/// The header: everything small, and the position every part was written at.
#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    projection_version: u32,
    seq: u64,
    head_hash: Hash,
    clock: Option<Instant>,
    rulebook: Option<RulebookView>,
    currency: Option<Currency>,
    inputs_recorded: u64,
    commands_rejected: u64,
}

/// The maps shared by every query, and which account and app parts exist.
#[derive(Serialize)]
struct SharedRef<'a> {
    seq: u64,
    streams: &'a BTreeMap<StreamId, u64>,
    orders: &'a BTreeMap<String, OrderView>,
    bills: &'a BTreeMap<String, BillView>,
    deadlines: &'a BTreeSet<Deadline>,
    accounts: Vec<&'a AccountId>,
    apps: Vec<AppId>,
}

#[derive(Deserialize)]
struct Shared {
    seq: u64,
    streams: BTreeMap<StreamId, u64>,
    orders: BTreeMap<String, OrderView>,
    bills: BTreeMap<String, BillView>,
    deadlines: BTreeSet<Deadline>,
    accounts: Vec<AccountId>,
    apps: Vec<AppId>,
}

/// One account's or app's part, stamped with the header's position.
#[derive(Serialize)]
struct PartRef<'a, T> {
    seq: u64,
    view: &'a T,
}

#[derive(Deserialize)]
struct Part<T> {
    seq: u64,
    view: T,
}

fn shared_name() -> String {
    format!("{SNAPSHOT_NAME}/shared")
}

fn account_name(account: &AccountId) -> String {
    format!("{SNAPSHOT_NAME}/account/{account}")
}

fn app_name(app: AppId) -> String {
    format!("{SNAPSHOT_NAME}/app/{app}")
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

/// The snapshot's header, if it was written by this build's format and projection
/// version and still matches the log's hash at its position.
fn valid_header(store: &dyn EventStore) -> Result<Option<Header>, ReplayError> {
    let Some(bytes) = store.get_snapshot(SNAPSHOT_NAME)? else {
        return Ok(None);
    };
    let Ok(header) = serde_json::from_slice::<Header>(&bytes) else {
        return Ok(None);
    };
    if header.format != SNAPSHOT_FORMAT || header.projection_version != PROJECTION_VERSION || header.seq == 0 {
        return Ok(None);
    }
    let at = store.read(header.seq, 1)?;
    let matches = at
        .first()
        .is_some_and(|e| e.seq == header.seq && Hash::of(&e.bytes) == header.head_hash);
    Ok(matches.then_some(header))
}

/// A part written with the header at `seq`; `None` if missing, unreadable or of another save.
fn get_part<T: DeserializeOwned>(store: &dyn EventStore, name: &str, seq: u64) -> Result<Option<T>, ReplayError> {
    let Some(bytes) = store.get_snapshot(name)? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice::<Part<T>>(&bytes)
        .ok()
        .filter(|p| p.seq == seq)
        .map(|p| p.view))
}

fn load_snapshot(store: &dyn EventStore) -> Result<Option<LedgerView>, ReplayError> {
    let Some(header) = valid_header(store)? else {
        return Ok(None);
    };
    let Some(bytes) = store.get_snapshot(&shared_name())? else {
        return Ok(None);
    };
    let Some(shared) = serde_json::from_slice::<Shared>(&bytes)
        .ok()
        .filter(|s| s.seq == header.seq)
    else {
        return Ok(None);
    };
    let mut accounts = BTreeMap::new();
    for id in shared.accounts {
        let Some(account) = get_part::<AccountView>(store, &account_name(&id), header.seq)? else {
            return Ok(None);
        };
        accounts.insert(id, account);
    }
    let mut apps = BTreeMap::new();
    for id in shared.apps {
        let Some(app) = get_part::<AppView>(store, &app_name(id), header.seq)? else {
            return Ok(None);
        };
        apps.insert(id, app);
    }
    Ok(Some(LedgerView {
        seq: header.seq,
        head_hash: header.head_hash,
        clock: header.clock,
        rulebook: header.rulebook,
        currency: header.currency,
        streams: shared.streams,
        accounts,
        apps,
        orders: shared.orders,
        bills: shared.bills,
        deadlines: shared.deadlines,
        inputs_recorded: header.inputs_recorded,
        commands_rejected: header.commands_rejected,
    }))
}

/// Stores the projections as the snapshot, every part in one write. Refuses projections
/// that do not conserve money (rule `money.conservation`), so a stored snapshot always
/// passed the check that every replay makes.
pub fn save_snapshot(store: &dyn EventStore, view: &LedgerView) -> Result<(), StoreError> {
    // Every field, by name: a new field of the view does not compile until it is stored.
    let LedgerView {
        seq,
        head_hash,
        clock,
        rulebook,
        currency,
        streams,
        accounts,
        apps,
        orders,
        bills,
        deadlines,
        inputs_recorded,
        commands_rejected,
    } = view;
    view.check_conservation().map_err(|reason| {
        StoreError::Corrupt(format!(
            "the projections at event {seq} do not conserve money: {reason}"
        ))
    })?;
    let seq = *seq;
    let mut parts: Vec<(String, Vec<u8>)> = Vec::with_capacity(accounts.len() + apps.len() + 2);
    for (id, account) in accounts {
        parts.push((account_name(id), json(&PartRef { seq, view: account })));
    }
    for (id, app) in apps {
        parts.push((app_name(*id), json(&PartRef { seq, view: app })));
    }
    let shared = SharedRef {
        seq,
        streams,
        orders,
        bills,
        deadlines,
        accounts: accounts.keys().collect(),
        apps: apps.keys().copied().collect(),
    };
    parts.push((shared_name(), json(&shared)));
    // The header last: a backend that cannot write all parts at once leaves, if it stops
    // midway, the previous header, whose position no longer matches the parts written.
    let header = Header {
        format: SNAPSHOT_FORMAT,
        projection_version: PROJECTION_VERSION,
        seq,
        head_hash: *head_hash,
        clock: *clock,
        rulebook: rulebook.clone(),
        currency: *currency,
        inputs_recorded: *inputs_recorded,
        commands_rejected: *commands_rejected,
    };
    parts.push((SNAPSHOT_NAME.to_owned(), json(&header)));
    store.put_snapshots(&parts)
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("views serialize")
}

/// The projections a query about app `app` needs — the app and its account, with the
/// header's position, clock and rulebook; every other map empty — read from the stored
/// snapshot alone when it is at the log's head (the CLI stores one after every write), and
/// `until` is not before its clock. Otherwise, or when the snapshot is not usable, the
/// whole projections by [`load`]. Either way the app and account are what [`load`] gives.
pub fn load_for_app(store: &dyn EventStore, app: AppId, until: Option<Instant>) -> Result<LedgerView, ReplayError> {
    if let Some(header) = header_at_head(store, until)? {
        let seq = header.seq;
        let name = app_name(app);
        match get_part::<AppView>(store, &name, seq)? {
            Some(app_view) => {
                if let Some(account) = get_part::<AccountView>(store, &account_name(&app_view.account), seq)? {
                    let mut view = view_of(header);
                    view.accounts.insert(account.account.clone(), account);
                    view.apps.insert(app, app_view);
                    return Ok(view);
                }
            }
            // No part for the app: it does not exist, unless the part was never written.
            None if store.get_snapshot(&name)?.is_none() => return Ok(view_of(header)),
            None => {}
        }
    }
    load(store, until)
}

/// As [`load_for_app`], for account `account`: the account and all its apps.
pub fn load_for_account(
    store: &dyn EventStore,
    account: &AccountId,
    until: Option<Instant>,
) -> Result<LedgerView, ReplayError> {
    if let Some(header) = header_at_head(store, until)? {
        let seq = header.seq;
        let name = account_name(account);
        match get_part::<AccountView>(store, &name, seq)? {
            Some(account_view) => {
                let mut view = view_of(header);
                let mut complete = true;
                for app in &account_view.apps {
                    match get_part::<AppView>(store, &app_name(*app), seq)? {
                        Some(app_view) => {
                            view.apps.insert(*app, app_view);
                        }
                        None => complete = false,
                    }
                }
                if complete {
                    view.accounts.insert(account.clone(), account_view);
                    return Ok(view);
                }
            }
            None if store.get_snapshot(&name)?.is_none() => return Ok(view_of(header)),
            None => {}
        }
    }
    load(store, until)
}

/// The valid header, if the snapshot is at the log's head and `until` does not cut it.
fn header_at_head(store: &dyn EventStore, until: Option<Instant>) -> Result<Option<Header>, ReplayError> {
    let Some(header) = valid_header(store)? else {
        return Ok(None);
    };
    let head = store.head()?;
    let at_head = head.seq == header.seq && head.hash == header.head_hash;
    let in_time = until.is_none_or(|t| header.clock.is_none_or(|clock| clock <= t));
    Ok((at_head && in_time).then_some(header))
}

/// A view holding the header's fields, every map empty.
fn view_of(header: Header) -> LedgerView {
    LedgerView {
        seq: header.seq,
        head_hash: header.head_hash,
        clock: header.clock,
        rulebook: header.rulebook,
        currency: header.currency,
        inputs_recorded: header.inputs_recorded,
        commands_rejected: header.commands_rejected,
        ..LedgerView::default()
    }
}
