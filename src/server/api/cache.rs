//! Answers built once per store generation and shared by every request until the store
//! changes or the answer expires (a fresh sample turns stale, a window slides). One builder
//! at a time per cache: concurrent requests for a stale answer wait for it instead of each
//! rebuilding it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use super::ApiError;
use crate::shared::timestamp::Micros;

/// Most keys one cache holds (window lengths come from clients).
const MAX_ENTRIES: usize = 64;

/// A built answer and how long it holds.
#[derive(Debug)]
pub struct Cached {
    pub generation: u64,
    /// Past this wall-clock time the answer must be rebuilt even without a new generation.
    pub valid_until: Micros,
    pub answer: Result<Arc<Vec<u8>>, ApiError>,
}

pub struct AnswerCache<K> {
    entries: Mutex<HashMap<K, Arc<Cached>>>,
    building: Mutex<()>,
}

impl<K> Default for AnswerCache<K> {
    fn default() -> AnswerCache<K> {
        AnswerCache {
            entries: Mutex::new(HashMap::new()),
            building: Mutex::new(()),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<K: Hash + Eq + Clone> AnswerCache<K> {
    fn current(&self, key: &K, generation: u64, now: Micros) -> Option<Arc<Cached>> {
        let entries = lock(&self.entries);
        let cached = entries.get(key)?;
        (cached.generation == generation && now <= cached.valid_until).then(|| Arc::clone(cached))
    }

    /// The cached answer for `key` if it is current, else the one `build` makes.
    pub fn get_or_build(
        &self,
        key: K,
        generation: u64,
        now: Micros,
        build: impl FnOnce() -> Cached,
    ) -> Arc<Cached> {
        if let Some(cached) = self.current(&key, generation, now) {
            return cached;
        }
        let _one_builder = lock(&self.building);
        if let Some(cached) = self.current(&key, generation, now) {
            return cached;
        }
        let built = Arc::new(build());
        let mut entries = lock(&self.entries);
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.insert(key, Arc::clone(&built));
        built
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &str, generation: u64, valid_until: Micros) -> Cached {
        Cached {
            generation,
            valid_until,
            answer: Ok(Arc::new(body.as_bytes().to_vec())),
        }
    }

    #[test]
    fn reuses_until_the_generation_or_time_moves_on() {
        let cache = AnswerCache::<u8>::default();
        let builds = std::cell::Cell::new(0);
        let get = |generation, now| {
            cache.get_or_build(1, generation, now, || {
                builds.set(builds.get() + 1);
                answer("x", generation, now + 10)
            });
        };
        get(1, 0);
        get(1, 5);
        get(1, 10);
        get(2, 11);
        get(2, 30);
        assert_eq!(builds.get(), 3);
    }
}
