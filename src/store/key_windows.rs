//! The sled store's idempotency-key index, written a window at a time (layout 4; the
//! layout itself is documented in `sled_store.rs`).
//!
//! Why: a key record an input was the largest part of what a bulk append wrote (500,000
//! of the 829,544 sled entries of the Full append bench, 45 % of its appending thread,
//! docs/BENCHMARKS.md). The key records of the events past the indexed seq wait in memory
//! with the stream runs; each append writes only its commits' digests (32 bytes each, a
//! few entries an append), which is all an open after a crash cannot read back from the
//! events themselves. When the runs are written, the waiting key records are written too,
//! sorted, as *key chunks* of at most [`CHUNK_MAX_BYTES`] (a record is 50 bytes plus its
//! key: with 20-byte keys, 87 records an entry), with a binary fuse filter of the
//! window's keys (xorf's `BinaryFuse8`: about 9 bits a key and false positives under
//! 0.4 %, as its documentation states) so that a lookup seeks only into the windows that
//! may hold its key: a key never recorded (every new input) costs a probe per window and
//! no read.

use chat_ledger_events::Key;
use sha2::{Digest, Sha256};
use xorf::{BinaryFuse8, Filter};

use super::{KeyRecord, StoreError};

/// `K` window seq, first key bytes → a chunk of key records sorted by key.
pub(super) const KEY_CHUNK: u8 = b'K';
/// `F` window seq → the window's filter (empty: none could be built, search every chunk).
pub(super) const KEY_FILTER: u8 = b'F';
/// `j` seq → the digests (32 bytes each) of the commits from the one starting at seq, in
/// order, of one append; removed once their window is written.
pub(super) const KEY_DIGESTS: u8 = b'j';

/// A key chunk grows past this only with its first record; the same bound as event blocks
/// and for the same reason (sled's leaves stay under a quarter of a segment).
pub(super) const CHUNK_MAX_BYTES: usize = super::sled_store::BLOCK_MAX_BYTES;
/// Digests per `j` entry: 6 KiB.
pub const DIGESTS_PER_ENTRY: usize = CHUNK_MAX_BYTES / 32;

/// A written window of key records: the events up to `last_seq` (after the window before).
pub(super) struct KeyWindow {
    pub last_seq: u64,
    filter: Option<BinaryFuse8>,
}

impl KeyWindow {
    /// Whether the window may hold `key` (no false negatives).
    pub fn may_hold(&self, key_hash: u64) -> bool {
        self.filter.as_ref().is_none_or(|f| f.contains(&key_hash))
    }
}

/// The 64-bit hash the filters are built on: the first 8 bytes of the key's SHA-256, so
/// that a stored filter means the same to every build.
pub(super) fn key_hash(key: &Key) -> u64 {
    let digest = Sha256::digest(key.as_str().as_bytes());
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// `prefix` window (8 bytes, big-endian), into `buf`; returns the length (a chunk key's
/// prefix).
pub(super) fn window_key(buf: &mut Vec<u8>, prefix: u8, window: u64) -> usize {
    buf.clear();
    buf.push(prefix);
    buf.extend_from_slice(&window.to_be_bytes());
    buf.len()
}

/// A sled entry to insert: key, value.
pub(super) type Entry = (Vec<u8>, Vec<u8>);

/// The entries that write the window ending at `window`: its chunks, then its
/// filter. `records` must hold each key once; they are sorted here.
pub(super) fn window_entries(window: u64, records: &mut [(&Key, KeyRecord)]) -> (Vec<Entry>, KeyWindow) {
    records.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let mut entries = Vec::with_capacity(records.len() / 32 + 2);
    let mut chunk = Vec::with_capacity(CHUNK_MAX_BYTES);
    let mut chunk_key = Vec::new();
    for (key, record) in records.iter() {
        let key_bytes = key.as_str().as_bytes();
        if !chunk.is_empty() && chunk.len() + 2 + key_bytes.len() + 48 > CHUNK_MAX_BYTES {
            entries.push((std::mem::take(&mut chunk_key), std::mem::take(&mut chunk)));
            chunk.reserve(CHUNK_MAX_BYTES);
        }
        if chunk.is_empty() {
            window_key(&mut chunk_key, KEY_CHUNK, window);
            chunk_key.extend_from_slice(key_bytes);
        }
        let len = u16::try_from(key_bytes.len()).expect("keys are at most ID_MAX_BYTES");
        chunk.extend_from_slice(&len.to_be_bytes());
        chunk.extend_from_slice(key_bytes);
        chunk.extend_from_slice(&record.digest);
        chunk.extend_from_slice(&record.first_seq.to_be_bytes());
        chunk.extend_from_slice(&record.last_seq.to_be_bytes());
    }
    if !chunk.is_empty() {
        entries.push((chunk_key, chunk));
    }
    let hashes: Vec<u64> = records.iter().map(|(key, _)| key_hash(key)).collect();
    let filter = BinaryFuse8::try_from(&hashes).ok();
    let mut filter_key = Vec::with_capacity(9);
    window_key(&mut filter_key, KEY_FILTER, window);
    entries.push((filter_key, filter.as_ref().map_or_else(Vec::new, encode_filter)));
    (
        entries,
        KeyWindow {
            last_seq: window,
            filter,
        },
    )
}

/// The record of `key` in `chunk`, if there.
pub(super) fn find_in_chunk(chunk: &[u8], key: &Key) -> Result<Option<KeyRecord>, StoreError> {
    let want = key.as_str().as_bytes();
    let bad = || StoreError::Corrupt(format!("a key chunk searched for key {key} ends mid-record"));
    let mut rest = chunk;
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<2>().ok_or_else(bad)?;
        let len = u16::from_be_bytes(*len) as usize;
        if tail.len() < len + 48 {
            return Err(bad());
        }
        let (stored, tail) = tail.split_at(len);
        if stored == want {
            return Ok(Some(KeyRecord {
                digest: tail[..32].try_into().expect("32 bytes"),
                first_seq: u64::from_be_bytes(tail[32..40].try_into().expect("8 bytes")),
                last_seq: u64::from_be_bytes(tail[40..48].try_into().expect("8 bytes")),
            }));
        }
        if stored > want {
            return Ok(None); // sorted
        }
        rest = &tail[48..];
    }
    Ok(None)
}

/// A window as read back: `value` is its `F` entry.
pub(super) fn read_window(window: u64, value: &[u8]) -> Result<KeyWindow, StoreError> {
    let filter = if value.is_empty() {
        None
    } else {
        Some(decode_filter(value).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "the key filter of the window up to event {window} is malformed"
            ))
        })?)
    };
    Ok(KeyWindow {
        last_seq: window,
        filter,
    })
}

const FILTER_HEADER_LEN: usize = 8 + 4 + 4 + 4;

/// seed, segment length, its mask, segment count length (big-endian), then fingerprints.
fn encode_filter(filter: &BinaryFuse8) -> Vec<u8> {
    let d = &filter.descriptor;
    let mut out = Vec::with_capacity(FILTER_HEADER_LEN + filter.fingerprints.len());
    out.extend_from_slice(&d.seed.to_be_bytes());
    out.extend_from_slice(&d.segment_length.to_be_bytes());
    out.extend_from_slice(&d.segment_length_mask.to_be_bytes());
    out.extend_from_slice(&d.segment_count_length.to_be_bytes());
    out.extend_from_slice(&filter.fingerprints);
    out
}

fn decode_filter(value: &[u8]) -> Option<BinaryFuse8> {
    let (header, fingerprints) = value.split_at_checked(FILTER_HEADER_LEN)?;
    let u32_at = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let descriptor = xorf::Descriptor {
        seed: u64::from_be_bytes(header[..8].try_into().expect("8 bytes")),
        segment_length: u32_at(8),
        segment_length_mask: u32_at(12),
        segment_count_length: u32_at(16),
    };
    // A probe reads up to two segments past segment_count_length.
    let needed = descriptor.segment_count_length as usize + 2 * descriptor.segment_length as usize;
    let segment_length = descriptor.segment_length;
    if fingerprints.len() < needed
        || !segment_length.is_power_of_two()
        || descriptor.segment_length_mask != segment_length - 1
    {
        return None;
    }
    Some(BinaryFuse8 {
        descriptor,
        fingerprints: fingerprints.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> KeyRecord {
        KeyRecord {
            digest: [n as u8; 32],
            first_seq: n,
            last_seq: n + 1,
        }
    }

    #[test]
    fn a_window_finds_each_of_its_keys_and_refuses_others() {
        let keys: Vec<Key> = (0..5000).map(|n| Key::new(format!("input/{n:07}")).unwrap()).collect();
        let mut records: Vec<(&Key, KeyRecord)> = keys.iter().zip(0..).map(|(k, n)| (k, record(n))).collect();
        let (entries, written) = window_entries(77, &mut records);
        assert!(entries.len() > 10, "several chunks: {}", entries.len());
        let (filter_key, filter_value) = entries.last().unwrap();
        assert_eq!(filter_key[..], [&[KEY_FILTER][..], &77u64.to_be_bytes()].concat()[..]);
        let window = read_window(77, filter_value).expect("the filter reads back");
        let fingerprints = |w: &KeyWindow| w.filter.as_ref().map(|f| f.fingerprints.clone());
        assert!(window.filter.is_some());
        assert_eq!(fingerprints(&window), fingerprints(&written), "the filter as written");
        let chunks = &entries[..entries.len() - 1];
        let find = |key: &Key| -> Option<KeyRecord> {
            let mut probe = Vec::new();
            window_key(&mut probe, KEY_CHUNK, 77);
            probe.extend_from_slice(key.as_str().as_bytes());
            let chunk = chunks.iter().rev().find(|(k, _)| k[..] <= probe[..])?;
            find_in_chunk(&chunk.1, key).unwrap()
        };
        for (n, key) in keys.iter().enumerate() {
            assert!(window.may_hold(key_hash(key)), "no false negative");
            assert_eq!(find(key), Some(record(n as u64)), "{key}");
        }
        let others: Vec<Key> = (0..5000).map(|n| Key::new(format!("other/{n}")).unwrap()).collect();
        let passed = others.iter().filter(|k| window.may_hold(key_hash(k))).count();
        assert!(passed < 100, "false positives {passed} of 5000");
        assert!(others.iter().all(|k| find(k).is_none()));
    }

    #[test]
    fn a_truncated_filter_is_corrupt() {
        let key = Key::new("a").unwrap();
        let (entries, _) = window_entries(1, &mut [(&key, record(1))]);
        let value = &entries.last().unwrap().1;
        assert!(read_window(1, &value[..value.len() - 1]).is_err());
        assert!(read_window(1, &value[..5]).is_err());
    }
}
