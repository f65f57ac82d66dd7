//! Named lock files: `lock_named` survives a concurrent `remove_unheld_locks` (prune).

use rbuild_store::Store;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

#[test]
fn unheld_locks_are_removed_and_held_ones_kept() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let held = store.lock_named("step-held").unwrap();
    drop(store.lock_named("step-done").unwrap());
    drop(store.lock_named("other").unwrap());
    assert!(store.lock_path("step-done").exists());
    assert_eq!(store.remove_unheld_locks("step-").unwrap(), 1);
    assert!(!store.lock_path("step-done").exists());
    assert!(store.lock_path("step-held").exists(), "a held lock is kept");
    assert!(store.lock_path("other").exists(), "other prefixes are kept");
    drop(held);
    assert_eq!(store.remove_unheld_locks("step-").unwrap(), 1);
    assert!(!store.lock_path("step-held").exists());
}

#[test]
fn a_waiter_whose_lock_file_was_removed_locks_the_new_one() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let first = store.lock_named("step-x").unwrap();
    let s2 = store.clone();
    let waiter = std::thread::spawn(move || {
        let f = s2.lock_named("step-x").unwrap();
        let ino = f.metadata().unwrap().ino();
        (f, ino)
    });
    std::thread::sleep(Duration::from_millis(200));
    // What prune does to a lock it holds: unlink, then release.
    std::fs::remove_file(store.lock_path("step-x")).unwrap();
    drop(first);
    let (_f, ino) = waiter.join().unwrap();
    let on_disk = std::fs::metadata(store.lock_path("step-x")).unwrap().ino();
    assert_eq!(ino, on_disk, "the waiter holds the file the path names");
    // And it really holds it: a second locker cannot get it.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(store.lock_path("step-x"))
        .unwrap();
    assert!(f.try_lock().is_err());
}
