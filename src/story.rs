//! Story segments: copies of the events of an app's or an account's story (the positions
//! its view keeps for `explain`: `story`, `charges`; a working view holds those after the
//! runs settled out of it, `replay::story_positions` the whole list), eight a record, so that `explain`
//! reads a long-lived app's history in one range read of adjacent records instead of one
//! seek per event scattered over the whole log.
//!
//! A story list only grows (events are appended to it, never removed), so its segments are
//! written once, when complete, with the projection snapshot
//! (`projections/story/v<PROJECTION_VERSION>/<stream>/<list>/<first index>`), and never
//! replaced. A reader takes the segments whose positions are the list's, in order, and
//! reads the rest of the list from the log; a segment that is missing, unreadable or does
//! not match ends the segments read. Derived data, like the snapshot: the log stays the
//! authority, and the last event a reader takes from segments is compared with the log's.

use chat_ledger_events::StreamId;
pub use chat_ledger_projections::StoryList as List;
use chat_ledger_projections::{LedgerView, PROJECTION_VERSION};

use crate::replay::{self, SNAPSHOT_NAME};
use crate::store::{EventStore, StoreError, StoredEvent};

/// Events per segment. Eight ~465-byte events are ~3.7 KiB (~4.7 KiB at the 95th
/// percentile of event sizes). Why not more: a sled leaf holds up to 17 records, and a
/// leaf serialized larger than 128 KiB (a quarter of sled's 512 KiB log segment) is stored
/// as a blob file, which sled was seen reading back whole, into a fresh buffer, on every
/// call (the profile of `explain` at 10 M events with 16-event segments: 44 % of its
/// samples); 17 × 4.7 KiB stays well under.
pub const STORY_SEGMENT_EVENTS: usize = 8;

/// Segments written per store call while catching up (bounds the memory held).
const SEGMENTS_PER_WRITE: usize = 1024;

fn segment_name(stream: &StreamId, list: List, first: usize) -> String {
    format!(
        "{SNAPSHOT_NAME}/story/v{PROJECTION_VERSION}/{stream}/{}/{first:020}",
        list.as_str()
    )
}

/// A segment's bytes: the event count (u32), then per event its position (u64), its
/// length (u32) and its stored bytes; big-endian.
fn encode(events: &[StoredEvent]) -> Vec<u8> {
    let size: usize = events.iter().map(|e| 12 + e.bytes.len()).sum();
    let mut out = Vec::with_capacity(4 + size);
    out.extend_from_slice(&(events.len() as u32).to_be_bytes());
    for event in events {
        out.extend_from_slice(&event.seq.to_be_bytes());
        out.extend_from_slice(&(event.bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&event.bytes);
    }
    out
}

/// The events of a segment, or `None` if its bytes are not a segment.
fn decode(mut bytes: &[u8]) -> Option<Vec<StoredEvent>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = bytes.split_at_checked(n)?;
        *bytes = rest;
        Some(head)
    }
    let count = u32::from_be_bytes(take(&mut bytes, 4)?.try_into().ok()?) as usize;
    if count == 0 || count > bytes.len() / 12 {
        return None;
    }
    let mut events = Vec::with_capacity(count);
    for _ in 0..count {
        let seq = u64::from_be_bytes(take(&mut bytes, 8)?.try_into().ok()?);
        let len = u32::from_be_bytes(take(&mut bytes, 4)?.try_into().ok()?) as usize;
        events.push(StoredEvent {
            seq,
            bytes: take(&mut bytes, len)?.to_vec(),
        });
    }
    bytes.is_empty().then_some(events)
}

/// The events of `positions` (a story list of `stream`) that its segments hold, from the
/// first on: each segment taken only if its positions are the list's at its place, and the
/// last event taken compared with the log's (a store whose log was replaced reads none).
/// The caller reads the rest of the list, `positions[returned.len()..]`, from the log.
pub fn read_segments(
    store: &dyn EventStore,
    stream: &StreamId,
    list: List,
    positions: &[u64],
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut events: Vec<StoredEvent> = Vec::new();
    if positions.is_empty() {
        return Ok(events);
    }
    let (from, to) = (
        segment_name(stream, list, 0),
        segment_name(stream, list, positions.len() - 1),
    );
    for (name, bytes) in store.snapshots_in(&from, &to)? {
        // In name order, each segment must start where the previous one ended.
        let Some(segment) = (name == segment_name(stream, list, events.len()))
            .then(|| decode(&bytes))
            .flatten()
        else {
            break;
        };
        let place = &positions[events.len()..];
        let matches = segment.len() <= place.len() && segment.iter().zip(place).all(|(e, seq)| e.seq == *seq);
        if !matches {
            break;
        }
        events.extend(segment);
    }
    if let Some(last) = events.last() {
        let in_log = store.read_positions(&[last.seq])?;
        if in_log.first() != Some(last) {
            events.clear();
        }
    }
    Ok(events)
}

/// Writes the segments due for every story list in `view` (each complete run of `every`
/// entries) that are not yet stored, reading their events from the log. Resumes from the
/// last stored segment of each list. A list's settled entries are read from the settled
/// history (`replay::story_positions`), which a save writes first.
pub fn write_segments(store: &dyn EventStore, view: &LedgerView, every: usize) -> Result<(), StoreError> {
    assert!(every > 0, "segments of at least one event");
    let mut out = Vec::new();
    for app in view.apps.values() {
        let list = (List::Story, app.story_settled, app.story.as_slice());
        catch_up(store, view.seq, &StreamId::app(app.app), list, every, &mut out)?;
        if out.len() >= SEGMENTS_PER_WRITE {
            store.put_snapshots(&std::mem::take(&mut out))?;
        }
    }
    for account in view.accounts.values() {
        let stream = StreamId::account(&account.account);
        let story = (List::Story, account.story_settled, account.story.as_slice());
        catch_up(store, view.seq, &stream, story, every, &mut out)?;
        let charges = (List::Charges, account.charges_settled, account.charges.as_slice());
        catch_up(store, view.seq, &stream, charges, every, &mut out)?;
        if out.len() >= SEGMENTS_PER_WRITE {
            store.put_snapshots(&std::mem::take(&mut out))?;
        }
    }
    if !out.is_empty() {
        store.put_snapshots(&out)?;
    }
    Ok(())
}

/// Adds to `out` the segments of one list — (which, settled entries, entries held) —
/// due and not yet stored.
fn catch_up(
    store: &dyn EventStore,
    seq: u64,
    stream: &StreamId,
    (list, settled, held): (List, u64, &[u64]),
    every: usize,
    out: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), StoreError> {
    let due = (settled as usize + held.len()) / every * every;
    // The first segment not stored: most saves find the last one due there and stop.
    let mut from = due;
    while from > 0 && store.get_snapshot(&segment_name(stream, list, from - every))?.is_none() {
        from -= every;
    }
    if from == due {
        return Ok(());
    }
    let positions =
        replay::story_positions(store, stream, list, settled, held, seq).map_err(replay::replay_to_store)?;
    for first in (from..due).step_by(every) {
        let chunk = &positions[first..first + every];
        let events = store.read_positions(chunk)?;
        if events.len() != chunk.len() || events.iter().zip(chunk).any(|(e, seq)| e.seq != *seq) {
            return Err(StoreError::Corrupt(format!(
                "{stream}'s {} names positions {}..={} that the log does not hold",
                list.as_str(),
                chunk[0],
                chunk[every - 1]
            )));
        }
        out.push((segment_name(stream, list, first), encode(&events)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_decodes_to_what_was_encoded_and_anything_else_to_none() {
        let events = vec![
            StoredEvent {
                seq: 7,
                bytes: b"{\"a\":1}".to_vec(),
            },
            StoredEvent {
                seq: 9,
                bytes: Vec::new(),
            },
        ];
        let bytes = encode(&events);
        assert_eq!(decode(&bytes), Some(events));
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
        assert_eq!(decode(&encode(&[])), None);
    }
}
