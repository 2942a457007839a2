//! Group commit: many threads submit single inputs; one writer thread owns the [`Ledger`]
//! and appends whatever is queued as ONE batch (`Ledger::submit`), so one flush
//! acknowledges the whole group. A caller is answered only after the flush that made its
//! input durable (or with the error that refused it).
//!
//! The writer never waits for a group to fill: it takes the first queued input, drains
//! whatever else is already queued (up to [`GROUP_INPUTS_MAX`]), and submits. Groups grow
//! by themselves while a flush is in progress, so a lone caller pays one flush and many
//! concurrent callers share one.
//!
//! Within a group, inputs are ordered by `at` (stably: arrival order among equal times),
//! as a concurrent group has no other order to keep. One bad input cannot fail the others:
//! before the batch, an input dated before the ledger's clock is refused alone
//! ([`LedgerError::BeforeClock`]), an input whose key is already recorded with another
//! payload is refused alone ([`LedgerError::KeyConflict`]), and a second input with a key
//! already in the group waits for the next group (where it is answered `Repeated` or
//! refused as a conflict). Should the batch still fail, its inputs are submitted one by
//! one, each answered with its own outcome.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use chat_ledger_events::{Input, Key};

use crate::ledger::{Ledger, LedgerError, Outcome};

/// The most inputs one group (one batch, one flush) holds by default. Large enough that
/// hundreds of concurrent callers share a flush; small enough that one group's decide and
/// seal (microseconds per input) stays well under a flush's latency budget.
pub const GROUP_INPUTS_MAX: usize = 256;

/// Requests that may wait in the queue per group slot before submitters block (backpressure).
const QUEUE_GROUPS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The writer stopped (shut down, or its thread panicked) before answering: the input
    /// may or may not be in the log; re-read it by key.
    #[error("the group committer stopped before acknowledging this input")]
    Stopped,
}

type Reply = Result<Outcome, LedgerError>;

enum Request {
    Input { input: Input, reply: SyncSender<Reply> },
    Stop,
}

/// How many inputs each flush acknowledged: a histogram of group sizes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupSizes {
    /// group size → number of groups (batches submitted) of that size.
    pub histogram: BTreeMap<usize, u64>,
}

impl GroupSizes {
    fn record(&mut self, size: usize) {
        *self.histogram.entry(size).or_default() += 1;
    }

    /// Batches submitted.
    pub fn groups(&self) -> u64 {
        self.histogram.values().sum()
    }

    /// Inputs submitted in them.
    pub fn inputs(&self) -> u64 {
        self.histogram.iter().map(|(size, n)| *size as u64 * n).sum()
    }

    pub fn min(&self) -> Option<usize> {
        self.histogram.keys().next().copied()
    }

    pub fn max(&self) -> Option<usize> {
        self.histogram.keys().next_back().copied()
    }

    /// The group size at percentile `p` (0..=100) over groups.
    pub fn percentile(&self, p: u64) -> Option<usize> {
        let groups = self.groups();
        if groups == 0 {
            return None;
        }
        let rank = (groups - 1) * p.min(100) / 100;
        let mut seen = 0;
        for (size, n) in &self.histogram {
            seen += n;
            if seen > rank {
                return Some(*size);
            }
        }
        unreachable!("rank < groups")
    }

    /// Mean inputs per batch.
    pub fn mean(&self) -> f64 {
        match self.groups() {
            0 => 0.0,
            g => self.inputs() as f64 / g as f64,
        }
    }
}

/// A waiting acknowledgement, from [`GroupCommitter::enqueue`].
pub struct Ticket(Receiver<Reply>);

impl Ticket {
    /// Blocks until the input's group is flushed (or refused).
    pub fn wait(self) -> Result<Outcome, CommitError> {
        match self.0.recv() {
            Ok(reply) => reply.map_err(CommitError::Ledger),
            Err(_) => Err(CommitError::Stopped),
        }
    }
}

/// A cheap, cloneable handle for submitting from `'static` threads.
#[derive(Clone)]
pub struct CommitHandle {
    queue: SyncSender<Request>,
}

impl CommitHandle {
    /// Queues `input`; the ticket answers once it is durable.
    pub fn enqueue(&self, input: Input) -> Ticket {
        let (reply, answer) = mpsc::sync_channel(1);
        // A failed send drops `reply`, so the ticket answers `Stopped`.
        let _ = self.queue.send(Request::Input { input, reply });
        Ticket(answer)
    }

    /// Submits `input` and blocks until it is durable: `Ok` is an acknowledgement.
    pub fn submit(&self, input: Input) -> Result<Outcome, CommitError> {
        self.enqueue(input).wait()
    }
}

/// Owns a [`Ledger`] on a writer thread; see the module documentation.
pub struct GroupCommitter {
    handle: CommitHandle,
    writer: Option<JoinHandle<Ledger>>,
    sizes: Arc<Mutex<GroupSizes>>,
}

impl GroupCommitter {
    /// Starts the writer with groups of up to [`GROUP_INPUTS_MAX`] inputs.
    pub fn start(ledger: Ledger) -> GroupCommitter {
        GroupCommitter::with_max(ledger, GROUP_INPUTS_MAX)
    }

    /// Starts the writer with groups of up to `max_group` inputs (1 = no grouping).
    pub fn with_max(ledger: Ledger, max_group: usize) -> GroupCommitter {
        assert!(max_group > 0, "a group holds at least one input");
        let (queue, requests) = mpsc::sync_channel(max_group * QUEUE_GROUPS);
        let sizes = Arc::new(Mutex::new(GroupSizes::default()));
        let writer = Writer {
            ledger,
            requests,
            max_group,
            carried: VecDeque::new(),
            sizes: Arc::clone(&sizes),
        };
        let writer = std::thread::Builder::new()
            .name("ledger-group-commit".to_owned())
            .spawn(move || writer.run())
            .expect("spawn the group-commit writer");
        GroupCommitter {
            handle: CommitHandle { queue },
            writer: Some(writer),
            sizes,
        }
    }

    pub fn handle(&self) -> CommitHandle {
        self.handle.clone()
    }

    pub fn enqueue(&self, input: Input) -> Ticket {
        self.handle.enqueue(input)
    }

    /// Submits `input` and blocks until it is durable: `Ok` is an acknowledgement.
    pub fn submit(&self, input: Input) -> Result<Outcome, CommitError> {
        self.handle.submit(input)
    }

    /// The group sizes so far.
    pub fn group_sizes(&self) -> GroupSizes {
        self.sizes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Answers everything queued before this call, stops the writer and gives the ledger
    /// back. Inputs queued later (through surviving handles) are answered `Stopped`.
    /// Panics if the writer thread panicked.
    pub fn shutdown(mut self) -> Ledger {
        let _ = self.handle.queue.send(Request::Stop);
        let writer = self.writer.take().expect("the writer runs until shutdown");
        match writer.join() {
            Ok(ledger) => ledger,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for GroupCommitter {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            let _ = self.handle.queue.send(Request::Stop);
            let _ = writer.join();
        }
    }
}

struct Pending {
    input: Input,
    reply: SyncSender<Reply>,
}

struct Writer {
    ledger: Ledger,
    requests: Receiver<Request>,
    max_group: usize,
    /// Inputs deferred to the next group (their key was already in the group).
    carried: VecDeque<Pending>,
    sizes: Arc<Mutex<GroupSizes>>,
}

impl Writer {
    fn run(mut self) -> Ledger {
        let mut stopping = false;
        loop {
            let mut group: Vec<Pending> = Vec::with_capacity(self.max_group.min(64));
            while group.len() < self.max_group {
                match self.carried.pop_front() {
                    Some(p) => group.push(p),
                    None => break,
                }
            }
            if group.is_empty() && !stopping {
                match self.requests.recv() {
                    Ok(Request::Input { input, reply }) => group.push(Pending { input, reply }),
                    Ok(Request::Stop) | Err(_) => stopping = true,
                }
            }
            while group.len() < self.max_group && !stopping {
                match self.requests.try_recv() {
                    Ok(Request::Input { input, reply }) => group.push(Pending { input, reply }),
                    Ok(Request::Stop) => stopping = true,
                    Err(_) => break,
                }
            }
            if group.is_empty() {
                // Stopping, nothing carried: inputs queued after the stop are answered
                // `Stopped` when their reply senders drop with the receiver.
                return self.ledger;
            }
            self.commit_group(group);
        }
    }

    fn commit_group(&mut self, mut group: Vec<Pending>) {
        group.sort_by_key(|p| p.input.at);
        let clock = self.ledger.state().clock;
        let mut keys: HashSet<Key> = HashSet::with_capacity(group.len());
        let mut batch: Vec<Pending> = Vec::with_capacity(group.len());
        for pending in group {
            if let Some(clock) = clock.filter(|clock| pending.input.at < *clock) {
                let refused = LedgerError::BeforeClock {
                    key: pending.input.key.clone(),
                    at: pending.input.at,
                    clock,
                };
                let _ = pending.reply.send(Err(refused));
                continue;
            }
            if keys.contains(&pending.input.key) {
                self.carried.push_back(pending);
                continue;
            }
            match self.conflict(&pending.input) {
                Ok(None) => {}
                Ok(Some(refused)) | Err(refused) => {
                    let _ = pending.reply.send(Err(refused));
                    continue;
                }
            }
            keys.insert(pending.input.key.clone());
            batch.push(pending);
        }
        if batch.is_empty() {
            return;
        }
        let inputs: Vec<Input> = batch.iter().map(|p| p.input.clone()).collect();
        match self.ledger.submit(&inputs) {
            Ok(outcomes) => {
                self.record(inputs.len());
                for (pending, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = pending.reply.send(Ok(outcome));
                }
            }
            Err(_) if batch.len() > 1 => {
                // One at a time, so whatever failed the batch fails only its own input.
                // (After an `Io` error some of them may be stored: they answer `Repeated`.)
                for pending in batch {
                    let reply = self
                        .ledger
                        .submit(std::slice::from_ref(&pending.input))
                        .map(|mut outcomes| outcomes.pop().expect("one outcome per input"));
                    if reply.is_ok() {
                        self.record(1);
                    }
                    let _ = pending.reply.send(reply);
                }
            }
            Err(e) => {
                let pending = batch.pop().expect("one input");
                let _ = pending.reply.send(Err(e));
            }
        }
    }

    /// `Some(KeyConflict)` when `input`'s key is recorded with another payload.
    fn conflict(&self, input: &Input) -> Result<Option<LedgerError>, LedgerError> {
        let Some(record) = self.ledger.store().key_record(&input.key)? else {
            return Ok(None);
        };
        // A login is recorded with its user digest; when it cannot be recomputed (the
        // app's key is gone) the batch decides, and the fallback isolates it.
        match self.ledger.recorded_digest(input)? {
            Some(digest) if digest != record.digest => Ok(Some(LedgerError::KeyConflict {
                key: input.key.clone(),
                first_seq: record.first_seq,
            })),
            _ => Ok(None),
        }
    }

    fn record(&self, size: usize) {
        self.sizes.lock().unwrap_or_else(|p| p.into_inner()).record(size);
    }
}
