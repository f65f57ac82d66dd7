//! Streaming compression of layer tars, and decompression by magic bytes.

use rbuild_oci::expansion::{Counted, ExpansionGuard, ExpansionLimits};
use rbuild_oci::{Compression, Digest, Sha256Writer};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// What [`compress`] produced: the blob's digest and size, and the uncompressed stream's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressStats {
    /// Digest of the compressed blob (the manifest's layer digest).
    pub digest: Digest,
    /// Size of the compressed blob.
    pub size: u64,
    /// Digest of the uncompressed stream (the config's diff_id).
    pub diff_id: Digest,
    /// Size of the uncompressed stream.
    pub uncompressed_size: u64,
}

/// Why compressing or decompressing failed.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("reading the uncompressed layer: {0}")]
    Read(#[source] io::Error),
    #[error("writing the {compression:?} layer: {source}")]
    Write {
        compression: Compression,
        #[source]
        source: io::Error,
    },
    #[error(
        "layer is {0}-compressed, which rbuild does not read (gzip, zstd or uncompressed only)"
    )]
    Unsupported(&'static str),
    #[error("reading the layer's first bytes: {0}")]
    Sniff(#[source] io::Error),
    #[error("{0}")]
    Env(String),
}

/// Compression level: `None` means the format's default (gzip 6, zstd 3).
pub type Level = Option<i32>;

/// Compress `reader` into `out` in one pass, hashing both sides.
pub fn compress<R: Read, W: Write>(
    mut reader: R,
    out: W,
    compression: Compression,
    level: Level,
) -> Result<CompressStats, CompressError> {
    let write_err = |source| CompressError::Write {
        compression,
        source,
    };
    let compressed = Sha256Writer::new(out);
    // `plain` is the uncompressed side's digest and size; `None` when the blob is the stream itself.
    let (compressed, plain) = match compression {
        Compression::None => {
            let mut w = compressed;
            copy(&mut reader, &mut w, write_err)?;
            (w, None)
        }
        Compression::Gzip => {
            let lvl = level.unwrap_or(6).clamp(0, 9) as u32;
            let enc = flate2::write::GzEncoder::new(compressed, flate2::Compression::new(lvl));
            let mut w = Sha256Writer::new(enc);
            copy(&mut reader, &mut w, write_err)?;
            let (d, n, enc) = w.finish();
            (enc.finish().map_err(write_err)?, Some((d, n)))
        }
        Compression::Zstd => {
            let lvl = level.unwrap_or(3);
            let enc = zstd::stream::write::Encoder::new(compressed, lvl).map_err(write_err)?;
            let mut w = Sha256Writer::new(enc);
            copy(&mut reader, &mut w, write_err)?;
            let (d, n, enc) = w.finish();
            (enc.finish().map_err(write_err)?, Some((d, n)))
        }
    };
    let (digest, size, mut inner) = compressed.finish();
    inner.flush().map_err(write_err)?;
    let (diff_id, uncompressed_size) = plain.unwrap_or_else(|| (digest.clone(), size));
    Ok(CompressStats {
        digest,
        size,
        diff_id,
        uncompressed_size,
    })
}

fn copy<R: Read, W: Write>(
    reader: &mut R,
    out: &mut W,
    write_err: impl Fn(io::Error) -> CompressError,
) -> Result<u64, CompressError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CompressError::Read(e)),
        };
        out.write_all(&buf[..n]).map_err(&write_err)?;
        total += n as u64;
    }
}

/// Wrap `reader` in the decompressor its first bytes call for: gzip, zstd or none. bzip2 and xz are
/// recognised and refused with a clear error. The output goes through the expansion-ratio guard
/// ([`rbuild_oci::expansion`]) with the limits from the environment.
pub fn decompress<'a, R: Read + Send + 'a>(
    reader: R,
) -> Result<Box<dyn Read + Send + 'a>, CompressError> {
    decompress_with(
        reader,
        ExpansionLimits::from_env().map_err(CompressError::Env)?,
    )
}

/// [`decompress`], also returning a counter of the compressed bytes read so far: give it to
/// [`ApplyOptions::compressed_bytes`](super::ApplyOptions::compressed_bytes) for the entry-density
/// rule.
pub fn decompress_counted<'a, R: Read + Send + 'a>(
    reader: R,
) -> Result<(Box<dyn Read + Send + 'a>, Arc<AtomicU64>), CompressError> {
    let (reader, count) = Counted::new(reader);
    let limits = ExpansionLimits::from_env().map_err(CompressError::Env)?;
    Ok((guarded(reader, count.clone(), limits)?, count))
}

/// [`decompress`] with explicit expansion limits.
pub fn decompress_with<'a, R: Read + Send + 'a>(
    reader: R,
    limits: ExpansionLimits,
) -> Result<Box<dyn Read + Send + 'a>, CompressError> {
    let (reader, count) = Counted::new(reader);
    guarded(reader, count, limits)
}

fn guarded<'a, R: Read + Send + 'a>(
    reader: Counted<R>,
    compressed: Arc<AtomicU64>,
    limits: ExpansionLimits,
) -> Result<Box<dyn Read + Send + 'a>, CompressError> {
    let guard = move |r: Box<dyn Read + Send + 'a>| -> Box<dyn Read + Send + 'a> {
        Box::new(ExpansionGuard::new(r, compressed, limits))
    };
    let mut buf = BufReader::with_capacity(64 * 1024, reader);
    let head = buf.fill_buf().map_err(CompressError::Sniff)?;
    let mut magic = [0u8; 6];
    let n = head.len().min(6);
    magic[..n].copy_from_slice(&head[..n]);
    // fill_buf may return fewer bytes than the magic on a slow stream; a short first read of a real
    // compressed stream is practically impossible with a 64 KiB buffer, and a tar is ≥ 512 bytes.
    match detect(&magic[..n]) {
        Some(Compression::Gzip) => Ok(guard(Box::new(flate2::read::MultiGzDecoder::new(buf)))),
        Some(Compression::Zstd) => Ok(guard(Box::new(
            zstd::stream::read::Decoder::with_buffer(buf).map_err(CompressError::Sniff)?,
        ))),
        _ if magic[..n].starts_with(b"BZh") => Err(CompressError::Unsupported("bzip2")),
        _ if magic[..n].starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) => {
            Err(CompressError::Unsupported("xz"))
        }
        _ => Ok(Box::new(buf)),
    }
}

/// The compression a stream's first bytes announce (`None` = not gzip or zstd).
pub fn detect(magic: &[u8]) -> Option<Compression> {
    if magic.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else {
        None
    }
}
