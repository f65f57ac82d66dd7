//! The parent <-> init protocol: one [`InitConfig`] from the parent, then [`InitMessage`]s back,
//! each a length-prefixed JSON frame on a Unix stream socket.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::InitError;
use crate::spec::{ExitKind, Network, SandboxMount, WindowSize};

/// The hidden argv[1] that turns a binary calling [`crate::init_if_requested`] into the init.
pub(crate) const INIT_ARG: &str = "__rbuild-sandbox-init";

/// Frames larger than this are refused (a spec is a few KiB; env can be large, not this large).
const MAX_FRAME: u32 = 16 << 20;

/// What the init needs to know; derived from a [`crate::RunSpec`] by the parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InitConfig {
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    pub network: Network,
    pub insecure: bool,
    /// Give the sandbox its own session (no controlling terminal).
    pub new_session: bool,
    /// Give the command a new terminal of this size (its master end is sent to the parent).
    pub tty: Option<WindowSize>,
    /// Generated files bind-mounted over `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`:
    /// (target in rootfs, host source).
    pub etc_files: Vec<(String, PathBuf)>,
    /// User mounts, sorted parents first.
    pub mounts: Vec<SandboxMount>,
    /// [`Network::Private`]: the host's own addresses, made unreachable inside the namespace.
    pub blocked: Vec<std::net::IpAddr>,
}

/// A message from the init (or the command process before its execve) to the parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum InitMessage {
    /// Setup failed; the command did not run.
    Failed(InitError),
    /// The command ended.
    Exited(ExitKind),
    /// [`Network::Private`]: stage 0 has unshared the network namespace; the parent attaches
    /// the network stack to it and answers with one `true` frame when `tap0` is up.
    NetnsReady,
    /// Carries the master end of the command's terminal as SCM_RIGHTS ancillary data (sent by
    /// the init before it starts the command).
    Console,
}

/// Write one frame.
pub(crate) fn write_frame<T: Serialize>(mut w: impl Write, value: &T) -> io::Result<()> {
    let body = serde_json::to_vec(value).map_err(io::Error::other)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut buf = Vec::with_capacity(body.len() + 4);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&body);
    // One write call: the init and the command process never write at the same time, but a
    // single write keeps a frame whole even if they did.
    w.write_all(&buf)
}

/// Read one frame; `Ok(None)` on a clean EOF before the frame starts.
pub(crate) fn read_frame<T: DeserializeOwned>(mut r: impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is too large"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        let m1 = InitMessage::Failed(InitError::ExecNotFound { name: "foo".into() });
        let m2 = InitMessage::Exited(ExitKind::Signaled(9));
        write_frame(&mut buf, &m1).unwrap();
        write_frame(&mut buf, &m2).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame::<InitMessage>(&mut r).unwrap(), Some(m1));
        assert_eq!(read_frame::<InitMessage>(&mut r).unwrap(), Some(m2));
        assert_eq!(read_frame::<InitMessage>(&mut r).unwrap(), None);
    }

    #[test]
    fn truncated_and_oversized_frames_are_errors() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &InitMessage::Exited(ExitKind::Exited(3))).unwrap();
        assert!(read_frame::<InitMessage>(&buf[..buf.len() - 1]).is_err());
        assert!(read_frame::<InitMessage>(&buf[..2]).is_err());
        let huge = (MAX_FRAME + 1).to_le_bytes();
        assert!(read_frame::<InitMessage>(&huge[..]).is_err());
        let mut bad = 3u32.to_le_bytes().to_vec();
        bad.extend_from_slice(b"{x}");
        assert!(read_frame::<InitMessage>(&bad[..]).is_err());
    }
}
