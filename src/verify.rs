//! verify, export and restore: what an auditor runs. `verify` walks the log (or an
//! exported file) from position 1 and names the first bad position: bytes that do not
//! decode, a position holding another event (deleted, inserted, swapped), a broken hash
//! link (an altered event), an event the projections cannot follow (inconsistent), or a
//! head that is not the one the auditor kept (truncated tail, rewritten history).

use std::fmt;
use std::io::Write;

use chat_ledger_events::{decode, Envelope, EventBody, Hash, Key};
use chat_ledger_projections::LedgerView;
use sha2::{Digest, Sha256};

use crate::store::{AppendBatch, Commit, EventStore, Head, StoreError};

/// A head an auditor kept: `SEQ:HASH` (as `verify` prints it) or just the hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectedHead {
    pub seq: Option<u64>,
    pub hash: Hash,
}

impl std::str::FromStr for ExpectedHead {
    type Err = String;
    fn from_str(s: &str) -> Result<ExpectedHead, String> {
        match s.split_once(':') {
            Some((seq, hash)) => Ok(ExpectedHead {
                seq: Some(
                    seq.parse()
                        .map_err(|_| format!("{seq:?} is not a position; write SEQ:HASH or HASH"))?,
                ),
                hash: Hash::parse(hash)?,
            }),
            None => Ok(ExpectedHead {
                seq: None,
                hash: Hash::parse(s)?,
            }),
        }
    }
}

/// Prints as `SEQ:HASH`, the form to keep and give back to `verify --expect-head`.
pub fn head_label(head: Head) -> String {
    format!("{}:{}", head.seq, head.hash)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFailure {
    /// The first position found bad.
    pub position: u64,
    pub reason: String,
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "position {}: {}", self.position, self.reason)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub head: Head,
    pub streams: usize,
    pub inputs_recorded: u64,
}

/// The walk over positions; fed one stored event at a time.
struct Walker {
    view: LedgerView,
    expected: Option<ExpectedHead>,
    expected_seen: bool,
}

impl Walker {
    fn new(expected: Option<ExpectedHead>) -> Walker {
        Walker {
            view: LedgerView::default(),
            expected,
            expected_seen: false,
        }
    }

    /// `position` is where the event was found: its index key, or its line in a file.
    fn step(&mut self, position: u64, bytes: &[u8]) -> Result<Envelope, VerifyFailure> {
        let want = self.view.seq + 1;
        let fail = |position: u64, reason: String| Err(VerifyFailure { position, reason });
        if position != want {
            return fail(
                want,
                format!("missing: the next event stored is at position {position} (a gap in the sequence)"),
            );
        }
        let event = match decode(bytes) {
            Ok(event) => event,
            Err(e) => return fail(want, format!("cannot be decoded: {e}")),
        };
        if event.seq != want {
            return fail(
                want,
                format!(
                    "holds event {} instead of event {want}: events were deleted, inserted or swapped",
                    event.seq
                ),
            );
        }
        if event.prev != self.view.head_hash {
            return match want {
                1 => fail(
                    1,
                    "its prev link is not the genesis hash: the log's start was altered".into(),
                ),
                _ => fail(
                    want - 1,
                    format!(
                        "altered: its bytes hash to {}, but event {want} was chained to {}",
                        self.view.head_hash, event.prev
                    ),
                ),
            };
        }
        let hash = Hash::of(bytes);
        if let Err(e) = self.view.apply(&event, hash) {
            return fail(want, format!("inconsistent with the events before it: {}", e.reason));
        }
        if let Some(expected) = self.expected {
            let at_position = expected.seq.is_none_or(|seq| seq == want);
            if at_position && hash == expected.hash {
                self.expected_seen = true;
            } else if expected.seq == Some(want) {
                return fail(
                    want,
                    format!(
                        "hashes to {hash}, not to the expected head {}: history up to here was rewritten",
                        expected.hash
                    ),
                );
            }
        }
        Ok(event)
    }

    /// `recorded_head`: `None` for a file (nothing to compare), `Some(None)` for a store
    /// whose head record is missing, `Some(Some(head))` for a store's record.
    fn finish(self, recorded_head: Option<Option<Head>>) -> Result<VerifyReport, VerifyFailure> {
        let head = Head {
            seq: self.view.seq,
            hash: self.view.head_hash,
        };
        if recorded_head == Some(None) && head.seq > 0 {
            return Err(VerifyFailure {
                position: head.seq + 1,
                reason: format!(
                    "the store's head record is missing (the chain ends at {}): the tail may have been cut",
                    head_label(head)
                ),
            });
        }
        if let Some(Some(recorded)) = recorded_head {
            if recorded != head {
                // A record past the chain's end: the first missing event. Otherwise the
                // record's own position, whose event is not the one it kept.
                let position = if recorded.seq > head.seq {
                    head.seq + 1
                } else {
                    recorded.seq.max(1)
                };
                return Err(VerifyFailure {
                    position,
                    reason: format!(
                        "the store's head record says {} but the chain ends at {}: the tail was truncated or altered",
                        head_label(recorded),
                        head_label(head)
                    ),
                });
            }
        }
        if let Some(expected) = self.expected {
            if !self.expected_seen {
                let reason = match expected.seq {
                    Some(seq) => format!(
                        "the log ends at position {}, before the expected head's position {seq}: its tail was truncated",
                        head.seq
                    ),
                    None => format!(
                        "the expected head {} is nowhere in this chain (ending at {}): the log was truncated or rewritten",
                        expected.hash,
                        head_label(head)
                    ),
                };
                return Err(VerifyFailure {
                    position: head.seq + 1,
                    reason,
                });
            }
        }
        if let Err(reason) = self.view.check_conservation() {
            return Err(VerifyFailure {
                position: head.seq,
                reason: format!("money is not conserved: {reason}"),
            });
        }
        Ok(VerifyReport {
            head,
            streams: self.view.streams.len(),
            inputs_recorded: self.view.inputs_recorded,
        })
    }
}

/// Verifies a store: every event, then the store's own head record.
pub fn verify_store(
    store: &dyn EventStore,
    expected: Option<ExpectedHead>,
) -> Result<Result<VerifyReport, VerifyFailure>, StoreError> {
    let mut walker = Walker::new(expected);
    let mut failed = None;
    store.scan(1, &mut |seq, bytes| match walker.step(seq, bytes) {
        Ok(_) => true,
        Err(failure) => {
            failed = Some(failure);
            false
        }
    })?;
    if let Some(failure) = failed {
        return Ok(Err(failure));
    }
    Ok(walker.finish(Some(store.recorded_head()?)))
}

/// Verifies an exported file: line N must hold event N.
pub fn verify_export(text: &str, expected: Option<ExpectedHead>) -> Result<VerifyReport, VerifyFailure> {
    walk_export(text, expected, |_| {})
}

fn walk_export(
    text: &str,
    expected: Option<ExpectedHead>,
    mut visit: impl FnMut(Envelope),
) -> Result<VerifyReport, VerifyFailure> {
    let mut walker = Walker::new(expected);
    for (index, line) in text.lines().enumerate() {
        let position = index as u64 + 1;
        if line.is_empty() {
            return Err(VerifyFailure {
                position,
                reason: "empty line: an export holds one event per line".into(),
            });
        }
        visit(walker.step(position, line.as_bytes())?);
    }
    if !text.is_empty() && !text.ends_with('\n') {
        let position = walker.view.seq;
        return Err(VerifyFailure {
            position,
            reason: "the file ends mid-line: it was truncated".into(),
        });
    }
    walker.finish(None)
}

/// Writes every stored event's bytes, verbatim, one per line.
pub fn export(store: &dyn EventStore, out: &mut impl Write) -> Result<u64, ExportError> {
    let mut written = Ok(());
    let events = store.scan(1, &mut |_, bytes| {
        written = out.write_all(bytes).and_then(|()| out.write_all(b"\n"));
        written.is_ok()
    })?;
    written?;
    Ok(events)
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the export failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the file does not verify, nothing was restored: {0}")]
    Invalid(VerifyFailure),
    #[error("the store's head {store} is not in the file at its position: restore only into an empty store or one holding a prefix of this file")]
    Diverged { store: String },
}

/// Restores an exported file into a store, bytes verbatim (so the head hash is the same):
/// the whole file is verified first; a store already holding a prefix of the file gets
/// the rest. Events are grouped back into their commits by key.
pub fn restore(store: &dyn EventStore, text: &str, commits_per_batch: usize) -> Result<u64, ExportError> {
    let mut events: Vec<(Envelope, &[u8])> = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    walk_export(text, None, |e| {
        let line = lines[e.seq as usize - 1];
        events.push((e, line.as_bytes()));
    })
    .map_err(ExportError::Invalid)?;
    let head = store.head()?;
    if head.seq > 0 {
        let matches = events
            .get(head.seq as usize - 1)
            .is_some_and(|(_, bytes)| Hash::of(bytes) == head.hash);
        if !matches {
            return Err(ExportError::Diverged {
                store: head_label(head),
            });
        }
    }
    let mut commits: Vec<Commit> = Vec::new();
    for (envelope, bytes) in events.into_iter().skip(head.seq as usize) {
        let sealed = chat_ledger_events::SealedEvent {
            hash: Hash::of(bytes),
            bytes: bytes.to_vec(),
            envelope,
        };
        match commits.last_mut() {
            Some(commit) if commit.key == sealed.envelope.key => commit.events.push(sealed),
            _ => {
                let digest = match &sealed.envelope.event {
                    EventBody::InputRecorded { input } => input.digest(),
                    _ => key_digest(&sealed.envelope.key),
                };
                commits.push(Commit {
                    key: sealed.envelope.key.clone(),
                    digest,
                    events: vec![sealed],
                });
            }
        }
    }
    let mut appended = 0;
    let mut expected_head = head;
    for batch in commits.chunks(commits_per_batch.max(1)) {
        store.append(&AppendBatch {
            expected_head,
            commits: batch.to_vec(),
        })?;
        let last = batch
            .last()
            .and_then(|c| c.events.last())
            .expect("commits are not empty");
        expected_head = Head {
            seq: last.envelope.seq,
            hash: last.hash,
        };
        appended += batch.iter().map(|c| c.events.len() as u64).sum::<u64>();
    }
    Ok(appended)
}

/// Digest of a commit decided by the rules alone (adoption, deadlines): its key's.
pub fn key_digest(key: &Key) -> [u8; 32] {
    Sha256::digest(key.as_str().as_bytes()).into()
}
