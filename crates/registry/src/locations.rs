//! "Known location" hints: which repositories of which registry are known to hold a blob.
//!
//! Pulls and pushes record where they saw each blob; a later push to another repository of the same
//! registry asks the registry to mount the blob from there instead of uploading it. A hint may be
//! stale: the registry then answers 202 and the blob is uploaded normally.

use crate::Reference;
use rbuild_oci::Digest;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

/// Thread-safe map digest → set of (registry, repository). Bounded per digest.
#[derive(Default, Debug)]
pub struct KnownLocations {
    map: Mutex<HashMap<Digest, BTreeSet<(String, String)>>>,
}

const MAX_PER_DIGEST: usize = 8;

impl KnownLocations {
    /// Remember that `repo`'s registry holds `digest` in `repo`'s repository.
    pub fn add(&self, digest: &Digest, repo: &Reference) {
        let mut m = self.map.lock().expect("locations lock");
        let set = m.entry(digest.clone()).or_default();
        if set.len() < MAX_PER_DIGEST {
            set.insert((repo.registry().to_string(), repo.repository().to_string()));
        }
    }

    /// A repository on `target`'s registry, other than `target`'s own, known to hold `digest`.
    pub fn mount_source(&self, digest: &Digest, target: &Reference) -> Option<String> {
        let m = self.map.lock().expect("locations lock");
        m.get(digest)?
            .iter()
            .find(|(reg, repo)| reg == target.registry() && repo != target.repository())
            .map(|(_, repo)| repo.clone())
    }

    /// Forget a location that turned out to be wrong.
    pub fn remove(&self, digest: &Digest, registry: &str, repository: &str) {
        let mut m = self.map.lock().expect("locations lock");
        if let Some(set) = m.get_mut(digest) {
            set.remove(&(registry.to_string(), repository.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_source_same_registry_other_repo() {
        let k = KnownLocations::default();
        let d = Digest::sha256_of(b"x");
        let a = Reference::parse("localhost:5000/a").unwrap();
        let b = Reference::parse("localhost:5000/b").unwrap();
        let other = Reference::parse("example.com/a").unwrap();
        k.add(&d, &a);
        assert_eq!(k.mount_source(&d, &b).as_deref(), Some("a"));
        assert_eq!(k.mount_source(&d, &a), None);
        assert_eq!(k.mount_source(&d, &other), None);
        k.remove(&d, "localhost:5000", "a");
        assert_eq!(k.mount_source(&d, &b), None);
    }
}
