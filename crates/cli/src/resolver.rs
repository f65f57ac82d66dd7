//! Base-image resolution for the frontend: local store first.

use rbuild_ops::{ImageResolver, ResolveError, ResolvedImage};
use rbuild_store::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Resolves `FROM` references against the local store, memoizing each answer for the build.
pub struct StoreResolver {
    pub store: Arc<Store>,
    memo: Mutex<HashMap<String, ResolvedImage>>,
}

impl StoreResolver {
    pub fn new(store: Arc<Store>) -> Self {
        StoreResolver {
            store,
            memo: Mutex::new(HashMap::new()),
        }
    }
}

impl ImageResolver for StoreResolver {
    fn resolve(&self, reference: &str) -> Result<ResolvedImage, ResolveError> {
        if let Some(r) = self.memo.lock().unwrap().get(reference) {
            return Ok(r.clone());
        }
        let failed = |message: String| ResolveError::Failed {
            reference: reference.to_string(),
            message,
        };
        let found = self
            .store
            .find_image(reference)
            .map_err(|e| failed(e.to_string()))?;
        let Some((name, rec)) = found else {
            return Err(ResolveError::NotFound {
                reference: reference.to_string(),
                hint: Some(
                    "it is not in the local store; import it with `rbuild load` (see `rbuild images`)"
                        .to_string(),
                ),
            });
        };
        let config = rbuild_image::read_config(&self.store, &rec.config)
            .map_err(|e| failed(format!("reading its config: {e}")))?;
        let resolved = ResolvedImage {
            reference: name.unwrap_or_else(|| reference.to_string()),
            manifest: rec.manifest,
            config,
        };
        self.memo
            .lock()
            .unwrap()
            .insert(reference.to_string(), resolved.clone());
        Ok(resolved)
    }
}
