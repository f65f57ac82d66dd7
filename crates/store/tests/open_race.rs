//! Several processes opening a brand-new store at once: one switches it to WAL and creates the
//! schema, the others must wait for it rather than fail with "database is locked" (seen in CI
//! when two `rbuild load`s started together).

use std::sync::{Arc, Barrier};

#[test]
fn concurrent_first_opens_all_succeed() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join(format!("store-{round}"));
        let n = 8;
        let barrier = Arc::new(Barrier::new(n));
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (root, barrier) = (root.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let store = rbuild_store::Store::open(&root)
                        .unwrap_or_else(|e| panic!("opener {i} of round {round}: {e}"));
                    store.put_blob(format!("blob {i}").as_bytes()).unwrap();
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}
