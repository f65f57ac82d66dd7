//! Pass 2, lookup: a step's cache record (local, then imported caches) and, on a miss, the
//! explanation against the closest earlier record.

use crate::record::{explain_all, explain_miss, CacheRecord, Explain, FileListing};
use crate::state::{Node, Solver};
use rbuild_oci::Digest;

impl Solver {
    pub(crate) fn lookup(&self, key: &Digest) -> Option<CacheRecord> {
        self.lookup_local(key).or_else(|| {
            // Then the imported caches: a hit names layers, it downloads nothing yet.
            self.opts
                .remote_cache
                .lookup(key)
                .map(|r| r.to_cache_record(key))
        })
    }

    fn lookup_local(&self, key: &Digest) -> Option<CacheRecord> {
        let rec = crate::step::read_record(&self.store, key)?;
        // A record is only as good as its layers: every blob of the chain must still be here.
        if rec.chain.iter().all(|l| self.store.has_blob(&l.blob)) {
            Some(rec)
        } else {
            None
        }
    }

    /// The closest earlier record for the same step: among records of the same stage with the same
    /// instruction (else the same line), the one with the fewest differing inputs
    /// ([`crate::record::distance`]); among equals, the fewest differing files, then the newest.
    /// The records are read once per build.
    fn closest_record(&self, now: &Explain, files: &FileListing<'_>) -> Option<Explain> {
        let all = self.earlier.get_or_init(|| {
            self.store
                .cache_records()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(_, text)| serde_json::from_str::<CacheRecord>(&text).ok())
                .map(|r| (r.created, r.explain))
                .collect()
        });
        let mut cands: Vec<(u8, usize, i64, &Explain)> = Vec::new();
        let kind = |v: &serde_json::Value| v.as_object().and_then(|o| o.keys().next().cloned());
        for (created, e) in all {
            // A `COPY --link` is two vertices with one instruction: compare a copy with copies.
            if e.stage != now.stage || kind(&e.op) != kind(&now.op) {
                continue;
            }
            let rank = if e.instruction == now.instruction {
                2
            } else if e.line == now.line && now.line != 0 {
                1
            } else {
                continue;
            };
            cands.push((rank, crate::record::distance(now, e), *created, e));
        }
        cands.sort_by(|a, b| (b.0, a.1, b.2).cmp(&(a.0, b.1, a.2)));
        let first = cands.first()?;
        let top: Vec<_> = cands
            .iter()
            .take_while(|c| (c.0, c.1) == (first.0, first.1))
            .take(16)
            .collect();
        if top.len() == 1 || now.content.is_empty() {
            return Some(first.3.clone());
        }
        // Same distance: the record whose files differ least (reads the per-file listings).
        top.iter()
            .min_by_key(|c| {
                (
                    explain_all(now, Some(c.3), files).len(),
                    std::cmp::Reverse(c.2),
                )
            })
            .map(|c| c.3.clone())
    }

    /// Every difference between `node`'s inputs and the closest earlier record (`--explain`).
    pub(crate) fn explain_full(&self, node: &Node) -> Vec<String> {
        if let Some(why) = &node.rebuilt_by {
            return vec![why.clone()];
        }
        self.compare(node, explain_all)
    }

    pub(crate) fn explain(&self, node: &Node, ignore_cache: bool) -> String {
        if let Some(why) = &node.rebuilt_by {
            return why.clone();
        }
        if ignore_cache {
            return "cache disabled for this step (--no-cache)".to_string();
        }
        self.compare(node, explain_miss)
    }

    /// `how` applied to `node`'s inputs, the closest earlier record and the per-file listings.
    fn compare<T>(
        &self,
        node: &Node,
        how: impl FnOnce(&Explain, Option<&Explain>, &FileListing<'_>) -> T,
    ) -> T {
        let store = self.store.clone();
        let files = move |d: &Digest| -> Option<Vec<(String, String)>> {
            let bytes = store.read_blob(d, 256 << 20).ok()?;
            serde_json::from_slice(&bytes).ok()
        };
        let earlier = self.closest_record(&node.explain, &files);
        how(&node.explain, earlier.as_ref(), &files)
    }
}
