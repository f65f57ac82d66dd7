//! What a no-op rebuild writes: re-storing a blob the store has, or re-tagging a name with the same
//! image, leaves the files as they are (no temp file, no rename, no fsync).

use rbuild_oci::{Digest, MEDIA_TYPE_OCI_MANIFEST};
use rbuild_store::{ImageRecord, Store};
use std::os::unix::fs::MetadataExt;

#[test]
fn same_blob_and_same_tag_rewrite_nothing() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path()).unwrap();
    let d = s.put_blob(b"config bytes").unwrap();
    let blob = t.path().join("blobs/sha256").join(d.hex());
    let ino = std::fs::metadata(&blob).unwrap().ino();
    assert_eq!(s.put_blob(b"config bytes").unwrap(), d);
    assert_eq!(std::fs::metadata(&blob).unwrap().ino(), ino, "blob kept");

    let rec = |m: &Digest| ImageRecord {
        manifest: m.clone(),
        config: d.clone(),
        media_type: MEDIA_TYPE_OCI_MANIFEST.into(),
        size: 12,
        created: None,
    };
    s.put_image("app:1", &rec(&d)).unwrap();
    let refs = t.path().join("refs/images");
    let ref_file = || {
        std::fs::read_dir(&refs)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
    };
    let first = std::fs::metadata(ref_file()).unwrap().ino();
    s.put_image("app:1", &rec(&d)).unwrap();
    assert_eq!(
        std::fs::metadata(ref_file()).unwrap().ino(),
        first,
        "ref file kept"
    );
    // A different image under the name does replace it.
    let other = s.put_blob(b"another manifest").unwrap();
    s.put_image("app:1", &rec(&other)).unwrap();
    assert_ne!(
        std::fs::metadata(ref_file()).unwrap().ino(),
        first,
        "ref file replaced"
    );
    assert_eq!(s.get_image("app:1").unwrap().unwrap().manifest, other);
    assert_eq!(
        std::fs::read_dir(&refs).unwrap().count(),
        1,
        "no temp file left"
    );
}
