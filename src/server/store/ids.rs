//! Switch ids by series number, and the index from id to number ([`SwitchIds`]).
//!
//! Why not a `Vec<Arc<str>>` with a `HashMap<Arc<str>, usize>`: at a million switches that
//! took ~90 bytes a switch (16 for the `Arc` in the vector, ~32 for its allocation, and a
//! table of 2²¹ slots of 24 bytes + a control byte for the map), for ids of ~13 bytes. Here
//! the ids are one buffer (their bytes and where each ends) and the index a table of series
//! numbers that hashes them by the id they name (`hashbrown::HashTable`, what std's
//! `HashMap` is built on, for keys kept outside the table): ~13 + 4 + 5 × 2 bytes a switch.

use std::hash::{BuildHasher, BuildHasherDefault};

use hashbrown::HashTable;
use rustc_hash::FxHasher;

/// FxHash: every row of every poll looks its switch up here, and SipHash's protection against
/// hostile keys buys nothing for ids from the operator's own feeds.
type Hasher = BuildHasherDefault<FxHasher>;

/// Switch ids in series-number order (first seen first).
#[derive(Debug, Default)]
pub struct SwitchIds {
    /// Every id, one after the other.
    bytes: String,
    /// Where each id ends in `bytes`.
    ends: Vec<u32>,
    /// Series numbers, hashed by their ids.
    index: HashTable<u32>,
}

impl SwitchIds {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The id of series `n`.
    pub fn get(&self, n: usize) -> Option<&str> {
        id_at(&self.bytes, &self.ends, n)
    }

    /// The series number of `id`.
    pub fn find(&self, id: &str) -> Option<usize> {
        let hash = Hasher::default().hash_one(id);
        let (bytes, ends) = (&self.bytes, &self.ends);
        self.index
            .find(hash, |&n| id_at(bytes, ends, n as usize) == Some(id))
            .map(|&n| n as usize)
    }

    /// Adds `id` (not yet held) as the next series; its number, or `None` when the ids
    /// fill the 4 GiB a `u32` can address (no fabric has that many).
    pub fn push(&mut self, id: &str) -> Option<usize> {
        let n = u32::try_from(self.ends.len()).ok()?;
        let end = u32::try_from(self.bytes.len() + id.len()).ok()?;
        self.bytes.push_str(id);
        self.ends.push(end);
        let hash = Hasher::default().hash_one(id);
        let (bytes, ends) = (&self.bytes, &self.ends);
        self.index.insert_unique(hash, n, |&m| {
            Hasher::default().hash_one(id_at(bytes, ends, m as usize).unwrap_or(""))
        });
        Some(n as usize)
    }

    /// The ids in series-number order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).map(|n| self.get(n).unwrap_or(""))
    }

    /// Keeps the ids of the series `keep` says, in their order (renumbered from 0).
    ///
    /// The index is renumbered in place: an id's hash does not change, so its slot stays
    /// right. Why: inserting the kept ids into a new table, one random slot each, held the
    /// store's write lock 59 ms at a million switches with half of them gone (release
    /// build); renumbering in place scans the table once.
    pub fn retain(&mut self, mut keep: impl FnMut(usize) -> bool) {
        // Old number -> new one (`u32::MAX`: gone), and the ids kept, packed.
        let mut renumbered = Vec::with_capacity(self.len());
        let mut bytes = String::new();
        let mut ends = Vec::new();
        for n in 0..self.len() {
            let id = self.get(n).unwrap_or("");
            if keep(n) {
                renumbered.push(ends.len() as u32);
                bytes.push_str(id);
                ends.push(bytes.len() as u32);
            } else {
                renumbered.push(u32::MAX);
            }
        }
        self.index.retain(|n| match renumbered.get(*n as usize) {
            Some(&m) if m != u32::MAX => {
                *n = m;
                true
            }
            _ => false,
        });
        bytes.shrink_to_fit();
        ends.shrink_to_fit();
        self.bytes = bytes;
        self.ends = ends;
        // A table left mostly empty is cut to size (rehashing what is left).
        if self.index.capacity() > 4 * self.index.len().max(16) {
            let (bytes, ends) = (&self.bytes, &self.ends);
            self.index.shrink_to_fit(|&m| {
                Hasher::default().hash_one(id_at(bytes, ends, m as usize).unwrap_or(""))
            });
        }
    }

    /// Heap bytes: the ids, their ends and the index (a slot and a control byte each).
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.ends.capacity() * 4 + self.index.capacity() * 5
    }
}

/// The id of series `n` in `bytes` (split out of [`SwitchIds`] so the index's closures can
/// read ids while the index is borrowed).
fn id_at<'a>(bytes: &'a str, ends: &[u32], n: usize) -> Option<&'a str> {
    let end = *ends.get(n)? as usize;
    let start = n.checked_sub(1).map_or(0, |before| ends[before] as usize);
    bytes.get(start..end)
}

impl std::ops::Index<usize> for SwitchIds {
    type Output = str;

    fn index(&self, n: usize) -> &str {
        self.get(n).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_found_by_content_and_kept_in_order_through_retain() {
        let mut ids = SwitchIds::default();
        let names: Vec<String> = (0..5000).map(|i| format!("sw-{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            assert_eq!(ids.find(name), None);
            assert_eq!(ids.push(name), Some(i));
        }
        // An id that is a prefix of others is an id of its own.
        assert_eq!(ids.push("sw"), Some(5000));
        assert_eq!(ids.find("sw"), Some(5000));
        assert_eq!(ids.len(), 5001);
        assert_eq!(ids.find("sw-49"), Some(49));
        assert_eq!(ids.find("sw-4999"), Some(4999));
        assert_eq!(ids.find("sw-5000"), None);
        assert_eq!(&ids[1234], "sw-1234");
        assert_eq!(ids.get(5001), None);
        ids.retain(|n| n % 3 == 0 && n < 5000);
        assert_eq!(ids.find("sw"), None);
        assert_eq!(ids.len(), 1667);
        // Renumbered in place, and a table left mostly empty cut to size.
        assert!(
            ids.index.capacity() <= 4 * ids.len(),
            "{}",
            ids.index.capacity()
        );
        for (n, id) in ids.iter().enumerate() {
            assert_eq!(id, names[n * 3]);
            assert_eq!(ids.find(id), Some(n));
        }
        assert_eq!(ids.find("sw-1"), None);
    }
}
