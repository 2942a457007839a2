//! The checks every backend runs on a batch before writing any of it, in one place so
//! that the backends cannot disagree on which error a bad batch gets.
//!
//! Order (the first failure wins):
//! 1. the store's head equals `expected_head`, else [`StoreError::HeadMoved`];
//! 2. the batch's own shape, without reading the store, else [`StoreError::BadBatch`]:
//!    at least one commit, no commit without events, `seq`s continuing the head without
//!    a gap, each `prev` the hash of the event before, each `hash` the hash of its
//!    `bytes`, stream versions from 1, no NUL byte in a stream id, no key twice;
//! 3. in event order, each event's version is its stream's current version + 1,
//!    counting the batch's earlier events, else [`StoreError::StaleStream`];
//! 4. in commit order, no key is already recorded, else [`StoreError::KeyRepeated`]
//!    (same digest) or [`StoreError::KeyConflict`]: [`check_keys`].

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use chat_ledger_events::{Hash, Key, StreamId};

use super::{AppendBatch, Commit, Head, KeyRecord, StoreError};

/// What a valid batch leaves behind: each touched stream's version after the batch.
pub(crate) type FinalVersions<'a> = HashMap<&'a StreamId, u64>;

/// Runs checks 1–3 of the module doc against `head` (the store's current head) and the
/// stream index, read through `version_of`.
pub(crate) fn validate<'a>(
    batch: &'a AppendBatch,
    head: Head,
    mut version_of: impl FnMut(&StreamId) -> Result<u64, StoreError>,
) -> Result<FinalVersions<'a>, StoreError> {
    if head != batch.expected_head {
        return Err(StoreError::HeadMoved {
            expected: batch.expected_head,
            found: head,
        });
    }
    check_shape(batch, head)?;

    let mut versions: FinalVersions<'a> = HashMap::new();
    for event in batch.commits.iter().flat_map(|c| &c.events) {
        let stream = &event.envelope.stream;
        let current = match versions.get(stream) {
            Some(&v) => v,
            None => version_of(stream)?,
        };
        if current.checked_add(1) != Some(event.envelope.version) {
            return Err(StoreError::StaleStream {
                stream: stream.clone(),
                expected: event.envelope.version - 1,
                found: current,
            });
        }
        versions.insert(stream, event.envelope.version);
    }
    Ok(versions)
}

/// Check 4 of the module doc, the keys read through `key_of`.
pub(crate) fn check_keys(
    batch: &AppendBatch,
    mut key_of: impl FnMut(&Key) -> Result<Option<KeyRecord>, StoreError>,
) -> Result<(), StoreError> {
    for commit in &batch.commits {
        if let Some(record) = key_of(&commit.key)? {
            return Err(key_refused(commit, record));
        }
    }
    Ok(())
}

/// The error for `commit`, whose key is already recorded as `record`.
fn key_refused(commit: &Commit, record: KeyRecord) -> StoreError {
    if record.digest == commit.digest {
        StoreError::KeyRepeated {
            key: commit.key.clone(),
            record,
        }
    } else {
        StoreError::KeyConflict {
            key: commit.key.clone(),
            first_seq: record.first_seq,
        }
    }
}

fn check_shape(batch: &AppendBatch, head: Head) -> Result<(), StoreError> {
    if batch.commits.is_empty() {
        return Err(StoreError::BadBatch("the batch has no commits".into()));
    }
    let mut next_seq = head.seq + 1;
    let mut prev = head.hash;
    for commit in &batch.commits {
        if commit.events.is_empty() {
            return Err(StoreError::BadBatch(format!(
                "the commit for key {} has no events",
                commit.key
            )));
        }
        for event in &commit.events {
            let env = &event.envelope;
            if env.seq != next_seq {
                return Err(StoreError::BadBatch(format!(
                    "event of key {} is at seq {}, the next position is {next_seq}",
                    commit.key, env.seq
                )));
            }
            if env.prev != prev {
                return Err(StoreError::BadBatch(format!(
                    "event {} has prev {}, the hash of event {} is {prev}",
                    env.seq,
                    env.prev,
                    env.seq - 1
                )));
            }
            if env.key != commit.key {
                return Err(StoreError::BadBatch(format!(
                    "event {} carries key {}, its commit's key is {}",
                    env.seq, env.key, commit.key
                )));
            }
            if event.hash != Hash::of(&event.bytes) {
                return Err(StoreError::BadBatch(format!(
                    "event {} carries a hash that is not its bytes' hash",
                    env.seq
                )));
            }
            if env.version == 0 {
                return Err(StoreError::BadBatch(format!(
                    "event {} has stream version 0; versions start at 1",
                    env.seq
                )));
            }
            if env.stream.as_str().as_bytes().contains(&0) {
                return Err(StoreError::BadBatch(format!(
                    "event {} names a stream containing a NUL byte",
                    env.seq
                )));
            }
            next_seq += 1;
            prev = event.hash;
        }
    }
    if batch.commits.len() > 1 {
        let mut keys = HashSet::with_capacity(batch.commits.len());
        if let Some(dup) = batch.commits.iter().find(|c| !keys.insert(&c.key)) {
            return Err(StoreError::BadBatch(format!(
                "key {} appears twice in the batch",
                dup.key
            )));
        }
    }
    Ok(())
}

/// What the idempotency index records for a commit that passed [`validate`].
pub(crate) fn key_record(commit: &Commit) -> KeyRecord {
    KeyRecord {
        digest: commit.digest,
        first_seq: commit.events.first().map_or(0, |e| e.envelope.seq),
        last_seq: commit.events.last().map_or(0, |e| e.envelope.seq),
    }
}
