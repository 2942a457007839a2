//! Rebuilding the projections by replay: from position 0, or from a stored projection
//! snapshot at position N when it is still valid, optionally stopping at a business time.

use std::collections::{BTreeMap, BTreeSet};

use chat_ledger_events::EventBody;
use chat_ledger_events::{decode, AccountId, AppId, Currency, Envelope, Hash, Instant, StreamId};
use chat_ledger_projections::{
    whole_list, AccountView, AppView, BillView, Deadline, LedgerView, MonthUsage, OrderView, RulebookView, Settled,
    SettledList, StoryList, UserDigests, PROJECTION_VERSION,
};
use rayon::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::store::{EventStore, StoreError, READ_PAGE_EVENTS};
use crate::story::{self, STORY_SEGMENT_EVENTS};

/// Name of the projection snapshot's header; its other parts are named under it.
pub const SNAPSHOT_NAME: &str = "projections";

/// Every this many versions of an app's stream, the app's view is stored as a checkpoint
/// (`projections/checkpoint/v<PROJECTION_VERSION>/<SDKAppID>/<version>`), so that
/// `state app --as-of` reads one checkpoint and folds fewer than this many of the app's
/// events, whatever the size of the log or of the app's history. Checkpoints are written
/// with the snapshot and never replaced; those of another projection version are ignored.
pub const APP_CHECKPOINT_VERSIONS: u64 = 256;

/// Checkpoint and history parts written per store call (bounds what one write holds).
const CHECKPOINT_PARTS_PER_WRITE: usize = 1024;

/// Layout of the stored projection snapshot (apart from the projections' own version,
/// [`PROJECTION_VERSION`]). 2: sharded — a small header, one part with the shared maps
/// (streams, orders, bills, deadlines), one part per account and one per app — so that a
/// query about one app reads that app alone. 3: and every story segment due is written
/// before the header (`crate::story`). 4: the parts hold the *working* view; the settled
/// history ([`chat_ledger_projections::Settled`]) is stored apart, one history part per
/// order, bill, settled month and settled run of a story list (see [`save_snapshot_with`]).
/// 5: which account and app parts there are is a part of its own (the *part list*), read
/// first, so that the shared maps and the parts are decoded at once, on every core. A
/// snapshot of another format is ignored.
pub const SNAPSHOT_FORMAT: u32 = 5;

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

/// The maps shared by every query.
#[derive(Serialize)]
struct SharedRef<'a> {
    streams: &'a BTreeMap<StreamId, u64>,
    orders: &'a BTreeMap<String, OrderView>,
    bills: &'a BTreeMap<String, BillView>,
    deadlines: &'a BTreeSet<Deadline>,
}

#[derive(Deserialize)]
struct Shared {
    streams: BTreeMap<StreamId, u64>,
    orders: BTreeMap<String, OrderView>,
    bills: BTreeMap<String, BillView>,
    deadlines: BTreeSet<Deadline>,
}

/// The part list: which account and app parts there are, in order.
#[derive(Serialize)]
struct PartListRef<'a> {
    accounts: Vec<&'a AccountId>,
    apps: Vec<AppId>,
}

#[derive(Deserialize)]
struct PartList {
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

fn part_list_name() -> String {
    format!("{SNAPSHOT_NAME}/part-list")
}

fn account_name(account: &AccountId) -> String {
    format!("{SNAPSHOT_NAME}/account/{account}")
}

fn app_name(app: AppId) -> String {
    format!("{SNAPSHOT_NAME}/app/{app}")
}

/// Settled history parts, each `Part { seq: the save that wrote it, view }`. Orders and
/// bills are final once settled: one part each, never replaced. A month can be reopened
/// by a late login and settled again: one part per save that settled it, the latest at or
/// before a view's position being the month as that view would hold it.
fn history_prefix() -> String {
    format!("{SNAPSHOT_NAME}/history/v{PROJECTION_VERSION}/")
}

fn order_part_name(account: &AccountId, order: &str) -> String {
    format!("{}order/{account}/{order}", history_prefix())
}

fn bill_part_name(account: &AccountId, bill: &str) -> String {
    format!("{}bill/{account}/{bill}", history_prefix())
}

fn app_months_prefix(app: AppId) -> String {
    format!("{}month/{app}/", history_prefix())
}

fn month_part_prefix(app: AppId, month: &str) -> String {
    format!("{}{month}/", app_months_prefix(app))
}

fn month_part_name(app: AppId, month: &str, seq: u64) -> String {
    format!("{}{seq:020}", month_part_prefix(app, month))
}

fn list_part_prefix(stream: &StreamId, list: StoryList) -> String {
    format!("{}list/{stream}/{}/", history_prefix(), list.as_str())
}

fn list_part_name(stream: &StreamId, list: StoryList, first: u64) -> String {
    format!("{}{first:020}", list_part_prefix(stream, list))
}

/// Greater, as bytes, than any name under a prefix: the end of a prefix's name range.
const NAME_RANGE_END: &str = "\u{10FFFF}";

/// The parts under `prefix` written at or before position `seq`, in name order; many are
/// decoded on every core (rayon), a few (what a query reads) on the calling thread.
fn history_parts_in<T: DeserializeOwned + Send>(
    store: &dyn EventStore,
    prefix: &str,
    seq: u64,
) -> Result<Vec<T>, ReplayError> {
    let parts = store.snapshots_in(prefix, &format!("{prefix}{NAME_RANGE_END}"))?;
    let decode = |(name, bytes): &(String, Vec<u8>)| -> Result<Option<T>, ReplayError> {
        let part = serde_json::from_slice::<Part<T>>(bytes).map_err(|e| ReplayError::Corrupt {
            seq,
            reason: format!("settled history part {name} does not read: {e}"),
        })?;
        Ok((part.seq <= seq).then_some(part.view))
    };
    let decoded: Vec<Option<T>> = if parts.len() < PARTS_ON_EVERY_CORE_MIN {
        parts.iter().map(decode).collect::<Result<_, _>>()?
    } else {
        parts
            .par_iter()
            .with_min_len(PARTS_PER_TASK_MIN)
            .map(decode)
            .collect::<Result<_, _>>()?
    };
    Ok(decoded.into_iter().flatten().collect())
}

/// The settled months under `prefix` (every app's, or one app's), each the latest written
/// at or before position `seq`.
fn read_months(
    store: &dyn EventStore,
    prefix: &str,
    seq: u64,
) -> Result<Vec<(AppId, String, MonthUsage)>, ReplayError> {
    let mut months: Vec<(AppId, String, MonthUsage)> = Vec::new();
    // In name order, a month's parts follow each other, by position.
    for (app, month, usage) in history_parts_in::<(AppId, String, MonthUsage)>(store, prefix, seq)? {
        match months.last_mut() {
            Some(last) if last.0 == app && last.1 == month => last.2 = usage,
            _ => months.push((app, month, usage)),
        }
    }
    Ok(months)
}

/// Every settled history part at or before position `seq`: what [`load`] puts back.
fn read_history(store: &dyn EventStore, seq: u64) -> Result<Settled, ReplayError> {
    let prefix = history_prefix();
    // Each kind read while others are decoded.
    let ((orders, bills), (months, lists)) = rayon::join(
        || {
            rayon::join(
                || history_parts_in(store, &format!("{prefix}order/"), seq),
                || history_parts_in(store, &format!("{prefix}bill/"), seq),
            )
        },
        || {
            rayon::join(
                || read_months(store, &format!("{prefix}month/"), seq),
                || history_parts_in(store, &format!("{prefix}list/"), seq),
            )
        },
    );
    Ok(Settled {
        orders: orders?,
        bills: bills?,
        months: months?,
        lists: lists?,
    })
}

/// A story list of `stream` whole: the runs settled out of the working view (its first
/// `settled` entries, stored at or before position `seq`), then `tail`, the entries the
/// view holds. One range read of the list's runs; none when nothing is settled.
pub fn story_positions(
    store: &dyn EventStore,
    stream: &StreamId,
    list: StoryList,
    settled: u64,
    tail: &[u64],
    seq: u64,
) -> Result<Vec<u64>, ReplayError> {
    if settled == 0 {
        return Ok(tail.to_vec());
    }
    let runs: Vec<SettledList> = history_parts_in(store, &list_part_prefix(stream, list), seq)?;
    whole_list(&runs, settled, tail).map_err(|why| ReplayError::Corrupt {
        seq,
        reason: format!("{stream}'s settled {}: {why}", list.as_str()),
    })
}

/// The history parts for what `settle` took out at position `seq`.
fn history_parts(settled: &Settled, seq: u64) -> Vec<(String, Vec<u8>)> {
    let mut parts =
        Vec::with_capacity(settled.orders.len() + settled.bills.len() + settled.months.len() + settled.lists.len());
    for entry @ (id, order) in &settled.orders {
        parts.push((order_part_name(&order.account, id), json(&PartRef { seq, view: entry })));
    }
    for entry @ (id, bill) in &settled.bills {
        parts.push((bill_part_name(&bill.account, id), json(&PartRef { seq, view: entry })));
    }
    for entry @ (app, month, _) in &settled.months {
        parts.push((month_part_name(*app, month, seq), json(&PartRef { seq, view: entry })));
    }
    for run in &settled.lists {
        parts.push((
            list_part_name(&run.stream, run.list, run.first),
            json(&PartRef { seq, view: run }),
        ));
    }
    parts
}

/// Folds stored events after `view.seq` into `view`, stopping before the first event
/// that occurred after `until`. `view` is a whole view or a working one (a snapshot's):
/// before a count into a month the view lacks, the month is restored from the settled
/// history if it is there ([`restore_month`]); in a whole view it never is.
pub fn replay_into(store: &dyn EventStore, view: &mut LedgerView, until: Option<Instant>) -> Result<(), ReplayError> {
    replay_into_with(store, view, until, History::Apart, PIPELINE_MIN_EVENTS)
}

/// Where the settled history of a view being replayed onto is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum History {
    /// In the view (a whole view: from position 0, or made whole): it lacks no month, so
    /// a count into a month it does not have is a new month, and nothing is looked up.
    InView,
    /// Stored apart (a working view, from a snapshot): a count into a month the view lacks
    /// first restores that month if it was settled ([`restore_month`]).
    Apart,
}

/// [`replay_into`], decoding on a second thread when at least `pipeline_min_events` events
/// follow the view (tests compare both ways on one log).
fn replay_into_with(
    store: &dyn EventStore,
    view: &mut LedgerView,
    until: Option<Instant>,
    history: History,
    pipeline_min_events: u64,
) -> Result<(), ReplayError> {
    let from = view.seq + 1;
    if store.head()?.seq.saturating_sub(view.seq) < pipeline_min_events {
        let mut failed = None;
        store.scan(
            from,
            &mut |seq, bytes| match fold(store, view, until, history, seq, &decoded(bytes)) {
                Ok(go_on) => go_on,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            },
        )?;
        return failed.map_or(Ok(()), Err);
    }
    // A long replay decodes and hashes on a second thread while this one folds: decoding
    // is more than half of a replay and the fold must stay in log order, so the two
    // overlap by batches, in order, through a bounded channel. Decoding an event costs
    // about twice folding it, so every `FOLD_DECODES_EVERY`th batch goes over as stored
    // bytes and the fold decodes it itself: both threads stay busy.
    // The fold hands each decoded batch back, and the decoder drops the events where it
    // made them: freed on the thread that allocated them, they stay in its allocator's
    // fast caches (freed on the fold's thread, that was a quarter of the fold's time).
    std::thread::scope(|scope| {
        let (batches, received) = std::sync::mpsc::sync_channel::<Batch>(DECODE_BATCHES_IN_FLIGHT);
        let (spent, returned) = std::sync::mpsc::sync_channel::<Vec<(u64, Decoded)>>(DECODE_BATCHES_IN_FLIGHT + 1);
        let decoder = scope.spawn(move || {
            let fresh = || match returned.try_recv() {
                Ok(mut used) => {
                    used.clear();
                    used
                }
                Err(_) => Vec::with_capacity(DECODE_BATCH_EVENTS),
            };
            let (mut decoded_batch, mut stored_batch) = (fresh(), StoredBatch::default());
            let mut sent = 0usize;
            let mut fold_waits = true;
            store.scan(from, &mut |seq, bytes| {
                let fold_decodes = sent % FOLD_DECODES_EVERY == FOLD_DECODES_EVERY - 1;
                let (held, last) = if fold_decodes {
                    stored_batch.push(seq, bytes);
                    (stored_batch.seqs.len(), false)
                } else {
                    let event = decoded(bytes);
                    // Past `until` or unreadable: the fold stops there, so decoding does too.
                    let last = event
                        .as_ref()
                        .map_or(true, |(e, _)| until.is_some_and(|t| e.occurred_at > t));
                    decoded_batch.push((seq, event));
                    (decoded_batch.len(), last)
                };
                if held == DECODE_BATCH_EVENTS || last {
                    let full = if fold_decodes {
                        Batch::Stored(std::mem::take(&mut stored_batch))
                    } else {
                        Batch::Decoded(std::mem::replace(&mut decoded_batch, fresh()))
                    };
                    sent += 1;
                    fold_waits = batches.send(full).is_ok();
                }
                fold_waits && !last
            })?;
            // The fold may have stopped already: then nobody needs the rest.
            if !decoded_batch.is_empty() {
                let _ = batches.send(Batch::Decoded(decoded_batch));
            } else if !stored_batch.seqs.is_empty() {
                let _ = batches.send(Batch::Stored(stored_batch));
            }
            Ok::<(), StoreError>(())
        });
        let mut stopped = None;
        let mut fold_one = |seq: u64, event: &Decoded| match fold(store, view, until, history, seq, event) {
            Ok(true) => true,
            Ok(false) => {
                stopped = Some(Ok(()));
                false
            }
            Err(e) => {
                stopped = Some(Err(e));
                false
            }
        };
        for batch in received.iter() {
            let go_on = match batch {
                Batch::Decoded(events) => {
                    let go_on = events.iter().all(|(seq, event)| fold_one(*seq, event));
                    // Full (the decoder is behind on taking them back): dropped here, rarely.
                    let _ = spent.try_send(events);
                    go_on
                }
                Batch::Stored(stored) => stored.iter().all(|(seq, bytes)| fold_one(seq, &decoded(bytes))),
            };
            if !go_on {
                break;
            }
        }
        drop(received);
        let scanned = decoder.join().expect("the replay's decoder does not panic");
        // A fold that stopped never asked for what the decoder read (or failed to) after.
        stopped.unwrap_or(scanned.map_err(ReplayError::from))
    })
}

/// What a long replay's decoder hands its fold: events it decoded, or stored events for
/// the fold to decode.
enum Batch {
    Decoded(Vec<(u64, Decoded)>),
    Stored(StoredBatch),
}

/// Stored events copied end to end: event `i` is `bytes[ends[i - 1]..ends[i]]`.
#[derive(Default)]
struct StoredBatch {
    seqs: Vec<u64>,
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl StoredBatch {
    fn push(&mut self, seq: u64, bytes: &[u8]) {
        self.seqs.push(seq);
        self.bytes.extend_from_slice(bytes);
        self.ends.push(self.bytes.len());
    }

    fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        self.seqs
            .iter()
            .zip(starts.zip(&self.ends))
            .map(|(seq, (start, end))| (*seq, &self.bytes[start..*end]))
    }
}

/// One batch in this many is decoded by the fold's thread (see `replay_into_with`):
/// decoding costs about twice folding (profile of a 1.1 M-event replay: 2,041 samples
/// decoding against 1,041 folding), so the fold decodes a quarter to even them.
const FOLD_DECODES_EVERY: usize = 4;

/// Events a long replay decodes per batch handed to its fold.
const DECODE_BATCH_EVENTS: usize = 1024;

/// Decoded batches a long replay holds between its decoder and its fold (a few MB).
const DECODE_BATCHES_IN_FLIGHT: usize = 4;

/// Replays of fewer events than this decode where they fold: a thread would cost more
/// than it saves (a query's replay after its snapshot is often a handful of events).
const PIPELINE_MIN_EVENTS: u64 = 16_384;

/// A stored event decoded, with the hash of its bytes; or why it does not decode.
type Decoded = Result<(Envelope, Hash), String>;

fn decoded(bytes: &[u8]) -> Decoded {
    let event = decode(bytes).map_err(|e| e.0)?;
    Ok((event, Hash::of(bytes)))
}

/// Folds the event stored at `seq` into `view`; false once the event is past `until`.
fn fold(
    store: &dyn EventStore,
    view: &mut LedgerView,
    until: Option<Instant>,
    history: History,
    seq: u64,
    event: &Decoded,
) -> Result<bool, ReplayError> {
    let applied = (|| {
        let (event, hash) = event.as_ref().map_err(String::clone)?;
        if until.is_some_and(|t| event.occurred_at > t) {
            return Ok(false);
        }
        if event.seq != seq {
            return Err(format!("its bytes say position {}", event.seq));
        }
        if let (History::Apart, EventBody::MauCounted { month, .. }, Some(app)) =
            (history, &event.event, event.stream.app_id())
        {
            restore_month(store, view, app, month).map_err(|e| e.to_string())?;
        }
        view.apply(event, *hash).map_err(|e| e.to_string())?;
        Ok(true)
    })();
    applied.map_err(|reason| ReplayError::Corrupt { seq, reason })
}

/// The whole projections at the log's head, or as of business time `until`: settled
/// history included, equal to [`load_from_zero`]'s. Starts from the stored snapshot when it
/// was written by this projection version, lies within the log and still matches the log's
/// hash at its position (reading every history part: linear in history, as a full listing
/// is); otherwise from position 0.
pub fn load(store: &dyn EventStore, until: Option<Instant>) -> Result<LedgerView, ReplayError> {
    let mut view = match load_snapshot(store, until)? {
        Some(mut working) => {
            let history = read_history(store, working.seq)?;
            let seq = working.seq;
            working
                .unsettle(history)
                .map_err(|reason| ReplayError::Corrupt { seq, reason })?;
            working
                .whole_again()
                .map_err(|reason| ReplayError::Corrupt { seq, reason })?;
            working
        }
        None => LedgerView::default(),
    };
    replay_into_with(store, &mut view, until, History::InView, PIPELINE_MIN_EVENTS)?;
    conserved(&view)?;
    Ok(view)
}

/// How many users a settled month of app `app` counted, as stored at or before position
/// `seq` (`None`: no such settled month), read from the part's text without decoding the
/// users' digests: what `explain` tells of a month it does not hold.
pub fn settled_month_users(
    store: &dyn EventStore,
    app: AppId,
    month: &str,
    seq: u64,
) -> Result<Option<u64>, ReplayError> {
    #[derive(Deserialize)]
    struct Users<'a> {
        #[serde(borrow)]
        users: &'a str,
    }
    let (from, to) = (month_part_prefix(app, month), month_part_name(app, month, seq));
    let Some((name, bytes)) = store.last_snapshot_in(&from, &to)? else {
        return Ok(None);
    };
    serde_json::from_slice::<Part<(AppId, String, Users)>>(&bytes)
        .ok()
        .filter(|p| p.view.0 == app && p.view.1 == month)
        .and_then(|p| UserDigests::count_in_text(p.view.2.users))
        .map(|n| Some(n as u64))
        .ok_or_else(|| ReplayError::Corrupt {
            seq,
            reason: format!("settled history part {name} does not read as app {app}'s month {month}"),
        })
}

/// The *working* projections at the log's head: the snapshot's working view (no settled
/// history: see [`chat_ledger_projections::Settled`]) and the events after it. What the
/// ledger decides on; its cost follows the live population, not the log's length. Whole,
/// from position 0, when there is no usable snapshot. Decisions and folds are the same on
/// either: what they read of the settled history is restored first ([`restore_month`]).
pub fn load_working(store: &dyn EventStore) -> Result<LedgerView, ReplayError> {
    let (mut view, history) = match load_snapshot(store, None)? {
        Some(working) => (working, History::Apart),
        None => (LedgerView::default(), History::InView),
    };
    replay_into_with(store, &mut view, None, history, PIPELINE_MIN_EVENTS)?;
    conserved(&view)?;
    Ok(view)
}

/// Puts month `month` of app `app` back into a working view that lacks it, from the
/// settled history stored at or before the view's position, if it is there: what a count
/// into that month (a late login) is decided and folded on. Nothing to do when the view
/// has the month, or the app, or the month never had usage.
pub fn restore_month(
    store: &dyn EventStore,
    view: &mut LedgerView,
    app: AppId,
    month: &str,
) -> Result<(), ReplayError> {
    let lacks = view.apps.get(&app).is_some_and(|a| !a.usage.contains_key(month));
    if !lacks {
        return Ok(());
    }
    let (from, to) = (month_part_prefix(app, month), month_part_name(app, month, view.seq));
    let Some((name, bytes)) = store.last_snapshot_in(&from, &to)? else {
        return Ok(());
    };
    let part = serde_json::from_slice::<Part<(AppId, String, MonthUsage)>>(&bytes)
        .ok()
        .filter(|p| p.view.0 == app && p.view.1 == month)
        .ok_or_else(|| ReplayError::Corrupt {
            seq: view.seq,
            reason: format!("settled history part {name} does not read as app {app}'s month {month}"),
        })?;
    view.restore_month(app, part.view.1, part.view.2);
    Ok(())
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
    replay_into_with(store, &mut view, until, History::InView, PIPELINE_MIN_EVENTS)?;
    conserved(&view)?;
    Ok(view)
}

/// The position of the stored projection snapshot, if it is valid for this build and log.
pub fn snapshot_position(store: &dyn EventStore) -> Result<Option<u64>, ReplayError> {
    Ok(load_snapshot(store, None)?.map(|v| v.seq))
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

/// The parts of `ids`, in order, written with the header at `seq`, many read and decoded
/// on every core (rayon); `None` if one is missing, unreadable or of another save.
fn get_parts<K: Sync, T: DeserializeOwned + Send>(
    store: &dyn EventStore,
    ids: &[K],
    name: fn(&K) -> String,
    seq: u64,
) -> Result<Option<Vec<T>>, ReplayError> {
    let get = |id: &K| get_part::<T>(store, &name(id), seq);
    if ids.len() < PARTS_ON_EVERY_CORE_MIN {
        return ids.iter().map(get).collect();
    }
    ids.par_iter().with_min_len(PARTS_PER_TASK_MIN).map(get).collect()
}

/// Parts read in one go by a rayon thread: a task for each part would cost about as much
/// as a part.
const PARTS_PER_TASK_MIN: usize = 64;

/// The fewest parts decoded on every core. Fewer are decoded on the calling thread: waking
/// rayon's threads for a query's handful costs more than it saves, and they then spin a
/// while, on cores the query shares.
const PARTS_ON_EVERY_CORE_MIN: usize = 4 * PARTS_PER_TASK_MIN;

/// The snapshot's working view, if the snapshot is valid and `until` does not cut it.
fn load_snapshot(store: &dyn EventStore, until: Option<Instant>) -> Result<Option<LedgerView>, ReplayError> {
    let Some(header) = valid_header(store)? else {
        return Ok(None);
    };
    if until.is_some_and(|t| header.clock.is_some_and(|clock| clock > t)) {
        return Ok(None);
    }
    let seq = header.seq;
    let Some(list) = get_part::<PartList>(store, &part_list_name(), seq)? else {
        return Ok(None);
    };
    // Startup is mostly the decoding of these, none of which needs another.
    let shared = || get_part::<Shared>(store, &shared_name(), seq);
    let accounts = || get_parts::<_, AccountView>(store, &list.accounts, account_name, seq);
    let apps = || get_parts::<_, AppView>(store, &list.apps, |id| app_name(*id), seq);
    let (shared, (accounts, apps)) = if list.accounts.len() + list.apps.len() < PARTS_ON_EVERY_CORE_MIN {
        (shared(), (accounts(), apps()))
    } else {
        rayon::join(shared, || rayon::join(accounts, apps))
    };
    let (Some(shared), Some(accounts), Some(apps)) = (shared?, accounts?, apps?) else {
        return Ok(None);
    };
    // The ids are in order (a map's keys, stored as such): the maps are built in bulk.
    let accounts: BTreeMap<AccountId, AccountView> = list.accounts.into_iter().zip(accounts).collect();
    let apps: BTreeMap<AppId, AppView> = list.apps.into_iter().zip(apps).collect();
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
pub fn save_snapshot(store: &dyn EventStore, view: &mut LedgerView) -> Result<(), StoreError> {
    save_snapshot_with(store, view, Spacing::DEFAULT)
}

/// How often the snapshot's append-only parts are cut: app checkpoints every
/// `checkpoint_versions` versions of an app's stream, story segments every
/// `story_segment_events` entries of a story list. Tests use small values to exercise
/// them on small fixtures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spacing {
    pub checkpoint_versions: u64,
    pub story_segment_events: usize,
}

impl Spacing {
    pub const DEFAULT: Spacing = Spacing {
        checkpoint_versions: APP_CHECKPOINT_VERSIONS,
        story_segment_events: STORY_SEGMENT_EVENTS,
    };
}

/// [`save_snapshot`], with its append-only parts cut at `spacing`.
///
/// Settles the view first ([`LedgerView::settle`]): the settled history goes to history
/// parts, written once, and `view` is left the working view, as a load of this snapshot
/// gives it (decisions on it are the same: see [`load_working`]). If a write fails, the
/// settled history is put back into `view`.
pub fn save_snapshot_with(store: &dyn EventStore, view: &mut LedgerView, spacing: Spacing) -> Result<(), StoreError> {
    assert!(
        spacing.checkpoint_versions > 0,
        "a checkpoint interval of at least one version"
    );
    view.check_conservation().map_err(|reason| {
        StoreError::Corrupt(format!(
            "the projections at event {} do not conserve money: {reason}",
            view.seq
        ))
    })?;
    let settled = view.settle().map_err(StoreError::Corrupt)?;
    let saved = save_working(store, view, spacing, &history_parts(&settled, view.seq));
    if saved.is_err() {
        view.unsettle(settled).map_err(StoreError::Corrupt)?;
    }
    saved
}

/// Writes `history` (in bounded batches), the append-only parts, then the working view's
/// parts and the header.
fn save_working(
    store: &dyn EventStore,
    view: &LedgerView,
    spacing: Spacing,
    history: &[(String, Vec<u8>)],
) -> Result<(), StoreError> {
    for batch in history.chunks(CHECKPOINT_PARTS_PER_WRITE) {
        store.put_snapshots(batch)?;
    }
    let checkpoint_versions = spacing.checkpoint_versions;
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
    let seq = *seq;
    let mut parts: Vec<(String, Vec<u8>)> = Vec::with_capacity(accounts.len() + apps.len() + 3);
    for (id, account) in accounts {
        parts.push((account_name(id), json(&PartRef { seq, view: account })));
    }
    for (id, app) in apps {
        parts.push((app_name(*id), json(&PartRef { seq, view: app })));
    }
    let shared = SharedRef {
        streams,
        orders,
        bills,
        deadlines,
    };
    parts.push((shared_name(), json(&PartRef { seq, view: &shared })));
    let list = PartListRef {
        accounts: accounts.keys().collect(),
        apps: apps.keys().copied().collect(),
    };
    parts.push((part_list_name(), json(&PartRef { seq, view: &list })));
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
    // Checkpoints and story segments first: the snapshot only ever points at a log whose
    // checkpoints and segments are written (a stop in between leaves the previous snapshot,
    // and the next save resumes).
    let mut checkpoints = Vec::new();
    for app in apps.keys() {
        catch_up_checkpoints(store, view, *app, checkpoint_versions, &mut checkpoints)?;
        if checkpoints.len() >= CHECKPOINT_PARTS_PER_WRITE {
            store.put_snapshots(&std::mem::take(&mut checkpoints))?;
        }
    }
    if !checkpoints.is_empty() {
        store.put_snapshots(&checkpoints)?;
    }
    story::write_segments(store, view, spacing.story_segment_events)?;
    store.put_snapshots(&parts)
}

/// The view of one app at one version of its stream, and the event it was folded to.
#[derive(Serialize)]
struct CheckpointRef<'a> {
    seq: u64,
    version: u64,
    hash: Hash,
    view: &'a AppView,
}

#[derive(Deserialize)]
struct Checkpoint {
    seq: u64,
    version: u64,
    hash: Hash,
    view: AppView,
}

fn checkpoint_prefix(app: AppId) -> String {
    format!("{SNAPSHOT_NAME}/checkpoint/v{PROJECTION_VERSION}/{app}/")
}

fn checkpoint_name(app: AppId, version: u64) -> String {
    format!("{}{version:020}", checkpoint_prefix(app))
}

/// The latest valid checkpoint of `app` at or before stream version `version`: written by
/// this projection version (its name says so), and folded to an event that is still the
/// log's (same hash at the same position). `None` if there is none: fold from creation.
fn last_checkpoint(store: &dyn EventStore, app: AppId, version: u64) -> Result<Option<Checkpoint>, ReplayError> {
    let (from, to) = (checkpoint_prefix(app), checkpoint_name(app, version));
    let Some((_, bytes)) = store.last_snapshot_in(&from, &to)? else {
        return Ok(None);
    };
    let Ok(checkpoint) = serde_json::from_slice::<Checkpoint>(&bytes) else {
        return Ok(None);
    };
    let still_the_log = store
        .read(checkpoint.seq, 1)?
        .first()
        .is_some_and(|e| e.seq == checkpoint.seq && Hash::of(&e.bytes) == checkpoint.hash);
    Ok((still_the_log && checkpoint.version <= version && checkpoint.view.app == app).then_some(checkpoint))
}

/// Adds to `out` the checkpoints of `app` due by its current version in `view` and not yet
/// stored: folds its stream from the last stored checkpoint (or its creation) on.
fn catch_up_checkpoints(
    store: &dyn EventStore,
    view: &LedgerView,
    app: AppId,
    every: u64,
    out: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), StoreError> {
    let due = view.stream_version(&StreamId::app(app)) / every * every;
    if due == 0 {
        return Ok(());
    }
    // The last valid checkpoint: the one due if it is stored and readable, else the one to
    // fold on from (a checkpoint that no longer reads is written again).
    let last = last_checkpoint(store, app, due).map_err(replay_to_store)?;
    if last.as_ref().is_some_and(|c| c.version == due) {
        return Ok(());
    }
    let mut fold = AppFold::from(last);
    let due_seq = match store.read_stream(&StreamId::app(app), due, 1)?.first() {
        Some(stored) => stored.seq,
        None => return Err(StoreError::Corrupt(format!("app {app}'s stream has no version {due}"))),
    };
    fold_app_stream(store, app, &mut fold, due, due_seq, |version, stored, app_view| {
        if version % every == 0 {
            let part = CheckpointRef {
                seq: stored.seq,
                version,
                hash: Hash::of(&stored.bytes),
                view: app_view,
            };
            out.push((checkpoint_name(app, version), json(&part)));
        }
    })
    .map_err(replay_to_store)
}

pub(crate) fn replay_to_store(e: ReplayError) -> StoreError {
    match e {
        ReplayError::Store(e) => e,
        ReplayError::Corrupt { seq, reason } => StoreError::Corrupt(format!("event {seq}: {reason}")),
    }
}

/// Where a fold of one app stands: the app's view (`None` before its creation), the
/// stream version and the log position it was folded to.
struct AppFold {
    view: Option<AppView>,
    version: u64,
    seq: u64,
}

impl AppFold {
    fn from(checkpoint: Option<Checkpoint>) -> AppFold {
        match checkpoint {
            Some(c) => AppFold {
                view: Some(c.view),
                version: c.version,
                seq: c.seq,
            },
            None => AppFold {
                view: None,
                version: 0,
                seq: 0,
            },
        }
    }
}

/// Folds into `fold` what changed `app` up to version `until` of its stream and position
/// `until_seq` (the app's events, and its expiry reminders from its account's stream, in
/// log order), calling `each` after every event of the app's stream once the app exists.
fn fold_app_stream(
    store: &dyn EventStore,
    app: AppId,
    fold: &mut AppFold,
    until: u64,
    until_seq: u64,
    mut each: impl FnMut(u64, &crate::store::StoredEvent, &AppView),
) -> Result<(), ReplayError> {
    let stream = StreamId::app(app);
    // The app's reminders after the fold's position, oldest last (popped in log order);
    // known once the app (and so its account) is.
    let mut reminders = match &fold.view {
        Some(view) => app_reminders(store, view, fold.seq, until_seq)?,
        None => Vec::new(),
    };
    while fold.version < until {
        let want = (until - fold.version).min(READ_PAGE_EVENTS as u64) as usize;
        let page = store.read_stream(&stream, fold.version + 1, want)?;
        if page.is_empty() {
            return Err(ReplayError::Corrupt {
                seq: fold.seq,
                reason: format!("{stream} ends at version {}, before version {until}", fold.version),
            });
        }
        for stored in &page {
            let corrupt = |reason: String| ReplayError::Corrupt {
                seq: stored.seq,
                reason,
            };
            let event = decode(&stored.bytes).map_err(|e| corrupt(e.0))?;
            if event.stream != stream || event.version != fold.version + 1 || event.seq != stored.seq {
                return Err(corrupt(format!(
                    "indexed as version {} of {stream}, it says version {} of {}",
                    fold.version + 1,
                    event.version,
                    event.stream
                )));
            }
            match &mut fold.view {
                // Before its creation an app's stream holds only refusals (a login or a
                // creation refused): nothing to fold.
                None => match AppView::created(&event) {
                    Some(created) if created.app == app => {
                        reminders = app_reminders(store, &created, stored.seq, until_seq)?;
                        fold.view = Some(created);
                    }
                    _ if AppView::changed_by(&event.event).is_some() => {
                        return Err(corrupt(format!("changes app {app} before its app.created")));
                    }
                    _ => {}
                },
                Some(view) => {
                    fold_reminders_before(view, &mut reminders, stored.seq)?;
                    view.fold(&event).map_err(corrupt)?;
                }
            }
            fold.version += 1;
            fold.seq = stored.seq;
            if let Some(view) = &fold.view {
                each(fold.version, stored, view);
            }
        }
    }
    if let Some(view) = &mut fold.view {
        fold_reminders_before(view, &mut reminders, until_seq + 1)?;
    }
    Ok(())
}

/// Folds the reminders (oldest last) that come before position `seq`.
fn fold_reminders_before(view: &mut AppView, reminders: &mut Vec<Envelope>, seq: u64) -> Result<(), ReplayError> {
    while reminders.last().is_some_and(|r| r.seq < seq) {
        let reminder = reminders.pop().expect("checked");
        view.fold(&reminder).map_err(|reason| ReplayError::Corrupt {
            seq: reminder.seq,
            reason,
        })?;
    }
    Ok(())
}

/// The expiry reminders of `app` in its account's stream at positions after `after_seq`
/// up to `until_seq`, oldest last.
fn app_reminders(
    store: &dyn EventStore,
    app: &AppView,
    after_seq: u64,
    until_seq: u64,
) -> Result<Vec<Envelope>, ReplayError> {
    let stream = StreamId::account(&app.account);
    let mut version = stream_version_at(store, &stream, after_seq)?;
    let last = stream_version_at(store, &stream, until_seq)?;
    let mut out = Vec::new();
    while version < last {
        let want = (last - version).min(READ_PAGE_EVENTS as u64) as usize;
        let page = store.read_stream(&stream, version + 1, want)?;
        if page.is_empty() {
            break;
        }
        for stored in &page {
            let event = decode(&stored.bytes).map_err(|e| ReplayError::Corrupt {
                seq: stored.seq,
                reason: e.0,
            })?;
            if AppView::changed_by(&event.event) == Some(app.app) {
                out.push(event);
            }
        }
        version += page.len() as u64;
    }
    out.reverse();
    Ok(out)
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("views serialize")
}

/// The projections a query about app `app` needs — the app and its account, with the
/// header's position, clock and rulebook; every other map empty — read from the stored
/// snapshot alone when it is at the log's head (the CLI stores one after every write), and
/// `until` is not before its clock. Otherwise, or when the snapshot is not usable, the
/// whole projections by [`load`]. Either way the app and account are what [`load`] gives
/// but for their settled history (story lists, an app's settled months), which the
/// snapshot's working parts leave out: a query reads a month back by [`restore_month`],
/// counts its users by [`settled_month_users`], reads a story list by
/// [`story_positions`], or all of it by [`make_whole`].
pub fn load_for_app(store: &dyn EventStore, app: AppId, until: Option<Instant>) -> Result<LedgerView, ReplayError> {
    if let Some(header) = header_at_head(store, until)? {
        let seq = header.seq;
        let name = app_name(app);
        match get_part::<AppView>(store, &name, seq)? {
            Some(app_view) => {
                if let Some(account) = get_part::<AccountView>(store, &account_name(&app_view.account), seq)? {
                    let mut view = view_of(header);
                    view.accounts.insert(account.account.clone(), whole_account(account));
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

/// Puts back, into each app and account `view` holds, what settling took out of it —
/// story lists, and an app's settled months — so each is as [`load`] gives it: for a
/// query that prints a whole app or account (`state app --json`). Reads the app's months
/// in full (a busy app's user digests): the queries that only tell (`state` text,
/// `explain`) do without.
pub fn make_whole(store: &dyn EventStore, view: &mut LedgerView) -> Result<(), ReplayError> {
    let seq = view.seq;
    for (id, app) in &mut view.apps {
        let stream = StreamId::app(*id);
        app.story = story_positions(store, &stream, StoryList::Story, app.story_settled, &app.story, seq)?;
        app.story_settled = 0;
        for (_, month, usage) in read_months(store, &app_months_prefix(*id), seq)? {
            app.usage.entry(month).or_insert(usage);
        }
    }
    for (id, account) in &mut view.accounts {
        let stream = StreamId::account(id);
        let story = story_positions(
            store,
            &stream,
            StoryList::Story,
            account.story_settled,
            &account.story,
            seq,
        )?;
        let charges = story_positions(
            store,
            &stream,
            StoryList::Charges,
            account.charges_settled,
            &account.charges,
            seq,
        )?;
        (account.story, account.charges) = (story, charges);
        (account.story_settled, account.charges_settled) = (0, 0);
        account.settled_flows = None;
    }
    Ok(())
}

/// An account's part of the snapshot as [`load`] gives it: the sum of its settled flows
/// is how the working view accounts for history, not part of the whole view.
fn whole_account(mut account: AccountView) -> AccountView {
    account.settled_flows = None;
    account
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
                    view.accounts.insert(account.clone(), whole_account(account_view));
                    return Ok(view);
                }
            }
            None if store.get_snapshot(&name)?.is_none() => return Ok(view_of(header)),
            None => {}
        }
    }
    load(store, until)
}

/// What `state app` needs: at the head, [`load_for_app`] (the app's part of the
/// snapshot); as of an earlier business time, [`load_app_as_of`] (the app alone, from its
/// last checkpoint before that time).
pub fn load_app(store: &dyn EventStore, app: AppId, until: Option<Instant>) -> Result<LedgerView, ReplayError> {
    match until {
        Some(t) if header_at_head(store, until)?.is_none() => load_app_as_of(store, app, t),
        _ => load_for_app(store, app, until),
    }
}

/// App `app` as of business time `until`, as [`load`] with `until` would give it, with
/// the position, hash, clock, rulebook and currency at that time; every other map empty.
/// Reads O(log n) events to find the position and the app's stream version at `until`,
/// then one checkpoint and fewer than [`APP_CHECKPOINT_VERSIONS`] of the app's events:
/// an index walk whose cost does not grow with the log.
pub fn load_app_as_of(store: &dyn EventStore, app: AppId, until: Instant) -> Result<LedgerView, ReplayError> {
    let head = store.head()?;
    let seq = last_position_at(store, head.seq, until)?;
    if seq == 0 {
        return Ok(LedgerView::default());
    }
    let (last, hash) = event_at(store, seq)?;
    let mut view = LedgerView {
        seq,
        head_hash: hash,
        clock: Some(last.occurred_at),
        ..LedgerView::default()
    };
    // The rulebook adopted at or before `seq`, as the ledger stream says.
    let ledger = StreamId::named(StreamId::LEDGER);
    let adoptions = stream_version_at(store, &ledger, seq)?;
    for stored in store.read_stream(&ledger, 1, adoptions as usize)? {
        let event = event_at(store, stored.seq)?.0;
        if let Some((rulebook, currency)) = RulebookView::adopted(&event.event) {
            view.rulebook = Some(rulebook);
            view.currency = Some(currency);
        }
    }
    let version = stream_version_at(store, &StreamId::app(app), seq)?;
    if version == 0 {
        return Ok(view);
    }
    let mut fold = AppFold::from(last_checkpoint(store, app, version)?);
    fold_app_stream(store, app, &mut fold, version, seq, |_, _, _| {})?;
    if let Some(app_view) = fold.view {
        view.apps.insert(app, app_view);
    }
    Ok(view)
}

/// The event at position `seq`, decoded, and the hash of its stored bytes.
fn event_at(store: &dyn EventStore, seq: u64) -> Result<(Envelope, Hash), ReplayError> {
    let page = store.read(seq, 1)?;
    let stored = page
        .first()
        .filter(|e| e.seq == seq)
        .ok_or_else(|| ReplayError::Corrupt {
            seq,
            reason: "the log has no event at this position".to_owned(),
        })?;
    let event = decode(&stored.bytes).map_err(|e| ReplayError::Corrupt { seq, reason: e.0 })?;
    if event.seq != seq {
        return Err(ReplayError::Corrupt {
            seq,
            reason: format!("its bytes say position {}", event.seq),
        });
    }
    Ok((event, Hash::of(&stored.bytes)))
}

/// The last position whose event occurred at or before `until` (0 if none): a binary
/// search over positions 1..=`head`, as `occurred_at` never goes back.
fn last_position_at(store: &dyn EventStore, head: u64, until: Instant) -> Result<u64, ReplayError> {
    // Invariant: every event up to `low` occurred at or before `until`; none after `high`.
    let (mut low, mut high) = (0, head);
    while low < high {
        let middle = low + (high - low).div_ceil(2);
        if event_at(store, middle)?.0.occurred_at <= until {
            low = middle;
        } else {
            high = middle - 1;
        }
    }
    Ok(low)
}

/// The version `stream` had once the event at position `seq` was appended: a binary search
/// over its stream index (positions grow with versions).
fn stream_version_at(store: &dyn EventStore, stream: &StreamId, seq: u64) -> Result<u64, ReplayError> {
    let (mut low, mut high) = (0, store.stream_version(stream)?);
    while low < high {
        let middle = low + (high - low).div_ceil(2);
        let position = store
            .read_stream(stream, middle, 1)?
            .first()
            .map(|e| e.seq)
            .ok_or_else(|| ReplayError::Corrupt {
                seq,
                reason: format!("{stream} has no event at version {middle}"),
            })?;
        if position <= seq {
            low = middle;
        } else {
            high = middle - 1;
        }
    }
    Ok(low)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import;
    use crate::ledger::{Ledger, SeededKeys};
    use crate::rulebook::Rulebook;
    use crate::store::MemoryStore;

    /// A log of a few thousand inputs: an account, an app, then auto-renewal switched on
    /// and off, one input a minute, with a purchase every hundred.
    fn ledger(inputs: usize) -> Ledger {
        let mut lines = String::from(
            r#"{"key":"open","at":"2025-03-01T09:00:00+08:00","actor":"customer","type":"open_account","account":"acme","creator":{"email":"ops@acme.example","sms":"+65-8000-0001"}}
{"key":"cash","at":"2025-03-01T09:01:00+08:00","actor":"customer","type":"add_funds","account":"acme","kind":"cash","amount":"100000.00"}
{"key":"app","at":"2025-03-01T09:02:00+08:00","actor":"customer","type":"create_app","account":"acme","app":1400000001,"name":"One"}
"#,
        );
        let start = Instant::parse("2025-03-01T10:00:00+08:00").unwrap();
        for i in 0..inputs {
            let at = Instant::from_utc(start.utc() + chrono::Duration::minutes(i as i64));
            let line = if i % 100 == 0 {
                format!(
                    r#"{{"key":"buy-{i}","at":"{at}","actor":"customer","type":"buy_edition","app":1400000001,"edition":"standard","months":1}}"#
                )
            } else {
                let on = i % 2 == 0;
                format!(
                    r#"{{"key":"switch-{i}","at":"{at}","actor":"customer","type":"set_auto_renew","app":1400000001,"on":{on}}}"#
                )
            };
            lines.push_str(&line);
            lines.push('\n');
        }
        let mut ledger = Ledger::open_with_keys(
            Box::new(MemoryStore::new()),
            Rulebook::intl_2025(),
            Box::new(SeededKeys("replay".into())),
        )
        .unwrap();
        import::import(&mut ledger, "generated", &lines, 256, |_| {}).unwrap();
        ledger
    }

    /// Enough parts to be read on every core, one of them of a later save.
    fn parts_store(parts: u64, later: u64) -> MemoryStore {
        let store = MemoryStore::new();
        let named: Vec<(String, Vec<u8>)> = (0..parts)
            .map(|i| {
                let seq = if i == later { 8 } else { 7 };
                (format!("p/{i:05}"), json(&PartRef { seq, view: &i }))
            })
            .collect();
        store.put_snapshots(&named).unwrap();
        store
    }

    #[test]
    fn parts_read_on_every_core_come_back_in_order_as_one_thread_reads_them() {
        let parts = 2 * PARTS_ON_EVERY_CORE_MIN as u64 + 3;
        let store = parts_store(parts, 100);
        let name = |i: &u64| format!("p/{i:05}");
        let ids: Vec<u64> = (0..parts).collect();
        let read = |seq: u64, ids: &[u64]| get_parts::<u64, u64>(&store, ids, name, seq).unwrap();
        // Every part of the save at 7 but one of the save at 8: not a snapshot.
        assert_eq!(read(7, &ids), None);
        let without_later: Vec<u64> = ids.iter().copied().filter(|i| *i != 100).collect();
        assert_eq!(read(7, &without_later), Some(without_later.clone()));
        assert_eq!(
            read(7, &ids[..10]),
            Some(ids[..10].to_vec()),
            "a few, on the calling thread"
        );
        let missing: Vec<u64> = without_later.iter().copied().chain([parts]).collect();
        assert_eq!(read(7, &missing), None, "a part missing");

        // History parts: those written at or before the position, in name order.
        assert_eq!(history_parts_in::<u64>(&store, "p/", 7).unwrap(), without_later);
        assert_eq!(history_parts_in::<u64>(&store, "p/", 8).unwrap(), ids);
        store.put_snapshot("p/00200", b"not a part").unwrap();
        let error = history_parts_in::<u64>(&store, "p/", 8).unwrap_err().to_string();
        assert!(error.contains("p/00200"), "the error names the part: {error}");
    }

    #[test]
    fn a_replay_decoding_on_a_second_thread_folds_the_same_view() {
        let ledger = ledger(3000);
        let store = ledger.store();
        let head = store.head().unwrap().seq;
        assert!(head > 2 * DECODE_BATCH_EVENTS as u64, "several batches: {head} events");
        let until = [None, Some(Instant::parse("2025-03-02T12:00:00+08:00").unwrap())];
        for until in until {
            let (mut here, mut apart) = (LedgerView::default(), LedgerView::default());
            replay_into_with(store, &mut here, until, History::InView, u64::MAX).unwrap();
            replay_into_with(store, &mut apart, until, History::InView, 0).unwrap();
            assert!(
                here.seq > 0 && (until.is_some() == (here.seq < head)),
                "until {until:?}: {}",
                here.seq
            );
            let (here, apart) = (
                serde_json::to_string(&here).unwrap(),
                serde_json::to_string(&apart).unwrap(),
            );
            assert!(here == apart, "until {until:?}: the two replays differ");
        }
        assert!(
            &replay_from(store, 0) == ledger.state(),
            "the live view, rebuilt on two threads"
        );
    }

    fn replay_from(store: &dyn EventStore, pipeline_min_events: u64) -> LedgerView {
        let mut view = LedgerView::default();
        replay_into_with(store, &mut view, None, History::InView, pipeline_min_events).unwrap();
        view
    }
}
