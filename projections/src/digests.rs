//! The set of a month's counted user digests: exact (every digest kept, never a sketch),
//! lean and fast to probe. Digests are keyed HMAC output, so they are spread evenly over
//! the 128 bits: a sorted array indexed by its leading bits finds one in a cache miss or
//! two, at 16 bytes a digest plus a small index, where a `BTreeSet<u128>` takes ~27 bytes
//! and a dozen misses. Recent inserts wait in a small hash set and are merged in bulk.
//! Any set of numbers works (an uneven one only makes the index less useful).
//! Serializes as one base64 string: the digests' bytes in ascending order, 16 each.

use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes of one digest in the serialized form.
const DIGEST_BYTES: usize = 16;

/// Hashes user digests, which are already uniform: folds the 128 bits and mixes once,
/// instead of SipHash over 16 bytes. Other values hash byte by byte (FNV-1a).
#[derive(Clone, Copy, Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn write_u128(&mut self, value: u128) {
        let folded = (value as u64) ^ ((value >> 64) as u64);
        self.0 = (self.0 ^ folded).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

/// A hash set of user digests.
pub type DigestHashSet = HashSet<u128, BuildHasherDefault<DigestHasher>>;

/// How many probes ahead a batch of probes prefetches (each step): enough for their
/// memory loads to be in flight together, few enough that the lines stay cached.
pub const PREFETCH_AHEAD: usize = 16;

/// Recent inserts merged into the sorted array once they pass this many, or an eighth
/// of the array, whichever is more: each digest is copied ~8 times as the set grows.
const MERGE_MIN: usize = 1024;

#[derive(Clone, Default)]
pub struct UserDigests {
    /// Ascending, no duplicates, allocated to its exact length.
    sorted: Vec<u128>,
    /// `index[b]` is the position in `sorted` of the first digest whose leading `bits`
    /// bits are `b` or more; `index[2^bits]` is `sorted.len()`. Empty when `bits` is 0.
    index: Vec<u32>,
    bits: u32,
    /// Inserted since the last merge; none of them is in `sorted`.
    recent: DigestHashSet,
}

impl UserDigests {
    pub fn new() -> UserDigests {
        UserDigests::default()
    }

    pub fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, digest: &u128) -> bool {
        self.in_sorted(*digest) || self.recent.contains(digest)
    }

    /// Adds `digest`; false if it was already there.
    pub fn insert(&mut self, digest: u128) -> bool {
        if self.in_sorted(digest) || !self.recent.insert(digest) {
            return false;
        }
        if self.recent.len() >= MERGE_MIN.max(self.sorted.len() / 8) {
            self.merge();
        }
        true
    }

    /// Adds every digest of `digests`, prefetching each some inserts ahead (see
    /// [`UserDigests::prefetch`]); the first that was already there is an error, and
    /// the ones before it stay added.
    pub fn insert_all(&mut self, digests: &[u128]) -> Result<(), u128> {
        for (i, digest) in digests.iter().enumerate() {
            for (ahead, step) in [
                (2 * PREFETCH_AHEAD, Prefetch::Index),
                (PREFETCH_AHEAD, Prefetch::Digests),
            ] {
                if let Some(later) = digests.get(i + ahead) {
                    self.prefetch(*later, step);
                }
            }
            if !self.insert(*digest) {
                return Err(*digest);
            }
        }
        Ok(())
    }

    /// The digests in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u128> + '_ {
        let mut recent: Vec<u128> = self.recent.iter().copied().collect();
        recent.sort_unstable();
        let (mut a, mut b) = (self.sorted.iter().copied().peekable(), recent.into_iter().peekable());
        std::iter::from_fn(move || match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if y < x => b.next(),
            (Some(_), _) => a.next(),
            (None, _) => b.next(),
        })
    }

    /// Asks the processor to start loading what `contains(digest)` will read, in two
    /// steps: `Index` (the bucket's bounds), then some probes later `Digests` (which reads
    /// those bounds). A caller probing many digests so overlaps their cache misses: at a
    /// million users neither the array nor its index stays in the caches, and a probe that
    /// waits for memory costs more than the rest of a login's work.
    pub fn prefetch(&self, digest: u128, step: Prefetch) {
        if self.bits == 0 {
            return;
        }
        let bucket = (digest >> (128 - self.bits)) as usize;
        match step {
            Prefetch::Index => prefetch(&self.index[bucket]),
            Prefetch::Digests => {
                let (start, end) = (self.index[bucket] as usize, self.index[bucket + 1] as usize);
                // Four digests a cache line: a bucket spans one line or a few.
                for at in (start..end).step_by(4) {
                    prefetch(&self.sorted[at]);
                }
                if start < end {
                    prefetch(&self.sorted[end - 1]);
                }
            }
        }
    }

    fn in_sorted(&self, digest: u128) -> bool {
        let range = if self.bits == 0 {
            &self.sorted[..]
        } else {
            let bucket = (digest >> (128 - self.bits)) as usize;
            &self.sorted[self.index[bucket] as usize..self.index[bucket + 1] as usize]
        };
        range.binary_search(&digest).is_ok()
    }

    fn merge(&mut self) {
        let merged: Vec<u128> = {
            let mut all = Vec::with_capacity(self.len());
            all.extend(self.iter());
            all
        };
        self.recent.clear();
        self.rebuild(merged);
    }

    /// Takes `sorted` (ascending, no duplicates) as the array and indexes it.
    fn rebuild(&mut self, sorted: Vec<u128>) {
        assert!(sorted.len() <= u32::MAX as usize, "at most 2^32 users a month");
        // About four to eight digests a bucket.
        self.bits = match sorted.len() {
            0..64 => 0,
            n => n.ilog2() - 2,
        };
        if self.bits > 0 {
            let buckets = 1usize << self.bits;
            let mut index = Vec::with_capacity(buckets + 1);
            let mut at = 0;
            for bucket in 0..buckets {
                while at < sorted.len() && ((sorted[at] >> (128 - self.bits)) as usize) < bucket {
                    at += 1;
                }
                index.push(at as u32);
            }
            index.push(sorted.len() as u32);
            self.index = index;
        } else {
            self.index = Vec::new();
        }
        self.sorted = sorted;
    }
}

/// The two steps of [`UserDigests::prefetch`].
#[derive(Clone, Copy, Debug)]
pub enum Prefetch {
    Index,
    Digests,
}

/// A hint to load `value`'s cache line: it never faults and changes nothing.
#[inline(always)]
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only hints the cache; the pointer comes from a reference.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

impl PartialEq for UserDigests {
    fn eq(&self, other: &UserDigests) -> bool {
        self.len() == other.len() && self.iter().all(|d| other.contains(&d))
    }
}

impl Eq for UserDigests {}

impl fmt::Debug for UserDigests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<u128> for UserDigests {
    fn from_iter<I: IntoIterator<Item = u128>>(digests: I) -> UserDigests {
        let mut sorted: Vec<u128> = digests.into_iter().collect();
        sorted.sort_unstable();
        sorted.dedup();
        sorted.shrink_to_fit();
        let mut set = UserDigests::default();
        set.rebuild(sorted);
        set
    }
}

/// Serialized as one string: every digest's 16 bytes (big-endian), in ascending order,
/// end to end, in base64 (standard alphabet, padded). A busy app's snapshot part holds
/// tens of thousands: as one base64 string they load about 20 times faster than as JSON
/// numbers (and hex decoding was 18 times slower than base64's, measured).
impl Serialize for UserDigests {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(self.len() * DIGEST_BYTES);
        for digest in self.iter() {
            bytes.extend_from_slice(&digest.to_be_bytes());
        }
        s.serialize_str(&BASE64.encode(bytes))
    }
}

impl UserDigests {
    /// How many digests a serialized `UserDigests` holds, from the text's length alone
    /// (no decoding): what a query that only counts users reads. `None` if the length is
    /// not that of padded base64 of whole digests.
    pub fn count_in_text(text: &str) -> Option<usize> {
        if !text.len().is_multiple_of(4) {
            return None;
        }
        let padding = text.bytes().rev().take_while(|b| *b == b'=').count();
        let bytes = (text.len() / 4 * 3).checked_sub(padding)?;
        (padding <= 2 && bytes.is_multiple_of(DIGEST_BYTES)).then_some(bytes / DIGEST_BYTES)
    }
}

impl<'de> Deserialize<'de> for UserDigests {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<UserDigests, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bytes = BASE64
            .decode(text.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("user digests: {e}")))?;
        if bytes.len() % DIGEST_BYTES != 0 {
            return Err(serde::de::Error::custom(format!(
                "user digests: {} bytes is not a whole number of {DIGEST_BYTES}-byte digests",
                bytes.len()
            )));
        }
        Ok(bytes
            .chunks_exact(DIGEST_BYTES)
            .map(|chunk| u128::from_be_bytes(chunk.try_into().expect("16 bytes")))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn spread(i: u64) -> u128 {
        let x = u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) ^ u128::from(i);
        x.rotate_left(37)
    }

    #[test]
    fn behaves_as_a_btreeset_and_serializes_in_order() {
        let mut ours = UserDigests::new();
        let mut theirs = BTreeSet::new();
        for i in 0..40_000u64 {
            // Every third value repeats an earlier one; a few are small, uneven numbers.
            let digest = if i % 3 == 0 {
                spread(i / 2)
            } else if i % 97 == 0 {
                u128::from(i)
            } else {
                spread(i)
            };
            assert_eq!(ours.insert(digest), theirs.insert(digest), "insert {i}");
            assert_eq!(ours.len(), theirs.len());
            if i % 1000 == 0 {
                assert!(ours.iter().eq(theirs.iter().copied()));
            }
        }
        for i in 0..50_000u64 {
            assert_eq!(ours.contains(&spread(i)), theirs.contains(&spread(i)), "contains {i}");
            assert_eq!(ours.contains(&u128::from(i)), theirs.contains(&u128::from(i)));
        }
        let text = serde_json::to_string(&ours).unwrap();
        let ascending: Vec<u8> = theirs.iter().flat_map(|d| d.to_be_bytes()).collect();
        assert_eq!(text, format!("\"{}\"", BASE64.encode(&ascending)));
        let back: UserDigests = serde_json::from_str(&text).unwrap();
        assert_eq!(back, ours);
        assert_eq!(format!("{back:?}"), format!("{theirs:?}"));
        assert_eq!(UserDigests::new(), serde_json::from_str("\"\"").unwrap());
        let small: UserDigests = [3, 1, u128::MAX, 3].into_iter().collect();
        let text = serde_json::to_string(&small).unwrap();
        let bytes: Vec<u8> = [1u128, 3, u128::MAX].iter().flat_map(|d| d.to_be_bytes()).collect();
        assert_eq!(text, format!("\"{}\"", BASE64.encode(bytes)));
        assert_eq!(serde_json::from_str::<UserDigests>(&text).unwrap(), small);
        let torn = serde_json::from_str::<UserDigests>(&format!("\"{}\"", BASE64.encode([7u8; 15]))).unwrap_err();
        assert!(torn.to_string().contains("not a whole number"), "{torn}");
        assert!(serde_json::from_str::<UserDigests>("\"not base64!\"").is_err());
        for n in [0u64, 1, 2, 3, 7, 100] {
            let digests: UserDigests = (0..n).map(spread).collect();
            let text = serde_json::to_value(&digests).unwrap();
            assert_eq!(
                UserDigests::count_in_text(text.as_str().unwrap()),
                Some(n as usize),
                "{n} digests"
            );
        }
        assert_eq!(UserDigests::count_in_text("AAAA"), None, "3 bytes are no digest");
    }

    #[test]
    fn insert_all_adds_up_to_the_first_repeat() {
        let all: Vec<u128> = (0..20_000).map(spread).collect();
        let mut one_by_one = UserDigests::new();
        for d in &all[..15_000] {
            one_by_one.insert(*d);
        }
        let mut batched = UserDigests::new();
        batched.insert_all(&all[..10_000]).unwrap();
        let mut repeated = all[10_000..15_000].to_vec();
        repeated.push(all[42]);
        repeated.extend(&all[15_000..]);
        assert_eq!(batched.insert_all(&repeated), Err(all[42]));
        assert_eq!(batched, one_by_one, "the digests before the repeat are in, none after");
        // Every bucket's index entry and digests, first and last: an out-of-bounds read panics.
        for d in all.iter().copied().chain([0, u128::MAX]) {
            batched.prefetch(d, Prefetch::Index);
            batched.prefetch(d, Prefetch::Digests);
        }
    }

    #[test]
    fn equality_does_not_depend_on_merges() {
        let all: Vec<u128> = (0..5000).map(spread).collect();
        let mut one_by_one = UserDigests::new();
        for d in &all {
            one_by_one.insert(*d);
        }
        let bulk: UserDigests = all.iter().rev().copied().collect();
        assert_eq!(one_by_one, bulk);
        let mut fewer = bulk.clone();
        fewer = fewer.iter().skip(1).collect();
        assert_ne!(one_by_one, fewer);
    }
}
