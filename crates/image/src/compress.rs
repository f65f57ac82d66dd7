//! Layer compression on first need, remembered in the store so a layer is compressed once.
//!
//! Big layers are compressed in parallel: the uncompressed stream is cut into fixed 4 MiB chunks,
//! each compressed on its own (rayon, bounded by the CPU count) into a gzip member or a zstd frame,
//! and the results are concatenated in order — a valid gzip stream (RFC 1952 allows several
//! members) or zstd stream. The chunk size does not depend on the machine, so the same layer gives
//! the same compressed digest everywhere.

use crate::error::{ImageError, Result};
use crate::progress::{no_export_progress, Counting, ExportProgress, ExportProgressFn};
use rayon::prelude::*;
use rbuild_oci::expansion::{Counted, ExpansionGuard, ExpansionLimits};
use rbuild_oci::{Compression, Descriptor, Digest, Sha256Writer};
use rbuild_store::Store;
use std::io::{self, BufReader, Read, Write};

/// Size of the independently compressed pieces.
const CHUNK: usize = 4 << 20;
/// Default gzip level (as Docker and BuildKit).
const GZIP_LEVEL: u32 = 6;
/// Default zstd level.
const ZSTD_LEVEL: i32 = 3;

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hash: Sha256Writer<io::Sink>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// A writer that remembers whether writing failed (to tell write errors from read errors).
pub(crate) struct WriteTracker<'a, W> {
    pub inner: &'a mut W,
    pub failed: bool,
}

impl<W: Write> Write for WriteTracker<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).inspect_err(|_| self.failed = true)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|_| self.failed = true)
    }
}

/// A reader of the uncompressed content of a blob compressed with `c`, through the expansion-ratio
/// guard every layer decompression shares ([`rbuild_oci::expansion`]): a bomb is an error.
pub(crate) fn decompressor<'a, R: Read + 'a>(
    r: R,
    c: Compression,
) -> io::Result<Box<dyn Read + 'a>> {
    let limits = ExpansionLimits::from_env_or_default();
    let (r, count) = Counted::new(r);
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(ExpansionGuard::new(
            flate2::read::MultiGzDecoder::new(BufReader::new(r)),
            count,
            limits,
        )),
        Compression::Zstd => Box::new(ExpansionGuard::new(
            zstd::stream::read::Decoder::new(r)?,
            count,
            limits,
        )),
    })
}

fn compress_chunk(data: &[u8], want: Compression, level: Option<u32>) -> io::Result<Vec<u8>> {
    match want {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let lvl = flate2::Compression::new(level.unwrap_or(GZIP_LEVEL).min(9));
            let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 3), lvl);
            enc.write_all(data)?;
            enc.finish()
        }
        Compression::Zstd => {
            let lvl = level.map_or(ZSTD_LEVEL, |l| l.clamp(1, 22) as i32);
            zstd::stream::encode_all(data, lvl)
        }
    }
}

/// Fill `buf` from `r` up to its length; returns how much was read (short only at EOF).
fn read_full(r: &mut dyn Read, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    buf.clear();
    r.take(max as u64).read_to_end(buf)
}

/// Compress everything from `r` into `out` with `want`, in parallel fixed-size chunks.
pub fn compress_stream(
    r: &mut dyn Read,
    out: &mut dyn Write,
    want: Compression,
    level: Option<u32>,
) -> io::Result<()> {
    if want == Compression::None {
        io::copy(r, out)?;
        return Ok(());
    }
    let batch = rayon::current_num_threads().max(1) * 2;
    let mut first = true;
    loop {
        let mut chunks = Vec::with_capacity(batch);
        let mut eof = false;
        while chunks.len() < batch {
            let mut c = Vec::with_capacity(CHUNK);
            let n = read_full(r, &mut c, CHUNK)?;
            if n == 0 && !(first && chunks.is_empty()) {
                eof = true;
                break;
            }
            first = false;
            chunks.push(c);
            if n < CHUNK {
                eof = true;
                break;
            }
        }
        let compressed: Vec<io::Result<Vec<u8>>> = chunks
            .par_iter()
            .map(|c| compress_chunk(c, want, level))
            .collect();
        for c in compressed {
            out.write_all(&c?)?;
        }
        if eof {
            return Ok(());
        }
    }
}

/// Check a compression level for `c`: gzip 0–9, zstd 1–22 (none takes no level).
pub fn check_level(c: Compression, level: u32) -> std::result::Result<(), String> {
    let (name, lo, hi) = match c {
        Compression::Gzip => ("gzip", 0, 9),
        Compression::Zstd => ("zstd", 1, 22),
        Compression::None => return Err("an uncompressed layer takes no compression level".into()),
    };
    if (lo..=hi).contains(&level) {
        Ok(())
    } else {
        Err(format!(
            "{name} compression level {level} is out of range ({lo}-{hi})"
        ))
    }
}

/// `level` unless it is the default of `c` (so that an explicit default shares the memo).
fn non_default_level(c: Compression, level: Option<u32>) -> Option<u32> {
    match (c, level) {
        (Compression::Gzip, Some(l)) if l == GZIP_LEVEL => None,
        (Compression::Zstd, Some(l)) if l as i32 == ZSTD_LEVEL => None,
        (Compression::None, _) => None,
        (_, l) => l,
    }
}

/// The layer `layer` (any compression) with uncompressed digest `diff_id`, as a blob compressed
/// with `want`: the layer itself if it already is, a remembered variant if one exists, else
/// compressed now (checking the diff_id on the way) and remembered.
///
/// `level` (gzip 0–9, zstd 1–22; `None` = gzip 6 / zstd 3) applies to layers that get compressed
/// here. Only the default level is remembered in the store's `(diff_id, compression)` memo: a
/// non-default level compresses again on each call (the result is deterministic, so the blob is
/// the same one each time) and never returns or replaces the remembered default-level blob. A
/// layer already stored in `want` (a pulled gzip layer) is used as it is, whatever the level.
pub fn ensure_compressed(
    store: &Store,
    layer: &Descriptor,
    diff_id: &Digest,
    want: Compression,
    level: Option<u32>,
) -> Result<Descriptor> {
    ensure_compressed_reporting(store, layer, diff_id, want, level, no_export_progress())
}

/// [`ensure_compressed`], reporting the bytes of `layer` read while (de)compressing it as
/// `exporting layer` (nothing when nothing needs doing).
pub fn ensure_compressed_reporting(
    store: &Store,
    layer: &Descriptor,
    diff_id: &Digest,
    want: Compression,
    level: Option<u32>,
    report: ExportProgressFn<'_>,
) -> Result<Descriptor> {
    let have = Compression::from_layer_media_type(&layer.media_type).ok_or_else(|| {
        ImageError::UnknownLayerMediaType {
            digest: layer.digest.clone(),
            media_type: layer.media_type.clone(),
        }
    })?;
    if let (Some(l), false) = (level, want == Compression::None) {
        check_level(want, l).map_err(ImageError::BadCompressionLevel)?;
    }
    let level = non_default_level(want, level);
    if have == want {
        return Ok(layer.clone());
    }
    let media_type = want.oci_layer_media_type();
    if want == Compression::None {
        if let Some(size) = store.blob_size(diff_id)? {
            return Ok(Descriptor::new(media_type, diff_id.clone(), size));
        }
    }
    if level.is_none() {
        if let Some((d, size)) = store.get_layer_variant(diff_id, want)? {
            return Ok(Descriptor::new(media_type, d, size));
        }
    }
    let src = Counting::new(
        store.open_blob(&layer.digest)?,
        "exporting layer",
        &layer.digest,
        layer.size,
        report,
    );
    let mut reader = HashingReader {
        inner: decompressor(src, have).map_err(|source| ImageError::Read {
            src: store.blob_path(&layer.digest),
            what: format!("layer {}", layer.digest),
            source,
        })?,
        hash: Sha256Writer::new(io::sink()),
    };
    let mut w = store.ingest()?;
    let mut tracked = WriteTracker {
        inner: &mut w,
        failed: false,
    };
    if let Err(e) = compress_stream(&mut reader, &mut tracked, want, level) {
        // A write error is the store's (a full disk names the store root); a read error the layer's.
        if tracked.failed {
            return Err(w.error("compress layer", e).into());
        }
        return Err(ImageError::Read {
            src: store.blob_path(&layer.digest),
            what: format!("layer {}", layer.digest),
            source: e,
        });
    }
    let (actual, _, _) = reader.hash.finish();
    if &actual != diff_id {
        return Err(ImageError::DiffIdMismatch {
            layer: layer.digest.clone(),
            expected: diff_id.clone(),
            actual,
        });
    }
    let (d, size) = w.commit(None)?;
    if level.is_none() {
        store.put_layer_variant(diff_id, want, &d, size)?;
    }
    report(ExportProgress {
        what: "exporting layer",
        digest: &layer.digest,
        current: layer.size,
        total: layer.size,
        done: true,
    });
    Ok(Descriptor::new(media_type, d, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(data: &[u8], c: Compression) -> Vec<u8> {
        let mut out = Vec::new();
        compress_stream(&mut &data[..], &mut out, c, None).unwrap();
        let mut back = Vec::new();
        decompressor(&out[..], c)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        out
    }

    #[test]
    fn chunked_streams_are_valid_and_deterministic() {
        let data: Vec<u8> = (0..(CHUNK * 5 + 123))
            .map(|i| (i * 7 % 253) as u8)
            .collect();
        for c in [Compression::Gzip, Compression::Zstd] {
            let a = roundtrip(&data, c);
            let b = roundtrip(&data, c);
            assert_eq!(a, b);
            // Exact multiple of the chunk size, and empty input.
            roundtrip(&data[..CHUNK * 2], c);
            let empty = roundtrip(&[], c);
            assert!(
                !empty.is_empty(),
                "an empty layer still needs a valid stream"
            );
        }
    }
}
