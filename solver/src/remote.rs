//! Remote build cache: results that another build (often on another machine) exported, looked up
//! after the local cache records and fetched lazily.
//!
//! Cache keys are content keys ([`crate::key`]): the same step has the same key on every machine.
//! A remote cache (a registry artifact, an OCI layout directory, an image carrying its cache inline)
//! therefore only has to answer "what are the layers of the result of key K?" — a
//! [`RemoteRecord`]. The solver consults local records first, then each [`RemoteCache`] in order.
//!
//! Import is lazy. A remote hit is reported CACHED and nothing is downloaded: its layers are only
//! *named*. A layer blob is fetched ([`RemoteCache::fetch`]) when
//! - a later step that is not cached needs the hit's filesystem (the hit is re-materialized from its
//!   layer on top of its parent), or
//! - the final image is assembled and its layer chain must be in the local store.
//!
//! When a remote hit's layers are all local (after a fetch), a local cache record is written too, so
//! the next build on this machine hits locally.
//!
//! Export goes the other way: [`crate::SolveResult::cache`] lists an [`ExportRecord`] per step that
//! was executed or cached in this build; the caller (the CLI) writes them wherever `--cache-to` says.
//!
//! What it is not: no transport. The CLI implements [`RemoteCache`] over the registry client or an
//! OCI layout directory; the solver never speaks HTTP.

use crate::record::{CacheRecord, Explain, LayerInfo};
use rbuild_oci::Digest;
use rbuild_store::Store;
use std::sync::Arc;

/// What a remote cache knows about one cache key.
#[derive(Clone, Debug)]
pub struct RemoteRecord {
    /// The layer the step added (None: the step changed nothing).
    pub layer: Option<LayerInfo>,
    /// The full chain of layers of the step's filesystem, bottom first. `layer`, when present, is
    /// the last one.
    pub chain: Vec<LayerInfo>,
    /// Unix seconds: when the layer was made (kept so a cached image gets the same id).
    pub created: i64,
    /// What the step was made from (for explaining later misses); may be empty.
    pub explain: Explain,
}

impl RemoteRecord {
    /// The record as a local [`CacheRecord`] for `key` (its snapshot named as the solver names a
    /// step's snapshot).
    pub fn to_cache_record(&self, key: &Digest) -> CacheRecord {
        CacheRecord::new(
            step_snapshot_name(key),
            self.layer.clone(),
            self.chain.clone(),
            self.created,
            self.explain.clone(),
        )
    }
}

/// The snapshot name of a build step with cache key `key`.
pub fn step_snapshot_name(key: &Digest) -> String {
    crate::naming::step_name(key)
}

/// A source of cache records that lives outside the local store.
pub trait RemoteCache: Send + Sync {
    /// A short description for messages (`registry 127.0.0.1:5000/cache:main`).
    fn describe(&self) -> String;
    /// The record for `key`, if this cache has one. Must not download layers.
    fn lookup(&self, key: &Digest) -> Option<RemoteRecord>;
    /// Put the blob of `layer` into the local store (verified against its digest and size).
    /// `Ok(false)` when this cache does not know the blob; `Err` when it knows it but fetching
    /// failed. Called from blocking threads, never from an async task.
    fn fetch(&self, store: &Store, layer: &LayerInfo) -> Result<bool, String>;
    /// For a layer this cache names in its uncompressed form (`blob` = its diff_id, as the machine
    /// that built it stores it) but holds compressed: the compressed layer as the cache holds it.
    /// Lets an export name the layer without downloading it.
    fn wire_layer(&self, _blob: &Digest) -> Option<LayerInfo> {
        None
    }
}

/// The remote caches of a build, consulted in order.
#[derive(Clone, Default)]
pub struct RemoteCaches(pub Vec<Arc<dyn RemoteCache>>);

impl std::fmt::Debug for RemoteCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|c| c.describe()))
            .finish()
    }
}

impl RemoteCaches {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first remote record for `key`.
    pub fn lookup(&self, key: &Digest) -> Option<RemoteRecord> {
        self.0.iter().find_map(|c| c.lookup(key))
    }

    /// The compressed form a cache holds of a layer it names uncompressed
    /// ([`RemoteCache::wire_layer`]).
    pub fn wire_layer(&self, blob: &Digest) -> Option<LayerInfo> {
        self.0.iter().find_map(|c| c.wire_layer(blob))
    }

    /// Make every blob of `layers` present in `store`, fetching the missing ones from the first
    /// cache that knows them. Blocking.
    pub fn ensure_blobs<'a>(
        &self,
        store: &Store,
        layers: impl IntoIterator<Item = &'a LayerInfo>,
    ) -> Result<(), String> {
        for l in layers {
            if store.has_blob(&l.blob) {
                continue;
            }
            let mut found = false;
            for c in &self.0 {
                match c.fetch(store, l) {
                    Ok(true) => {
                        found = true;
                        break;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        return Err(format!(
                            "fetching layer {} from the cache {}: {e}",
                            l.blob,
                            c.describe()
                        ))
                    }
                }
            }
            if !found {
                return Err(format!(
                    "layer {} is neither in the local store nor in any --cache-from source",
                    l.blob
                ));
            }
        }
        Ok(())
    }
}

/// One step's result, for cache export.
#[derive(Clone, Debug)]
pub struct ExportRecord {
    pub key: Digest,
    pub record: CacheRecord,
    /// Whether the step is one of the final image's own steps (`mode=min` exports only these).
    pub in_image: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Fake {
        known: Vec<Digest>,
        fetched: Mutex<Vec<Digest>>,
        fail: bool,
    }

    impl RemoteCache for Fake {
        fn describe(&self) -> String {
            "fake".into()
        }
        fn lookup(&self, _key: &Digest) -> Option<RemoteRecord> {
            None
        }
        fn fetch(&self, store: &Store, layer: &LayerInfo) -> Result<bool, String> {
            if !self.known.contains(&layer.blob) {
                return Ok(false);
            }
            if self.fail {
                return Err("boom".into());
            }
            self.fetched.lock().unwrap().push(layer.blob.clone());
            store.put_blob(b"layer").map_err(|e| e.to_string())?;
            Ok(true)
        }
    }

    fn layer(blob: &Digest) -> LayerInfo {
        LayerInfo {
            diff_id: blob.clone(),
            blob: blob.clone(),
            media_type: rbuild_oci::MEDIA_TYPE_OCI_LAYER.into(),
            size: 5,
        }
    }

    #[test]
    fn ensure_fetches_only_missing_blobs_from_the_cache_that_knows_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let have = store.put_blob(b"present").unwrap();
        let want = Digest::sha256_of(b"layer");
        let a = Arc::new(Fake {
            known: vec![],
            fetched: Mutex::default(),
            fail: false,
        });
        let b = Arc::new(Fake {
            known: vec![want.clone()],
            fetched: Mutex::default(),
            fail: false,
        });
        let caches = RemoteCaches(vec![a.clone(), b.clone()]);
        caches
            .ensure_blobs(&store, &[layer(&have), layer(&want)])
            .unwrap();
        assert!(store.has_blob(&want));
        assert!(a.fetched.lock().unwrap().is_empty());
        assert_eq!(*b.fetched.lock().unwrap(), vec![want]);
    }

    #[test]
    fn ensure_names_the_missing_blob_and_the_failing_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let want = Digest::sha256_of(b"x");
        let none = RemoteCaches::default();
        let e = none.ensure_blobs(&store, &[layer(&want)]).unwrap_err();
        assert!(e.contains(&want.to_string()), "{e}");
        let failing = RemoteCaches(vec![Arc::new(Fake {
            known: vec![want.clone()],
            fetched: Mutex::default(),
            fail: true,
        })]);
        let e = failing.ensure_blobs(&store, &[layer(&want)]).unwrap_err();
        assert!(e.contains("fake") && e.contains("boom"), "{e}");
    }
}
