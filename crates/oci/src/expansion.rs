//! The expansion-ratio guard every layer decompression goes through (issue 14 item 4).
//!
//! A decompressor is built on a [`Counted`] reader of the compressed bytes; its output is wrapped in
//! an [`ExpansionGuard`] that compares the bytes produced with the compressed bytes consumed. Past a
//! floor (small layers always pass, however well they compress), an output more than `max_ratio`
//! times its input is refused: a gzip or zstd bomb fails after a few hundred MiB, in about a second,
//! instead of filling the disk. Real layers compress 2–20×; sparse or zero-filled files can reach
//! a few hundred, hence the generous default and the `RBUILD_MAX_LAYER_RATIO` override.
//!
//! No I/O of its own: it wraps the caller's readers (the environment is read, and recorded,
//! through `rbuild-inputs`).

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// When decompressed output counts as a bomb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpansionLimits {
    /// Max decompressed bytes per compressed byte, once past `floor`.
    pub max_ratio: u64,
    /// Decompressed bytes always allowed, whatever the ratio.
    pub floor: u64,
}

impl Default for ExpansionLimits {
    fn default() -> Self {
        ExpansionLimits {
            max_ratio: 100,
            floor: 256 << 20,
        }
    }
}

impl ExpansionLimits {
    /// The defaults, overridden by `RBUILD_MAX_LAYER_RATIO` and `RBUILD_LAYER_RATIO_FLOOR`
    /// (bytes). A value that is not a positive integer is an error naming the variable.
    pub fn from_env() -> Result<ExpansionLimits, String> {
        let mut l = ExpansionLimits::default();
        if let Some(n) = positive_env("RBUILD_MAX_LAYER_RATIO")? {
            l.max_ratio = n;
        }
        if let Some(n) = positive_env("RBUILD_LAYER_RATIO_FLOOR")? {
            l.floor = n;
        }
        Ok(l)
    }

    /// [`from_env`](Self::from_env), falling back to the defaults when the environment is invalid
    /// (callers that have no way to report it still get a guard).
    pub fn from_env_or_default() -> ExpansionLimits {
        Self::from_env().unwrap_or_default()
    }
}

/// A positive integer from the environment variable `name` (`None` when unset).
pub fn positive_env(name: &str) -> Result<Option<u64>, String> {
    match rbuild_inputs::var(name) {
        None => Ok(None),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(format!("{name}={v:?}: expected a positive integer")),
        },
    }
}

/// A reader that counts the bytes read through it into a shared counter.
pub struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R> Counted<R> {
    /// Wrap `inner`; the returned counter follows every byte read.
    pub fn new(inner: R) -> (Counted<R>, Arc<AtomicU64>) {
        let count = Arc::new(AtomicU64::new(0));
        (
            Counted {
                inner,
                count: count.clone(),
            },
            count,
        )
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The error an [`ExpansionGuard`] returns; find it with [`is_expansion_error`].
#[derive(Debug)]
pub struct ExpansionError {
    pub produced: u64,
    pub compressed: u64,
    pub max_ratio: u64,
}

impl std::fmt::Display for ExpansionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "decompression bomb: {} compressed bytes expanded to more than {} bytes (over {}x; \
             RBUILD_MAX_LAYER_RATIO raises the limit)",
            self.compressed, self.produced, self.max_ratio
        )
    }
}

impl std::error::Error for ExpansionError {}

/// Whether `e` (or what it wraps) came from an [`ExpansionGuard`].
pub fn is_expansion_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<ExpansionError>())
}

/// Decompressed output checked against the compressed input (see the module docs).
pub struct ExpansionGuard<R> {
    inner: R,
    compressed: Arc<AtomicU64>,
    produced: u64,
    limits: ExpansionLimits,
}

impl<R> ExpansionGuard<R> {
    /// `inner` is the decompressor, `compressed` the counter of a [`Counted`] beneath it.
    pub fn new(inner: R, compressed: Arc<AtomicU64>, limits: ExpansionLimits) -> Self {
        ExpansionGuard {
            inner,
            compressed,
            produced: 0,
            limits,
        }
    }

    /// Decompressed bytes produced so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }
}

impl<R: Read> Read for ExpansionGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.produced += n as u64;
        if self.produced > self.limits.floor {
            let compressed = self.compressed.load(Ordering::Relaxed).max(1);
            if self.produced / compressed >= self.limits.max_ratio {
                return Err(io::Error::other(ExpansionError {
                    produced: self.produced,
                    compressed,
                    max_ratio: self.limits.max_ratio,
                }));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in decompressor: each input byte becomes `factor` output bytes.
    struct Expand<R> {
        inner: R,
        factor: usize,
    }

    impl<R: Read> Read for Expand<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let want = (buf.len() / self.factor).max(1);
            let mut tmp = vec![0u8; want];
            let n = self.inner.read(&mut tmp)?;
            let out = (n * self.factor).min(buf.len());
            buf[..out].fill(b'x');
            Ok(out)
        }
    }

    fn run(input: usize, factor: usize, limits: ExpansionLimits) -> io::Result<u64> {
        let data = vec![0u8; input];
        let (counted, count) = Counted::new(&data[..]);
        let mut g = ExpansionGuard::new(
            Expand {
                inner: counted,
                factor,
            },
            count,
            limits,
        );
        io::copy(&mut g, &mut io::sink())
    }

    #[test]
    fn floor_lets_small_streams_through_and_ratio_stops_big_ones() {
        let l = ExpansionLimits {
            max_ratio: 10,
            floor: 1 << 20,
        };
        // Far over the ratio but under the floor: passes.
        assert_eq!(run(1000, 1000, l).unwrap(), 1_000_000);
        // Under the ratio, past the floor: passes.
        assert_eq!(run(1 << 20, 4, l).unwrap(), 4 << 20);
        // Over both: refused, and the error says why.
        let e = run(1 << 20, 50, l).unwrap_err();
        assert!(is_expansion_error(&e));
        assert!(e.to_string().contains("decompression bomb"), "{e}");
    }
}
