//! Time selection, cold and warm checksums and a copy over a directory:
//! `cargo run --release -p rbuild-fileop --example bench_context -- DIR [DEST]`.

use rbuild_fileop::*;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: bench_context DIR [DEST]")?;
    let root = Root::open(dir.as_ref())?;
    let t = Instant::now();
    let sel = select(&root, &[".".to_string()], &SelectOptions::default())?;
    println!("select: {} entries in {:?}", sel.len(), t.elapsed());
    let cache = MemoryChecksumCache::new();
    let t = Instant::now();
    let (d, st) = checksum_with_stats(&root, &sel, &cache)?;
    println!("checksum cold: {d} {st:?} in {:?}", t.elapsed());
    let t = Instant::now();
    let sel = select(&root, &[".".to_string()], &SelectOptions::default())?;
    let (d2, st) = checksum_with_stats(&root, &sel, &cache)?;
    assert_eq!(d, d2);
    println!("select + checksum warm: {st:?} in {:?}", t.elapsed());
    if let Some(dest) = args.next() {
        std::fs::create_dir_all(&dest)?;
        let dest = Root::open(dest.as_ref())?;
        let t = Instant::now();
        let st = copy_selection(&dest, &root, &sel, "/copy/", &CopyOptions::default())?;
        println!("copy: {st:?} in {:?}", t.elapsed());
    }
    Ok(())
}
