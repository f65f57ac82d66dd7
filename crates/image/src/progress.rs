//! Byte progress of exports, reported through a callback: the CLI turns it into progress events
//! (and throttles them); this crate only counts.

use rbuild_oci::Digest;
use std::io::{self, Read};

/// Bytes of one blob an export moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportProgress<'a> {
    /// What is happening to the blob: `exporting layer` (compressing or decompressing a layer
    /// for the output; bytes of the stored blob read), `writing layer`, `writing config`,
    /// `writing manifest` (bytes written into the output).
    pub what: &'static str,
    pub digest: &'a Digest,
    /// Bytes so far.
    pub current: u64,
    /// Bytes in all.
    pub total: u64,
    /// The blob is done (reported once, last).
    pub done: bool,
}

/// The callback: called on every read of a blob, so it must be cheap; it may be called from
/// any thread.
pub type ExportProgressFn<'a> = &'a (dyn Fn(ExportProgress<'_>) + Sync);

/// A callback that ignores everything.
pub fn no_export_progress() -> ExportProgressFn<'static> {
    &|_| {}
}

/// A reader of a blob that reports the bytes read through `report` (never `done`: the caller
/// reports that once the blob is whole).
pub(crate) struct Counting<'a, R> {
    pub inner: R,
    pub what: &'static str,
    pub digest: &'a Digest,
    pub total: u64,
    pub current: u64,
    pub report: ExportProgressFn<'a>,
}

impl<'a, R> Counting<'a, R> {
    pub fn new(
        inner: R,
        what: &'static str,
        digest: &'a Digest,
        total: u64,
        report: ExportProgressFn<'a>,
    ) -> Self {
        Counting {
            inner,
            what,
            digest,
            total,
            current: 0,
            report,
        }
    }

    /// Report the blob as done.
    pub fn done(&self) {
        (self.report)(ExportProgress {
            what: self.what,
            digest: self.digest,
            current: self.current,
            total: self.total,
            done: true,
        });
    }
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.current += n as u64;
            (self.report)(ExportProgress {
                what: self.what,
                digest: self.digest,
                current: self.current,
                total: self.total,
                done: false,
            });
        }
        Ok(n)
    }
}
