//! Deterministic tar output for exported archives: entries in the order given (callers sort),
//! mtime 0, uid/gid 0, fixed modes, ustar headers.

use crate::error::{ImageError, Result};
use std::io::{Read, Write};

pub(crate) struct TarOut<W: Write> {
    builder: tar::Builder<W>,
    what: String,
}

impl<W: Write> TarOut<W> {
    pub fn new(out: W, what: impl Into<String>) -> Self {
        let mut builder = tar::Builder::new(out);
        builder.mode(tar::HeaderMode::Deterministic);
        TarOut {
            builder,
            what: what.into(),
        }
    }

    fn header(path: &str, size: u64, kind: tar::EntryType, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        // Paths here are short ASCII (blobs/sha256/<64 hex>); set_path only fails beyond ustar's
        // limits, which append_data below handles with a long-name extension.
        let _ = h.set_path(path);
        h.set_cksum();
        h
    }

    fn err(&self, path: &str, source: std::io::Error) -> ImageError {
        ImageError::Write {
            what: format!("{path} into {}", self.what),
            source,
        }
    }

    pub fn dir(&mut self, path: &str) -> Result<()> {
        let mut h = Self::header(path, 0, tar::EntryType::Directory, 0o755);
        self.builder
            .append_data(&mut h, path, std::io::empty())
            .map_err(|e| self.err(path, e))
    }

    pub fn file(&mut self, path: &str, size: u64, data: impl Read) -> Result<()> {
        let mut h = Self::header(path, size, tar::EntryType::Regular, 0o644);
        self.builder
            .append_data(&mut h, path, data.take(size))
            .map_err(|e| self.err(path, e))
    }

    pub fn bytes(&mut self, path: &str, data: &[u8]) -> Result<()> {
        self.file(path, data.len() as u64, data)
    }

    pub fn finish(self) -> Result<W> {
        let what = self.what.clone();
        self.builder
            .into_inner()
            .map_err(|source| ImageError::Write {
                what: format!("end of {what}"),
                source,
            })
    }
}
