//! Blobs: read (verified, size-capped) and ingest (temp file → verify → fsync → rename).

use crate::error::{Result, StoreError};
use crate::Store;
use nix::fcntl::{Flock, FlockArg};
use rbuild_oci::{Digest, Sha256Writer};
use sha2::{Digest as _, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Buffer between small writes and the temp file.
const WRITE_BUFFER: usize = 256 * 1024;

static INGEST_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// `blobs/sha256/<hex>` (the digest is already strictly parsed, so the hex is a safe name).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root().join("blobs").join(d.algorithm()).join(d.hex())
    }

    /// Whether the blob is present.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// The blob's size, or `None` when absent.
    pub fn blob_size(&self, d: &Digest) -> Result<Option<u64>> {
        let p = self.blob_path(d);
        match std::fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_err("stat blob", &p, e)),
        }
    }

    /// Open a blob for reading (not re-verified: blobs are verified when written, and by fsck).
    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        let p = self.blob_path(d);
        File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::BlobNotFound {
                    digest: d.clone(),
                    root: self.root().to_path_buf(),
                }
            } else {
                self.io_err("open blob", &p, e)
            }
        })
    }

    /// Read a whole blob of at most `max` bytes and verify it against its digest (for manifests,
    /// configs and other documents).
    pub fn read_blob(&self, d: &Digest, max: u64) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        let mut f = self.open_blob(d)?;
        let size = f
            .metadata()
            .map_err(|e| self.io_err("stat blob", &p, e))?
            .len();
        if size > max {
            return Err(StoreError::BlobTooLarge {
                digest: d.clone(),
                size,
                max,
            });
        }
        let mut buf = Vec::with_capacity(size as usize);
        // Read at most max+1 so a blob growing under us cannot exhaust memory.
        (&mut f)
            .take(max + 1)
            .read_to_end(&mut buf)
            .map_err(|e| self.io_err("read blob", &p, e))?;
        if buf.len() as u64 > max {
            return Err(StoreError::BlobTooLarge {
                digest: d.clone(),
                size: buf.len() as u64,
                max,
            });
        }
        let actual = Digest::sha256_of(&buf);
        if &actual != d {
            return Err(StoreError::DigestMismatch {
                expected: d.clone(),
                actual,
                size: buf.len() as u64,
            });
        }
        Ok(buf)
    }

    /// Start writing a blob. Write the content, then [`BlobWriter::commit`].
    pub fn ingest(&self) -> Result<BlobWriter> {
        let n = INGEST_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{}-{n}.tmp", std::process::id(), crate::db::now_ns());
        let path = self.root().join("ingest").join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| self.io_err("create ingest file", &path, e))?;
        // The lock tells prune that this temp file is being written (a crashed writer's file is
        // unlocked and can be removed). It shares the open file description with `file`.
        let lock_fd = file
            .try_clone()
            .map_err(|e| self.io_err("dup ingest file", &path, e))?;
        let lock = Flock::lock(lock_fd, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| self.io_err("lock ingest file", &path, io::Error::from(errno)))?;
        Ok(BlobWriter {
            store: self.clone(),
            out: Some(Sha256Writer::new(BufWriter::with_capacity(
                WRITE_BUFFER,
                file,
            ))),
            path,
            _lock: Some(lock),
        })
    }

    /// Write `data` as a blob and return its digest.
    pub fn put_blob(&self, data: &[u8]) -> Result<Digest> {
        let d = Digest::sha256_of(data);
        // Already stored (an unchanged image config or manifest on a rebuild): no temp file, no
        // write, no fsync. `commit` would find it too, after writing it all out.
        if self.has_blob(&d) {
            return Ok(d);
        }
        let mut w = self.ingest()?;
        w.write_all(data).map_err(|e| w.error("write blob", e))?;
        w.commit(Some((&d, data.len() as u64)))?;
        Ok(d)
    }

    /// Re-hash a stored blob; `Ok(Some(actual))` if it does not match its name.
    pub(crate) fn verify_blob(&self, d: &Digest) -> Result<Option<Digest>> {
        let p = self.blob_path(d);
        let mut f = self.open_blob(d)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| self.io_err("read blob", &p, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let actual = Digest::from_sha256_bytes(h.finalize().into());
        Ok((&actual != d).then_some(actual))
    }
}

/// A blob being written. Implements [`Write`]; nothing is visible in the store until
/// [`BlobWriter::commit`] succeeds. Dropped without commit, the temp file is removed.
pub struct BlobWriter {
    store: Store,
    out: Option<Sha256Writer<BufWriter<File>>>,
    path: PathBuf,
    _lock: Option<Flock<File>>,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("path", &self.path)
            .field("written", &self.written())
            .finish()
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.out.as_ref().map_or(0, |o| o.written())
    }

    /// The temp file being written (under `ingest/`).
    pub fn temp_path(&self) -> &Path {
        &self.path
    }

    /// Turn an I/O error of this writer into a store error (disk full names the store root).
    pub fn error(&self, op: &'static str, e: io::Error) -> StoreError {
        // An error produced by our own `write` carries the store error inside.
        if e.get_ref().is_some_and(|inner| inner.is::<StoreError>()) {
            match e.into_inner().map(|inner| inner.downcast::<StoreError>()) {
                Some(Ok(se)) => return *se,
                Some(Err(other)) => {
                    return self.store.io_err(op, &self.path, io::Error::other(other))
                }
                None => {
                    return self
                        .store
                        .io_err(op, &self.path, io::Error::other("write failed"))
                }
            }
        }
        self.store.io_err(op, &self.path, e)
    }

    /// Finish the blob: verify size and digest against `expected` (when given), fsync, and rename
    /// into `blobs/`. If the blob is already present ours is dropped. Returns the digest and size.
    pub fn commit(mut self, expected: Option<(&Digest, u64)>) -> Result<(Digest, u64)> {
        let out = self.out.take().ok_or_else(|| StoreError::Io {
            op: "commit blob",
            path: self.path.clone(),
            source: io::Error::other("writer already failed"),
        })?;
        let (digest, size, buf) = out.finish();
        let file = buf
            .into_inner()
            .map_err(|e| self.store.io_err("write blob", &self.path, e.into_error()))?;
        if let Some((want, want_size)) = expected {
            if size != want_size {
                return Err(StoreError::SizeMismatch {
                    expected: want.clone(),
                    expected_size: want_size,
                    actual_size: size,
                });
            }
            if &digest != want {
                return Err(StoreError::DigestMismatch {
                    expected: want.clone(),
                    actual: digest,
                    size,
                });
            }
        }
        let target = self.store.blob_path(&digest);
        if target.exists() {
            // Someone else committed it first; mark it fresh so a concurrent prune treats it like
            // a new blob (see gc.rs) and drop ours (Drop removes the temp file).
            touch(&target);
            return Ok((digest, size));
        }
        file.set_permissions(std::fs::Permissions::from_mode(0o444))
            .map_err(|e| self.store.io_err("chmod blob", &self.path, e))?;
        file.sync_all()
            .map_err(|e| self.store.io_err("fsync blob", &self.path, e))?;
        drop(file);
        crate::crash_point("blob-before-rename");
        std::fs::rename(&self.path, &target)
            .map_err(|e| self.store.io_err("rename blob into place", &target, e))?;
        crate::crash_point("blob-after-rename");
        let dir = target.parent().unwrap_or(Path::new("."));
        fsync_dir(dir).map_err(|e| self.store.io_err("fsync directory", dir, e))?;
        // Renamed: nothing left for Drop to remove.
        self.path = PathBuf::new();
        Ok((digest, size))
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        // Free the space at once (the disk may be full) and refuse further writes.
        self.out = None;
        let _ = std::fs::remove_file(&self.path);
        if crate::error::is_disk_full(&e) {
            let err = StoreError::DiskFull {
                root: self.store.root().to_path_buf(),
                path: self.path.clone(),
            };
            io::Error::new(io::ErrorKind::StorageFull, err)
        } else {
            e
        }
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(out) = self.out.as_mut() else {
            return Err(io::Error::other(format!(
                "blob writer {} failed earlier",
                self.path.display()
            )));
        };
        match out.write(buf) {
            Ok(n) => Ok(n),
            Err(e) => Err(self.fail(e)),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        match out.flush() {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        self.out = None;
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// fsync a directory so a rename or unlink in it is durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Set a file's mtime to now (best effort).
fn touch(p: &Path) {
    if let Ok(f) = File::open(p) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}
