//! The ledger: the IO edge around the pure decider. It turns inputs into sealed events
//! (input → decide → seal → evolve), appends them in acknowledged batches, and fires the
//! deadlines that the clock passes, in the documented order.

use std::borrow::Cow;
use std::collections::{btree_map, BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;

use chat_ledger_events::{
    event_id, seal, Actor, AppId, Command, Decision, EventBody, Input, Instant, Key, NewEvent, SealedEvent, StreamId,
};
use chat_ledger_projections::LedgerView;
use foldhash::{HashMap, HashSet, HashSetExt};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::replay::{self, ReplayError};
use crate::rulebook::{rule, Rulebook};
use crate::rules::{decide, decide_deadline, decide_logins, digest_hex, Fact, LoginName, LoginRow, Refusal};
use crate::store::{AppendBatch, Commit, EventStore, Head, KeyRecord, StoreError};

/// What became of one submitted input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Appended as events `first_seq..=last_seq`; `refusal` says if the rules refused it.
    Recorded {
        first_seq: u64,
        last_seq: u64,
        refusal: Option<Refusal>,
    },
    /// The key was already recorded with the same payload: nothing appended; these are
    /// the events the original produced.
    Repeated(KeyRecord),
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("key \"{key}\" was recorded at event {first_seq} with a different payload; a new input needs a new key")]
    KeyConflict { key: Key, first_seq: u64 },
    #[error("input \"{key}\" is dated {at}, before the ledger's clock ({clock}); time only moves forward")]
    BeforeClock { key: Key, at: Instant, clock: Instant },
    #[error("this ledger was started under rulebook {ledger}; it cannot continue under {given}")]
    RulebookMismatch { ledger: String, given: String },
}

/// Where new vault keys come from. Randomness lives here, at the IO edge, never in the rules.
pub trait KeySource: Send {
    fn new_key(&mut self, app: AppId) -> [u8; 32];
}

/// Keys from the operating system's CSPRNG: what a real ledger uses.
pub struct OsKeys;

impl KeySource for OsKeys {
    fn new_key(&mut self, _app: AppId) -> [u8; 32] {
        let mut key = [0; 32];
        getrandom::fill(&mut key).expect("the OS random source is available");
        key
    }
}

/// Keys derived from a seed: reproducible digests for tests and fixtures. A ledger whose
/// seed is known can recompute every digest: never use it for real users.
pub struct SeededKeys(pub String);

impl KeySource for SeededKeys {
    fn new_key(&mut self, app: AppId) -> [u8; 32] {
        Sha256::digest(format!("{}/{app}", self.0)).into()
    }
}

/// A user id's per-app digest: HMAC-SHA-256 under the app's vault key, first 128 bits.
pub fn user_digest(key: &[u8; 32], user: &str) -> u128 {
    keyed_digest(&digest_mac(key), user)
}

/// The HMAC state keyed with an app's vault key, to clone for each user of that app
/// (keying hashes two blocks; a clone does not).
fn digest_mac(key: &[u8; 32]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length")
}

/// [`user_digest`] from the keyed state.
fn keyed_digest(mac: &Hmac<Sha256>, user: &str) -> u128 {
    let mut mac = mac.clone();
    mac.update(user.as_bytes());
    let bytes = mac.finalize().into_bytes();
    u128::from_be_bytes(bytes[..16].try_into().expect("16 bytes"))
}

/// Keys of a batch being appended, as their key records will read.
type KeyRecords = HashMap<Key, KeyRecord>;

fn key_record_of(commit: &Commit) -> KeyRecord {
    KeyRecord {
        digest: commit.digest,
        first_seq: commit.events[0].envelope.seq,
        last_seq: commit.events.last().expect("commits are not empty").envelope.seq,
    }
}

/// The most batches `Ledger::submit_chunks` has decided and not yet seen acknowledged:
/// the deciding thread waits for the store beyond it. Batches waiting together are
/// appended with one flush.
pub const CHUNKS_IN_FLIGHT_MAX: usize = 8;

/// What the appending thread of `Ledger::submit_chunks` reports, batch by batch in order.
enum Landed {
    /// The next `batches` batches are durable; `freed` holds them, to be freed by the
    /// deciding thread.
    Durable { batches: usize, freed: AppendBatch },
    /// The next `batches` batches are durable, then an append failed: nothing after them
    /// is in the log, and the appending thread has stopped.
    Failed { batches: usize, error: LedgerError },
}

/// The appending thread of `Ledger::submit_chunks`: appends every batch waiting, as one
/// append (one flush), until `decided` closes or an append fails. A failed append of
/// several batches is tried again one batch at a time, so that every batch that can be
/// stored is, and acknowledged, as if each had been appended alone.
fn append_decided(
    store: &dyn EventStore,
    decided: &std::sync::mpsc::Receiver<AppendBatch>,
    to_decider: &std::sync::mpsc::Sender<Landed>,
) {
    while let Ok(first) = decided.recv() {
        let mut heads = vec![first.expected_head];
        let mut sizes = vec![first.commits.len()];
        let mut together = first;
        while heads.len() < CHUNKS_IN_FLIGHT_MAX {
            let Ok(mut next) = decided.try_recv() else { break };
            heads.push(next.expected_head);
            sizes.push(next.commits.len());
            together.commits.append(&mut next.commits);
        }
        let landed = match append(store, &together) {
            Ok(()) => Landed::Durable {
                batches: heads.len(),
                freed: together,
            },
            Err(error) if heads.len() == 1 => Landed::Failed { batches: 0, error },
            Err(_) => one_at_a_time(store, together, &heads, &sizes),
        };
        let failed = matches!(landed, Landed::Failed { .. });
        if to_decider.send(landed).is_err() || failed {
            return;
        }
    }
}

/// Appends `together`, made of batches of `sizes` commits sealed against `heads`, one
/// batch at a time, until one fails (a failure of the whole may have been passing).
fn one_at_a_time(store: &dyn EventStore, mut together: AppendBatch, heads: &[Head], sizes: &[usize]) -> Landed {
    let mut rest = std::mem::take(&mut together.commits);
    for (batches, (head, size)) in heads.iter().zip(sizes).enumerate() {
        let tail = rest.split_off(*size);
        let batch = AppendBatch {
            expected_head: *head,
            commits: std::mem::replace(&mut rest, tail),
        };
        if let Err(error) = append(store, &batch) {
            return Landed::Failed { batches, error };
        }
    }
    Landed::Durable {
        batches: heads.len(),
        freed: together,
    }
}

/// Appends, then destroys the vault keys of the apps the batch reclaimed.
fn append(store: &dyn EventStore, batch: &AppendBatch) -> Result<(), LedgerError> {
    if batch.commits.is_empty() {
        return Ok(());
    }
    let reclaimed: Vec<AppId> = batch
        .commits
        .iter()
        .flat_map(|c| &c.events)
        .filter_map(|e| match e.envelope.event {
            EventBody::AppReclaimed { app, .. } => Some(app),
            _ => None,
        })
        .collect();
    store.append(batch)?;
    for app in reclaimed {
        store.destroy_app_key(app)?;
    }
    Ok(())
}

/// The login `input` with `user` in place of its user id: as the log records it.
fn login_as(input: &Input, user: String) -> Input {
    let mut recorded = input.clone();
    if let Command::Login {
        user: recorded_user, ..
    } = &mut recorded.command
    {
        *recorded_user = user;
    }
    recorded
}

/// The vault keys of a chunk's apps (`None`: reclaimed, its users digest to 0).
type ChunkKeys = BTreeMap<AppId, Option<[u8; 32]>>;

/// The key of the `login_batch` input whose rows start at `line` of a bulk file.
fn login_batch_key(file_digest: &str, line: u64) -> Key {
    Key::new(format!("logins/{file_digest}/{line}")).expect("derived keys are well-formed")
}

/// The vault key of each app of `chunk`, as `key` gives it.
fn chunk_keys(
    chunk: &[RawLogin],
    mut key: impl FnMut(AppId) -> Result<Option<[u8; 32]>, LedgerError>,
) -> Result<ChunkKeys, LedgerError> {
    let mut keys = ChunkKeys::new();
    for row in chunk {
        if let btree_map::Entry::Vacant(slot) = keys.entry(row.app) {
            slot.insert(key(row.app)?);
        }
    }
    Ok(keys)
}

/// The chunk's user digests under `keys` (which holds every app of the chunk).
fn digest_users(chunk: &[RawLogin], keys: &ChunkKeys) -> Vec<u128> {
    let macs: BTreeMap<AppId, Option<Hmac<Sha256>>> = keys
        .iter()
        .map(|(app, key)| (*app, key.as_ref().map(digest_mac)))
        .collect();
    let mut last: Option<(AppId, Option<&Hmac<Sha256>>)> = None;
    chunk
        .iter()
        .map(|row| {
            let mac = match last {
                Some((app, mac)) if app == row.app => mac,
                _ => {
                    let mac = macs[&row.app].as_ref();
                    last = Some((row.app, mac));
                    mac
                }
            };
            mac.map_or(0, |mac| keyed_digest(mac, &row.user))
        })
        .collect()
}

/// One row of a bulk login file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawLogin {
    pub line: u64,
    pub app: AppId,
    pub user: String,
    pub logged_in_at: Instant,
}

/// What a bulk login ingestion did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoginSummary {
    pub rows: u64,
    pub rows_already_recorded: u64,
    pub users_counted: u64,
    /// Users refused over the edition's MAU limit (Trial).
    pub refused_over_limit: u64,
    /// Logins to an app that was suspended when the user logged in.
    pub refused_suspended: u64,
    pub events_appended: u64,
}

pub struct Ledger {
    /// Shared with the thread that appends batches while the next are decided (`submit_chunks`).
    store: Arc<dyn EventStore>,
    state: LedgerView,
    book: Rulebook,
    keys: Box<dyn KeySource>,
}

/// Builds one append batch: seals each decided event onto the chain and folds it into
/// the state at once, so the next decision of the same batch sees it.
struct BatchBuilder<'a> {
    state: &'a mut LedgerView,
    book: &'a Rulebook,
    /// `book.label()`, made once a batch rather than formatted for every event.
    label: Arc<str>,
    commits: Vec<Commit>,
}

impl<'a> BatchBuilder<'a> {
    fn new(state: &'a mut LedgerView, book: &'a Rulebook, commits: usize) -> BatchBuilder<'a> {
        BatchBuilder {
            state,
            book,
            label: Arc::from(book.label()),
            commits: Vec::with_capacity(commits),
        }
    }

    fn seal_into(&mut self, events: &mut Vec<SealedEvent>, new: NewEvent) {
        let sealed = seal(self.state.seq + 1, self.state.head_hash, new);
        self.state
            .apply(&sealed.envelope, sealed.hash)
            .unwrap_or_else(|e| panic!("the rules decided an event the projection refuses: {e}"));
        events.push(sealed);
    }

    fn new_event(
        &self,
        key: &Key,
        index: usize,
        at: Instant,
        actor: &Actor,
        cause: Option<Uuid>,
        fact: Fact,
    ) -> NewEvent {
        NewEvent {
            id: event_id(key, index),
            version: self.state.stream_version(&fact.stream) + 1,
            stream: fact.stream,
            occurred_at: at,
            actor: actor.clone(),
            key: key.clone(),
            cause,
            decision: Some(Decision {
                rule: Cow::Borrowed(fact.rule),
                rulebook: self.label.clone(),
            }),
            body: fact.body,
        }
    }

    /// A commit of facts decided by the rules alone (adoption, deadlines): its digest is its key's.
    fn commit_facts(&mut self, key: Key, at: Instant, cause: Option<Uuid>, facts: Vec<Fact>) {
        let mut events = Vec::with_capacity(facts.len());
        for (index, fact) in facts.into_iter().enumerate() {
            let new = self.new_event(&key, index, at, &Actor::System, cause, fact);
            self.seal_into(&mut events, new);
        }
        let digest = crate::verify::key_digest(&key);
        self.commits.push(Commit { key, digest, events });
    }

    /// The first event of a ledger: the rulebook it runs under.
    fn adopt_rulebook(&mut self, at: Instant) {
        if self.state.rulebook.is_some() {
            return;
        }
        let book = self.book;
        let adopt = Fact {
            stream: StreamId::named(StreamId::LEDGER),
            rule: rule::RULEBOOK_ADOPT,
            body: EventBody::RulebookAdopted {
                rulebook: book.label(),
                seed: book.seed.clone(),
                zone: book.zone.to_string(),
                currency: book.currency,
            },
        };
        let key = Key::new(format!("ledger/rulebook/{}", book.label())).expect("derived keys are well-formed");
        self.commit_facts(key, at, None, vec![adopt]);
    }

    /// Fires, in order, every deadline due at or before `until`.
    fn fire_due(&mut self, until: Instant) {
        while let Some(deadline) = self.state.next_deadline().filter(|d| d.at <= until).cloned() {
            let key = Key::new(format!(
                "deadline/{}/{}/{}",
                deadline.kind.as_str(),
                deadline.stream,
                deadline.at
            ))
            .expect("derived keys are well-formed");
            let facts = decide_deadline(&deadline, self.state, self.book);
            self.commit_facts(key, deadline.at, Some(deadline.cause), facts);
        }
    }

    fn record_input(&mut self, events: &mut Vec<SealedEvent>, input: &Input) -> Option<Uuid> {
        let record = NewEvent {
            id: event_id(&input.key, 0),
            version: self.state.stream_version(&StreamId::named(StreamId::INPUTS)) + 1,
            stream: StreamId::named(StreamId::INPUTS),
            occurred_at: input.at,
            actor: input.actor.clone(),
            key: input.key.clone(),
            cause: None,
            decision: None,
            body: EventBody::InputRecorded { input: input.clone() },
        };
        let cause = Some(record.id);
        self.seal_into(events, record);
        cause
    }

    /// A login batch: its record, then the counts decided from its rows.
    /// Returns (users counted, refused over the limit, refused as suspended).
    fn commit_login_batch(&mut self, input: &Input, rows: &[LoginRow]) -> (u64, u64, u64) {
        let mut events = Vec::new();
        let cause = self.record_input(&mut events, input);
        let (mut facts, suspended) = decide_logins(rows, input.at, self.state, self.book);
        for (app, count) in &suspended {
            facts.push(Fact {
                stream: StreamId::app(*app),
                rule: rule::LOGIN_SUSPENDED,
                body: EventBody::CommandRejected {
                    command: input.command.type_name().to_owned(),
                    reason: format!("{count} login(s) refused: app {app} is suspended or reclaimed"),
                },
            });
        }
        let (counted, over_limit) = facts
            .iter()
            .map(|f| match &f.body {
                EventBody::MauCounted { users, refused, .. } => (users.len() as u64, refused.len() as u64),
                _ => (0, 0),
            })
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
        self.commit_decided(input, cause, events, facts);
        (counted, over_limit, suspended.values().sum())
    }

    /// Seals the facts decided for `input` after its record, and closes its commit.
    fn commit_decided(&mut self, input: &Input, cause: Option<Uuid>, mut events: Vec<SealedEvent>, facts: Vec<Fact>) {
        for (index, fact) in facts.into_iter().enumerate() {
            let new = self.new_event(&input.key, index + 1, input.at, &input.actor, cause, fact);
            self.seal_into(&mut events, new);
        }
        self.commits.push(Commit {
            key: input.key.clone(),
            digest: input.digest(),
            events,
        });
    }

    fn commit_input(&mut self, input: &Input) -> Option<Refusal> {
        let mut events = Vec::new();
        let cause = self.record_input(&mut events, input);
        let (facts, refusal) = match decide(input, self.state, self.book) {
            Ok(facts) => (facts, None),
            Err(refusal) => {
                let rejected = Fact {
                    stream: input.command.primary_stream(),
                    rule: refusal.rule,
                    body: EventBody::CommandRejected {
                        command: input.command.type_name().to_owned(),
                        reason: refusal.reason.clone(),
                    },
                };
                (vec![rejected], Some(refusal))
            }
        };
        self.commit_decided(input, cause, events, facts);
        refusal
    }
}

/// The months logins count into, restored from the settled history into a working view
/// before the logins are decided (a late login reopens a month billed for all its users;
/// see `replay::restore_month`). Remembers the last (app, month) seen: logins come in runs.
#[derive(Default)]
struct LoginMonths {
    last: Option<(AppId, Instant, Instant)>,
}

impl LoginMonths {
    fn restore(
        &mut self,
        store: &dyn EventStore,
        state: &mut LedgerView,
        book: &Rulebook,
        app: AppId,
        at: Instant,
    ) -> Result<(), LedgerError> {
        if self
            .last
            .is_some_and(|(a, start, end)| a == app && start <= at && at < end)
        {
            return Ok(());
        }
        let month = book.month_of(at);
        let (start, end) = book.month_bounds(&month);
        replay::restore_month(store, state, app, &month)?;
        self.last = Some((app, start, end));
        Ok(())
    }
}

impl Ledger {
    /// Opens a ledger on `store`, rebuilding the projections (from the stored projection
    /// snapshot when it is valid). A ledger keeps the rulebook it was started under.
    /// Vault keys come from the OS random source.
    pub fn open(store: Box<dyn EventStore>, book: Rulebook) -> Result<Ledger, LedgerError> {
        Ledger::open_with_keys(store, book, Box::new(OsKeys))
    }

    pub fn open_with_keys(
        store: Box<dyn EventStore>,
        book: Rulebook,
        keys: Box<dyn KeySource>,
    ) -> Result<Ledger, LedgerError> {
        let state = replay::load_working(store.as_ref())?;
        if let Some(adopted) = &state.rulebook {
            if adopted.rulebook != book.label() {
                return Err(LedgerError::RulebookMismatch {
                    ledger: adopted.rulebook.clone(),
                    given: book.label(),
                });
            }
        }
        let ledger = Ledger {
            store: Arc::from(store),
            state,
            book,
            keys,
        };
        // A crash between a reclamation's append and its key's destruction leaves a key
        // behind: destroy it now.
        for app in ledger.state.apps.values().filter(|a| a.reclaimed_at.is_some()) {
            ledger.store.destroy_app_key(app.app)?;
        }
        Ok(ledger)
    }

    pub fn state(&self) -> &LedgerView {
        &self.state
    }

    pub fn rulebook(&self) -> &Rulebook {
        &self.book
    }

    pub fn store(&self) -> &dyn EventStore {
        self.store.as_ref()
    }

    pub fn head(&self) -> Head {
        Head {
            seq: self.state.seq,
            hash: self.state.head_hash,
        }
    }

    /// The app's vault key, created on first use; `None` once the app was reclaimed.
    fn vault_key(&mut self, app: AppId) -> Result<Option<[u8; 32]>, LedgerError> {
        if let Some(key) = self.known_vault_key(app)? {
            return Ok(Some(key));
        }
        if self.state.apps.get(&app).is_some_and(|a| a.reclaimed_at.is_some()) {
            return Ok(None);
        }
        let fresh = self.keys.new_key(app);
        Ok(Some(self.store.put_app_key(app, fresh)?))
    }

    /// The app's key if it has one now, without making one: `None` for a reclaimed app
    /// (its key is destroyed) and for an app that never had one.
    fn known_vault_key(&self, app: AppId) -> Result<Option<[u8; 32]>, LedgerError> {
        if self.state.apps.get(&app).is_some_and(|a| a.reclaimed_at.is_some()) {
            return Ok(None);
        }
        Ok(self.store.app_key(app)?)
    }

    /// The input as the log records it: a login's user id replaced by its per-app digest
    /// (a reclaimed app's logins keep no trace of the user at all).
    pub fn prepare<'a>(&mut self, input: &'a Input) -> Result<Cow<'a, Input>, LedgerError> {
        let Command::Login { app, user, .. } = &input.command else {
            return Ok(Cow::Borrowed(input));
        };
        let user = match self.vault_key(*app)? {
            Some(key) => digest_hex(user_digest(&key, user)),
            None => String::new(),
        };
        Ok(Cow::Owned(login_as(input, user)))
    }

    /// The digest of `input` as it was (or would be) recorded, without creating vault keys;
    /// `None` when it cannot be known (a login of an app with no key: never recorded, or shredded).
    pub fn recorded_digest(&self, input: &Input) -> Result<Option<[u8; 32]>, LedgerError> {
        let Command::Login { app, user, .. } = &input.command else {
            return Ok(Some(input.digest()));
        };
        let Some(key) = self.store.app_key(*app)? else {
            return Ok(None);
        };
        Ok(Some(login_as(input, digest_hex(user_digest(&key, user))).digest()))
    }

    /// Runs `inputs` through the rules, in order, and appends everything they and the
    /// deadlines they pass produce as ONE batch: all of it is acknowledged (durable) when
    /// this returns `Ok`, or none of it is in the log.
    pub fn submit(&mut self, inputs: &[Input]) -> Result<Vec<Outcome>, LedgerError> {
        let result = self
            .prepare_and_build(inputs, &|_| None)
            .and_then(|(expected_head, commits, outcomes)| {
                append(self.store.as_ref(), &AppendBatch { expected_head, commits })?;
                Ok(outcomes)
            });
        if result.is_err() {
            // The state already folded the refused batch in: rebuild it from what is stored.
            self.state = replay::load_working(self.store.as_ref())?;
        }
        result
    }

    /// `submit` of consecutive batches of `chunk_inputs` inputs, each all or nothing,
    /// handed to `on_ack(index of its first input, its outcomes, the head after it)` in
    /// order once durable.
    /// Batches are written and flushed on a second thread while the next ones are decided
    /// on this one (the store's write is most of a bulk import); batches decided while the
    /// store flushes are appended together, with one flush (up to [`CHUNKS_IN_FLIGHT_MAX`]
    /// batches wait), and batches decided meanwhile treat the keys of those not yet
    /// acknowledged as recorded. On an error nothing after the last acknowledged batch is
    /// in the log, and the state is rebuilt from the store.
    pub fn submit_chunks(
        &mut self,
        inputs: &[Input],
        chunk_inputs: usize,
        mut on_ack: impl FnMut(usize, Vec<Outcome>, Head),
    ) -> Result<(), LedgerError> {
        assert!(chunk_inputs > 0, "a batch holds at least one input");
        /// A batch decided and sent to the appending thread, not yet acknowledged.
        struct Pending {
            first_input: usize,
            outcomes: Vec<Outcome>,
            head: Head,
            keys: KeyRecords,
        }
        let (to_appender, decided) = std::sync::mpsc::sync_channel::<AppendBatch>(CHUNKS_IN_FLIGHT_MAX);
        let (to_decider, landed) = std::sync::mpsc::channel::<Landed>();
        let store = Arc::clone(&self.store);
        let result = std::thread::scope(|scope| -> Result<(), LedgerError> {
            scope.spawn(move || append_decided(store.as_ref(), &decided, &to_decider));
            let mut pending: VecDeque<Pending> = VecDeque::with_capacity(CHUNKS_IN_FLIGHT_MAX);
            // Hands acknowledged batches to `on_ack`, waiting for one if `wait`; a failed
            // append is returned once the batches before it are acknowledged.
            let mut take_landed = |pending: &mut VecDeque<Pending>, wait: bool| -> Result<(), LedgerError> {
                let mut next = if wait {
                    Some(
                        landed
                            .recv()
                            .expect("the appending thread reports every batch it is sent"),
                    )
                } else {
                    landed.try_recv().ok()
                };
                while let Some(news) = next {
                    let (acknowledged, failed) = match news {
                        // The batches come back to be freed here, on the thread that made
                        // them (freed by the appender, they cost it 8 % of its time).
                        Landed::Durable { batches, freed } => {
                            drop(freed);
                            (batches, None)
                        }
                        Landed::Failed { batches, error } => (batches, Some(error)),
                    };
                    for batch in pending.drain(..acknowledged) {
                        on_ack(batch.first_input, batch.outcomes, batch.head);
                    }
                    if let Some(error) = failed {
                        return Err(error);
                    }
                    next = landed.try_recv().ok();
                }
                Ok(())
            };
            let mut decided_error = None;
            for (number, chunk) in inputs.chunks(chunk_inputs).enumerate() {
                take_landed(&mut pending, false)?;
                while pending.len() >= CHUNKS_IN_FLIGHT_MAX {
                    take_landed(&mut pending, true)?;
                }
                let in_flight = |key: &Key| pending.iter().rev().find_map(|p| p.keys.get(key).copied());
                let (expected_head, commits, outcomes) = match self.prepare_and_build(chunk, &in_flight) {
                    Ok(built) => built,
                    Err(e) => {
                        decided_error = Some(e);
                        break;
                    }
                };
                let keys = commits.iter().map(|c| (c.key.clone(), key_record_of(c))).collect();
                if to_appender.send(AppendBatch { expected_head, commits }).is_err() {
                    // The appender stopped on a failed append: its report is waiting.
                    break;
                }
                pending.push_back(Pending {
                    first_input: number * chunk_inputs,
                    outcomes,
                    head: self.head(),
                    keys,
                });
            }
            // Whatever the last decision gave, the batches before it land (or fail) first.
            drop(to_appender);
            while !pending.is_empty() {
                take_landed(&mut pending, true)?;
            }
            decided_error.map_or(Ok(()), Err)
        });
        if result.is_err() {
            // The state folded batches that are not stored: rebuild it from what is.
            self.state = replay::load_working(self.store.as_ref())?;
        }
        result
    }

    /// The batch `inputs` make, decided and folded onto the state, with the head it
    /// follows; `in_flight` holds keys being appended, not yet in the store.
    fn prepare_and_build(
        &mut self,
        inputs: &[Input],
        in_flight: &dyn Fn(&Key) -> Option<KeyRecord>,
    ) -> Result<(Head, Vec<Commit>, Vec<Outcome>), LedgerError> {
        let mut prepared = Vec::with_capacity(inputs.len());
        for input in inputs {
            prepared.push(self.prepare(input)?);
        }
        let expected_head = self.head();
        let (commits, outcomes) = self.build(&prepared, in_flight)?;
        Ok((expected_head, commits, outcomes))
    }

    fn build(
        &mut self,
        inputs: &[Cow<'_, Input>],
        in_flight: &dyn Fn(&Key) -> Option<KeyRecord>,
    ) -> Result<(Vec<Commit>, Vec<Outcome>), LedgerError> {
        let mut builder = BatchBuilder::new(&mut self.state, &self.book, inputs.len());
        let mut outcomes = Vec::with_capacity(inputs.len());
        let mut keys_in_batch: HashSet<&Key> = HashSet::with_capacity(inputs.len());
        for input in inputs {
            let recorded = match in_flight(&input.key) {
                Some(record) => Some(record),
                None => self.store.key_record(&input.key)?,
            };
            if let Some(record) = recorded {
                if record.digest != input.digest() {
                    return Err(LedgerError::KeyConflict {
                        key: input.key.clone(),
                        first_seq: record.first_seq,
                    });
                }
                outcomes.push(Outcome::Repeated(record));
                continue;
            }
            if !keys_in_batch.insert(&input.key) {
                let first = builder
                    .commits
                    .iter()
                    .find(|c| c.key == input.key)
                    .expect("seen in this batch");
                if first.digest != input.digest() {
                    return Err(LedgerError::KeyConflict {
                        key: input.key.clone(),
                        first_seq: first.events[0].envelope.seq,
                    });
                }
                outcomes.push(Outcome::Repeated(key_record_of(first)));
                continue;
            }
            if let Some(clock) = builder.state.clock.filter(|clock| input.at < *clock) {
                return Err(LedgerError::BeforeClock {
                    key: input.key.clone(),
                    at: input.at,
                    clock,
                });
            }
            builder.adopt_rulebook(input.at);
            builder.fire_due(input.at);
            if let Command::Login { app, logged_in_at, .. } = &input.command {
                let mut months = LoginMonths::default();
                months.restore(
                    self.store.as_ref(),
                    builder.state,
                    &self.book,
                    *app,
                    logged_in_at.unwrap_or(input.at),
                )?;
            }
            let first_seq = builder.state.seq + 1;
            let refusal = builder.commit_input(input);
            outcomes.push(Outcome::Recorded {
                first_seq,
                last_seq: builder.state.seq,
                refusal,
            });
        }
        Ok((builder.commits, outcomes))
    }

    /// Ingests a bulk login file's rows (already parsed, in file order) in acknowledged
    /// chunks of `chunk_rows`. A chunk is split where a row's time passes a deadline, so
    /// deadlines fire in order between logins; each piece is one `login_batch` input keyed
    /// `logins/<file digest>/<first line>`, so a re-run skips what is recorded. A row dated
    /// before the clock is a late login, received now.
    pub fn ingest_logins(
        &mut self,
        source: &str,
        file_digest: &str,
        rows: &[RawLogin],
        chunk_rows: usize,
        mut on_ack: impl FnMut(u64, u64),
    ) -> Result<LoginSummary, LedgerError> {
        assert!(chunk_rows > 0, "a chunk holds at least one row");
        let mut summary = LoginSummary {
            rows: rows.len() as u64,
            ..LoginSummary::default()
        };
        let start_seq = self.head().seq;
        let chunks: Vec<&[RawLogin]> = rows.chunks(chunk_rows).collect();
        // The users' HMACs are a quarter of the work: the next chunk's are computed on
        // another core while this one is decided and appended, with the keys its apps
        // have now. A key that changes meanwhile (a reclamation destroys one, a new app
        // gets one) is caught when that chunk starts, and its digests are made again.
        std::thread::scope(|scope| -> Result<(), LedgerError> {
            // The chunk whose digests are being made ahead, the keys they are made with.
            let mut ahead: Option<(usize, ChunkKeys, std::thread::ScopedJoinHandle<Vec<u128>>)> = None;
            for (number, &chunk) in chunks.iter().enumerate() {
                if self
                    .store
                    .key_record(&login_batch_key(file_digest, chunk[0].line))?
                    .is_some()
                {
                    summary.rows_already_recorded += chunk.len() as u64;
                    continue;
                }
                let keys = chunk_keys(chunk, |app| self.vault_key(app))?;
                // Made ahead for this chunk (not for one skipped as recorded) with its keys.
                let users = match ahead.take() {
                    Some((made_for, used, digests)) if made_for == number && used == keys => {
                        digests.join().expect("user digests do not panic")
                    }
                    _ => digest_users(chunk, &keys),
                };
                if let Some(&next) = chunks.get(number + 1) {
                    let next_keys = chunk_keys(next, |app| self.known_vault_key(app))?;
                    let used = next_keys.clone();
                    ahead = Some((number + 1, used, scope.spawn(move || digest_users(next, &next_keys))));
                }
                self.ingest_chunk(source, file_digest, chunk, users, &mut summary)?;
                on_ack(self.head().seq, chunk[chunk.len() - 1].line);
            }
            Ok(())
        })?;
        summary.events_appended = self.head().seq - start_seq;
        Ok(summary)
    }

    /// Decides and appends one acknowledged chunk of a bulk login file, `users` its rows'
    /// digests.
    fn ingest_chunk(
        &mut self,
        source: &str,
        file_digest: &str,
        chunk: &[RawLogin],
        users: Vec<u128>,
        summary: &mut LoginSummary,
    ) -> Result<(), LedgerError> {
        let digested: Vec<LoginRow> = chunk
            .iter()
            .zip(users)
            .map(|(row, user)| LoginRow {
                app: row.app,
                user,
                logged_in_at: row.logged_in_at,
                login: LoginName::Line { source, line: row.line },
            })
            .collect();
        let mut months = LoginMonths::default();
        for row in chunk {
            months.restore(
                self.store.as_ref(),
                &mut self.state,
                &self.book,
                row.app,
                row.logged_in_at,
            )?;
        }
        let expected_head = self.head();
        let mut builder = BatchBuilder::new(&mut self.state, &self.book, 0);
        let mut piece_start = 0;
        let commit_piece = |builder: &mut BatchBuilder, from: usize, to: usize| {
            let piece = &chunk[from..to];
            let clock = builder.state.clock.unwrap_or(piece[0].logged_in_at);
            let at = piece.iter().map(|r| r.logged_in_at).fold(clock, Instant::max);
            // The SHA-256 of the rows' `app,user,logged_in_at` lines. Logins come in
            // runs of one app and of one second: each text is made once per run.
            let mut hasher = Sha256::new();
            let (mut app_text, mut at_text) = (String::new(), String::new());
            let (mut app_of_text, mut at_of_text) = (None, None);
            for row in piece {
                if app_of_text != Some(row.app) {
                    app_text.clear();
                    write!(app_text, "{},", row.app).expect("writes to a String");
                    app_of_text = Some(row.app);
                }
                if at_of_text != Some(row.logged_in_at) {
                    at_text.clear();
                    writeln!(at_text, ",{}", row.logged_in_at).expect("writes to a String");
                    at_of_text = Some(row.logged_in_at);
                }
                hasher.update(app_text.as_bytes());
                hasher.update(row.user.as_bytes());
                hasher.update(at_text.as_bytes());
            }
            let input = Input {
                key: login_batch_key(file_digest, piece[0].line),
                at,
                actor: Actor::System,
                command: Command::LoginBatch {
                    source: source.to_owned(),
                    first_line: piece[0].line,
                    last_line: piece[piece.len() - 1].line,
                    rows: piece.len() as u64,
                    sha256: hex::encode(hasher.finalize()),
                },
            };
            builder.adopt_rulebook(at);
            builder.commit_login_batch(&input, &digested[from..to])
        };
        let mut count = |(counted, over_limit, suspended): (u64, u64, u64)| {
            summary.users_counted += counted;
            summary.refused_over_limit += over_limit;
            summary.refused_suspended += suspended;
        };
        for (index, row) in chunk.iter().enumerate() {
            let due = builder.state.next_deadline().is_some_and(|d| d.at <= row.logged_in_at);
            if due {
                if index > piece_start {
                    count(commit_piece(&mut builder, piece_start, index));
                    piece_start = index;
                }
                builder.fire_due(row.logged_in_at);
            }
        }
        count(commit_piece(&mut builder, piece_start, chunk.len()));
        let commits = builder.commits;
        if let Err(e) = append(self.store.as_ref(), &AppendBatch { expected_head, commits }) {
            self.state = replay::load_working(self.store.as_ref())?;
            return Err(e);
        }
        Ok(())
    }

    /// Stores the current projections as a snapshot, so the next start replays only what
    /// follows. Leaves the state the working view (settled history stored apart: see
    /// `replay::save_snapshot_with`).
    pub fn save_snapshot(&mut self) -> Result<(), LedgerError> {
        self.save_snapshot_with(replay::Spacing::DEFAULT)
    }

    /// [`Ledger::save_snapshot`], its append-only parts cut at `spacing` (tests use small values).
    pub fn save_snapshot_with(&mut self, spacing: replay::Spacing) -> Result<(), LedgerError> {
        replay::save_snapshot_with(self.store.as_ref(), &mut self.state, spacing)?;
        Ok(())
    }
}
