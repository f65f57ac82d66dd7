//! Running another architecture's programs: the kernel's `binfmt_misc` handlers (Debian's
//! `qemu-user-static` registers one per architecture), and whether a RUN step of a platform can
//! execute here at all — asked before any step runs, so that a build fails with what is missing
//! rather than with `exec format error` halfway through.
//!
//! A handler can serve a sandboxed step only with the `F` ("fix binary") flag: the kernel opens
//! the interpreter when the handler is registered and uses that open file for every program it
//! matches. Without `F` the interpreter's *path* is looked up at each exec, inside the step's
//! rootfs, where `/usr/libexec/qemu-binfmt/aarch64-binfmt-P` does not exist.
//!
//! Which handler serves a platform is decided as the kernel decides it: by matching each
//! handler's magic and mask against the ELF header a program of that platform has.
//!
//! [`install`] registers Debian's handlers (the `update-binfmts` format files of the
//! `qemu-user-static` package in `/usr/share/binfmts`) with the `F` flag, replacing a handler of
//! the same name that lacks it.

use rbuild_oci::Platform;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Where the kernel's binfmt_misc filesystem is mounted.
pub const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";
/// Where Debian's packages put their handler definitions (`update-binfmts --import` format).
pub const DEBIAN_BINFMTS_DIR: &str = "/usr/share/binfmts";

/// One registered handler, as `/proc/sys/fs/binfmt_misc/<name>` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handler {
    pub name: String,
    pub enabled: bool,
    pub interpreter: PathBuf,
    pub flags: String,
    /// Magic (`M`) handlers: where the magic starts, the magic and its mask (all ones if none).
    pub offset: usize,
    pub magic: Vec<u8>,
    pub mask: Vec<u8>,
    /// Extension (`E`) handlers match file names, never an ELF header.
    pub extension: Option<String>,
}

impl Handler {
    /// The `F` flag: the interpreter was opened at registration and works inside any rootfs.
    pub fn fix_binary(&self) -> bool {
        self.flags.contains('F')
    }

    /// Whether the kernel would hand a file starting with `header` to this handler.
    pub fn matches(&self, header: &[u8]) -> bool {
        if self.extension.is_some() || self.magic.is_empty() {
            return false;
        }
        let Some(window) = header.get(self.offset..self.offset + self.magic.len()) else {
            return false;
        };
        window
            .iter()
            .zip(&self.magic)
            .zip(self.mask.iter().chain(std::iter::repeat(&0xff)))
            .all(|((b, m), k)| b & k == m & k)
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Parse one handler file of binfmt_misc (`enabled`, `interpreter …`, `flags: …`, `offset N`,
/// `magic HEX`, `mask HEX` or `extension .EXT`).
pub fn parse_handler(name: &str, text: &str) -> Option<Handler> {
    let mut h = Handler {
        name: name.to_string(),
        enabled: false,
        interpreter: PathBuf::new(),
        flags: String::new(),
        offset: 0,
        magic: Vec::new(),
        mask: Vec::new(),
        extension: None,
    };
    let mut seen_interpreter = false;
    for line in text.lines() {
        let line = line.trim_end();
        if line == "enabled" {
            h.enabled = true;
        } else if line == "disabled" {
            h.enabled = false;
        } else if let Some(v) = line.strip_prefix("interpreter ") {
            h.interpreter = PathBuf::from(v);
            seen_interpreter = true;
        } else if let Some(v) = line.strip_prefix("flags:") {
            h.flags = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("offset ") {
            h.offset = v.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("magic ") {
            h.magic = unhex(v.trim())?;
        } else if let Some(v) = line.strip_prefix("mask ") {
            h.mask = unhex(v.trim())?;
        } else if let Some(v) = line.strip_prefix("extension ") {
            h.extension = Some(v.trim().to_string());
        }
    }
    if !seen_interpreter {
        return None;
    }
    if h.mask.is_empty() {
        h.mask = vec![0xff; h.magic.len()];
    }
    Some(h)
}

/// The state of a binfmt_misc directory: is it there, is it on, and its handlers (sorted by name).
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub mounted: bool,
    pub enabled: bool,
    pub handlers: Vec<Handler>,
}

/// Read the handlers in `dir` (normally [`BINFMT_DIR`]). A directory without `status` is
/// binfmt_misc not mounted: an empty table with `mounted: false`.
pub fn read_table(dir: &Path) -> io::Result<Table> {
    let status = match std::fs::read_to_string(dir.join("status")) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Table::default()),
        Err(e) => return Err(e),
    };
    let mut handlers = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "status" || name == "register" {
            continue;
        }
        // A handler removed between the listing and the read is simply gone.
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        if let Some(h) = parse_handler(&name, &text) {
            handlers.push(h);
        }
    }
    handlers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Table {
        mounted: true,
        enabled: status.trim() == "enabled",
        handlers,
    })
}

/// ELF identity of an architecture: (class 32/64, big endian, e_machine).
fn elf_identity(arch: &str) -> Option<(u8, bool, u16)> {
    Some(match arch {
        "amd64" => (64, false, 62),
        "386" => (32, false, 3),
        "arm64" => (64, false, 183),
        "arm64be" => (64, true, 183),
        "arm" => (32, false, 40),
        "armbe" => (32, true, 40),
        "ppc64le" => (64, false, 21),
        "ppc64" => (64, true, 21),
        "ppc" => (32, true, 20),
        "s390x" => (64, true, 22),
        "riscv64" => (64, false, 243),
        "riscv" => (32, false, 243),
        "mips64le" => (64, false, 8),
        "mips64" => (64, true, 8),
        "mipsle" => (32, false, 8),
        "mips" => (32, true, 8),
        "loong64" => (64, false, 258),
        "sparc64" => (64, true, 43),
        _ => return None,
    })
}

/// The first 64 bytes of a statically linked executable of `platform` (an ELF header with its
/// class, byte order and machine): what the kernel matches handlers against.
pub fn elf_header(platform: &Platform) -> Option<[u8; 64]> {
    if platform.os != "linux" {
        return None;
    }
    let (class, big, machine) = elf_identity(&platform.normalized().architecture)?;
    let mut h = [0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = if class == 64 { 2 } else { 1 };
    h[5] = if big { 2 } else { 1 };
    h[6] = 1; // EV_CURRENT
    let put16 = |h: &mut [u8; 64], at: usize, v: u16| {
        let b = if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        h[at..at + 2].copy_from_slice(&b);
    };
    put16(&mut h, 16, 2); // ET_EXEC
    put16(&mut h, 18, machine);
    let v = if big {
        1u32.to_be_bytes()
    } else {
        1u32.to_le_bytes()
    };
    h[20..24].copy_from_slice(&v);
    Some(h)
}

/// Debian's (qemu's) name of an architecture: `qemu-<name>` is its handler, `<name>-binfmt-P` its
/// interpreter.
pub fn qemu_name(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "amd64" => "x86_64",
        "386" => "i386",
        "arm64" => "aarch64",
        "arm64be" => "aarch64_be",
        "arm" => "arm",
        "armbe" => "armeb",
        "ppc64le" => "ppc64le",
        "ppc64" => "ppc64",
        "ppc" => "ppc",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "riscv" => "riscv32",
        "mips64le" => "mips64el",
        "mips64" => "mips64",
        "mipsle" => "mipsel",
        "mips" => "mips",
        "loong64" => "loongarch64",
        "sparc64" => "sparc64",
        _ => return None,
    })
}

/// Whether the host's CPU runs `platform`'s programs itself: its own architecture, and the 32-bit
/// one it has a compat mode for (386 on amd64, arm on arm64 — the kernel's IA32/AArch32
/// emulation, assumed present as in Debian's kernels).
pub fn runs_natively(platform: &Platform) -> bool {
    let p = platform.normalized();
    if p.os != "linux" {
        return false;
    }
    let host = Platform::host().normalized();
    p.architecture == host.architecture
        || matches!(
            (host.architecture.as_str(), p.architecture.as_str()),
            ("amd64", "386") | ("arm64", "arm")
        )
}

/// How a platform's programs run here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Emulation {
    /// The CPU runs them.
    Native,
    /// Through this binfmt_misc handler (enabled, with the `F` flag).
    Emulated(Handler),
}

/// Why a platform's programs cannot run here: one line, saying what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmulationError {
    /// Not a Linux platform, or an architecture rbuild does not know the ELF machine of.
    Unsupported { platform: String },
    /// No handler (binfmt_misc not mounted, switched off, or nothing registered for it).
    NoEmulator { platform: String },
    /// A handler matches, but it is disabled.
    Disabled { platform: String, handler: String },
    /// A handler matches, but without the `F` flag (its interpreter would be looked up inside the
    /// step's rootfs).
    NoFixBinary {
        platform: String,
        handler: String,
        interpreter: PathBuf,
    },
}

impl fmt::Display for EmulationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmulationError::Unsupported { platform } => write!(
                f,
                "cannot run programs of {platform} here: only Linux platforms can be emulated"
            ),
            EmulationError::NoEmulator { platform } => write!(
                f,
                "no emulator for {platform}: install qemu-user-static and binfmt-support, or run `rbuild binfmt --install`"
            ),
            EmulationError::Disabled { platform, handler } => write!(
                f,
                "no emulator for {platform}: the binfmt_misc handler {handler} is disabled; run `rbuild binfmt --install` (or `update-binfmts --enable {handler}`)"
            ),
            EmulationError::NoFixBinary {
                platform,
                handler,
                interpreter,
            } => write!(
                f,
                "no usable emulator for {platform}: the binfmt_misc handler {handler} lacks the F flag, so its interpreter {} would be looked up inside the build's rootfs; run `rbuild binfmt --install` to register it with F",
                interpreter.display()
            ),
        }
    }
}

impl std::error::Error for EmulationError {}

/// How `platform`'s programs run according to `table` (see [`read_table`]).
pub fn emulation_in(table: &Table, platform: &Platform) -> Result<Emulation, EmulationError> {
    let name = platform.normalized().format();
    if runs_natively(platform) {
        return Ok(Emulation::Native);
    }
    let Some(header) = elf_header(platform) else {
        return Err(EmulationError::Unsupported { platform: name });
    };
    if !table.mounted || !table.enabled {
        return Err(EmulationError::NoEmulator { platform: name });
    }
    // The kernel tries handlers newest first; any enabled F handler that matches will do, and an
    // enabled one shadows the rest, so prefer enabled+F, then report the best failure.
    let matching: Vec<&Handler> = table
        .handlers
        .iter()
        .filter(|h| h.matches(&header))
        .collect();
    if let Some(h) = matching.iter().find(|h| h.enabled && h.fix_binary()) {
        return Ok(Emulation::Emulated((*h).clone()));
    }
    if let Some(h) = matching.iter().find(|h| h.enabled) {
        return Err(EmulationError::NoFixBinary {
            platform: name,
            handler: h.name.clone(),
            interpreter: h.interpreter.clone(),
        });
    }
    if let Some(h) = matching.first() {
        return Err(EmulationError::Disabled {
            platform: name,
            handler: h.name.clone(),
        });
    }
    Err(EmulationError::NoEmulator { platform: name })
}

/// Mount binfmt_misc at `dir` if it is not mounted there (as `update-binfmts` and `binfmt-support`
/// do). Needs root; `Ok(false)` when it was mounted already. In rbuild's private mount namespace
/// the mount vanishes when rbuild exits; the handlers are the kernel's either way.
pub fn ensure_mounted(dir: &Path) -> io::Result<bool> {
    if dir.join("status").exists() {
        return Ok(false);
    }
    use nix::mount::{mount, MsFlags};
    mount(
        Some("binfmt_misc"),
        dir,
        Some("binfmt_misc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(io::Error::from)?;
    Ok(true)
}

/// How `platform`'s programs run on this machine: the system's binfmt_misc table (mounted first
/// if it is not and we may). The check every build makes for each target platform that has RUN
/// steps, before any step runs.
pub fn emulation(platform: &Platform) -> Result<Emulation, EmulationError> {
    if runs_natively(platform) {
        return Ok(Emulation::Native);
    }
    let dir = Path::new(BINFMT_DIR);
    // Not mounted: mount it if we can (root); a failure leaves the table empty and the error
    // below says what to install.
    let _ = ensure_mounted(dir);
    let table = read_table(dir).unwrap_or_default();
    emulation_in(&table, platform)
}

/// One handler definition of a Debian package (`/usr/share/binfmts/<name>`, the format of
/// `update-binfmts --import`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebianFormat {
    pub name: String,
    pub package: String,
    pub interpreter: PathBuf,
    pub offset: usize,
    pub magic: Vec<u8>,
    pub mask: Vec<u8>,
    pub credentials: bool,
    pub preserve: bool,
}

/// Decode `update-binfmts`'s `\xNN` escapes (other characters stand for themselves).
fn unescape(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            match b.get(i + 1) {
                Some(b'x') => {
                    let hex = s.get(i + 2..i + 4)?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 4;
                }
                Some(b'\\') => {
                    out.push(b'\\');
                    i += 2;
                }
                _ => return None,
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Parse a Debian binfmt definition file.
pub fn parse_debian_format(name: &str, text: &str) -> Option<DebianFormat> {
    let mut f = DebianFormat {
        name: name.to_string(),
        package: String::new(),
        interpreter: PathBuf::new(),
        offset: 0,
        magic: Vec::new(),
        mask: Vec::new(),
        credentials: false,
        preserve: false,
    };
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once(' ') else {
            continue;
        };
        let v = v.trim();
        match k {
            "package" => f.package = v.to_string(),
            "interpreter" => f.interpreter = PathBuf::from(v),
            "offset" => f.offset = v.parse().ok()?,
            "magic" => f.magic = unescape(v)?,
            "mask" => f.mask = unescape(v)?,
            "credentials" => f.credentials = v == "yes",
            "preserve" => f.preserve = v == "yes",
            _ => {}
        }
    }
    (!f.magic.is_empty() && !f.interpreter.as_os_str().is_empty()).then_some(f)
}

fn escape_all(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\x{b:02x}")).collect()
}

impl DebianFormat {
    /// The line written to `register` for this handler, always with `F` (and `P`/`C` as the
    /// definition asks; `C` implies `O`).
    pub fn register_line(&self) -> String {
        let mut flags = String::new();
        if self.preserve {
            flags.push('P');
        }
        if self.credentials {
            flags.push_str("OC");
        }
        flags.push('F');
        format!(
            ":{}:M:{}:{}:{}:{}:{}",
            self.name,
            self.offset,
            escape_all(&self.magic),
            escape_all(&self.mask),
            self.interpreter.display(),
            flags
        )
    }

    /// Whether this definition serves `platform` (its magic matches the platform's ELF header).
    pub fn serves(&self, platform: &Platform) -> bool {
        let Some(h) = elf_header(platform) else {
            return false;
        };
        Handler {
            name: self.name.clone(),
            enabled: true,
            interpreter: self.interpreter.clone(),
            flags: String::new(),
            offset: self.offset,
            magic: self.magic.clone(),
            mask: if self.mask.is_empty() {
                vec![0xff; self.magic.len()]
            } else {
                self.mask.clone()
            },
            extension: None,
        }
        .matches(&h)
    }
}

/// The `qemu-user-static` definitions in `dir` (normally [`DEBIAN_BINFMTS_DIR`]), sorted by name.
pub fn debian_qemu_formats(dir: &Path) -> io::Result<Vec<DebianFormat>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("qemu-") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        if let Some(f) = parse_debian_format(&name, &text) {
            if f.package == "qemu-user-static" {
                out.push(f);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What [`install`] did with one handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstallAction {
    /// Already registered, enabled and with `F`: left alone.
    Present,
    /// Newly registered.
    Registered,
    /// A handler of that name without `F` (or disabled) was removed and registered again with `F`.
    Replaced,
}

/// Why [`install`] could not register the handlers.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("qemu-user-static is not installed ({dir} has no qemu-user-static definitions): apt-get install qemu-user-static binfmt-support")]
    NoQemu { dir: String },
    #[error("no qemu-user-static handler serves {platform}")]
    NoHandlerFor { platform: String },
    #[error("{interpreter} (of {name}) is missing: apt-get install --reinstall qemu-user-static")]
    MissingInterpreter { name: String, interpreter: String },
    #[error("binfmt_misc is not mounted at {dir} and mounting it failed: {source} (registering emulators needs root)")]
    Mount { dir: String, source: io::Error },
    #[error("binfmt_misc at {dir} is switched off (`echo 1 > {dir}/status` turns it on)")]
    Off { dir: String },
    #[error("registering {name} in {dir}: {source}")]
    Register {
        name: String,
        dir: String,
        source: io::Error,
    },
}

/// Register Debian's qemu-user-static handlers in the binfmt_misc table at `binfmt_dir`, with the
/// `F` flag, from the definitions in `formats_dir`: all of them, or those serving `only`. The
/// host's own architecture is never registered. A handler already enabled with `F` is left alone;
/// one without `F`, or disabled, is removed and registered again.
pub fn install(
    binfmt_dir: &Path,
    formats_dir: &Path,
    only: &[Platform],
) -> Result<Vec<(String, InstallAction)>, InstallError> {
    let formats = debian_qemu_formats(formats_dir).unwrap_or_default();
    if formats.is_empty() {
        return Err(InstallError::NoQemu {
            dir: formats_dir.display().to_string(),
        });
    }
    let host = Platform::host();
    let mut wanted: Vec<&DebianFormat> = formats.iter().filter(|f| !f.serves(&host)).collect();
    if !only.is_empty() {
        for p in only {
            if !runs_natively(p) && !wanted.iter().any(|f| f.serves(p)) {
                return Err(InstallError::NoHandlerFor {
                    platform: p.normalized().format(),
                });
            }
        }
        wanted.retain(|f| only.iter().any(|p| !runs_natively(p) && f.serves(p)));
    }
    ensure_mounted(binfmt_dir).map_err(|source| InstallError::Mount {
        dir: binfmt_dir.display().to_string(),
        source,
    })?;
    let table = read_table(binfmt_dir).map_err(|source| InstallError::Mount {
        dir: binfmt_dir.display().to_string(),
        source,
    })?;
    if !table.enabled {
        return Err(InstallError::Off {
            dir: binfmt_dir.display().to_string(),
        });
    }
    let reg_err = |name: &str, source: io::Error| InstallError::Register {
        name: name.to_string(),
        dir: binfmt_dir.display().to_string(),
        source,
    };
    let mut done = Vec::new();
    for f in wanted {
        if !f.interpreter.exists() {
            return Err(InstallError::MissingInterpreter {
                name: f.name.clone(),
                interpreter: f.interpreter.display().to_string(),
            });
        }
        let existing = table.handlers.iter().find(|h| h.name == f.name);
        let action = match existing {
            Some(h) if h.enabled && h.fix_binary() => {
                done.push((f.name.clone(), InstallAction::Present));
                continue;
            }
            Some(_) => {
                // Writing -1 to a handler's file removes it.
                std::fs::write(binfmt_dir.join(&f.name), "-1").map_err(|e| reg_err(&f.name, e))?;
                InstallAction::Replaced
            }
            None => InstallAction::Registered,
        };
        std::fs::write(binfmt_dir.join("register"), f.register_line())
            .map_err(|e| reg_err(&f.name, e))?;
        done.push((f.name.clone(), action));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";
    const ARM_NO_F: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/arm-binfmt-P\nflags: P\noffset 0\nmagic 7f454c4601010100000000000000000002002800\nmask ffffffffffffff00fffffffffffffffffeffffff\n";
    const S390X_OFF: &str = "disabled\ninterpreter /usr/libexec/qemu-binfmt/s390x-binfmt-P\nflags: PF\noffset 0\nmagic 7f454c4602020100000000000000000000020016\nmask ffffffffffffff00fffffffffffffffffffeffff\n";
    const JAR: &str = "enabled\ninterpreter /usr/bin/jexec\nflags: \nextension .jar\n";

    fn plat(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    /// A fake binfmt_misc directory.
    fn fake(entries: &[(&str, &str)], status: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("status"), status).unwrap();
        std::fs::write(d.path().join("register"), "").unwrap();
        for (n, t) in entries {
            std::fs::write(d.path().join(n), t).unwrap();
        }
        d
    }

    #[test]
    fn parses_handlers() {
        let h = parse_handler("qemu-aarch64", AARCH64).unwrap();
        assert!(h.enabled && h.fix_binary());
        assert_eq!(h.magic.len(), 20);
        assert_eq!(h.mask[7], 0);
        let j = parse_handler("jar", JAR).unwrap();
        assert_eq!(j.extension.as_deref(), Some(".jar"));
        assert!(!j.matches(&elf_header(&plat("linux/arm64")).unwrap()));
        assert!(parse_handler("x", "enabled\n").is_none());
        assert!(parse_handler("x", "interpreter /x\nmagic 7f4\n").is_none());
    }

    #[test]
    fn elf_headers_match_debian_magic() {
        let h = parse_handler("qemu-aarch64", AARCH64).unwrap();
        assert!(h.matches(&elf_header(&plat("linux/arm64")).unwrap()));
        assert!(h.matches(&elf_header(&plat("linux/aarch64")).unwrap()));
        assert!(!h.matches(&elf_header(&plat("linux/amd64")).unwrap()));
        assert!(!h.matches(&elf_header(&plat("linux/arm")).unwrap()));
        assert!(!h.matches(&elf_header(&plat("linux/arm64be")).unwrap()));
        // A shared object (ET_DYN) matches too: the mask's 0xfe.
        let mut dynamic = elf_header(&plat("linux/arm64")).unwrap();
        dynamic[16] = 3;
        assert!(h.matches(&dynamic));
        let arm = parse_handler("qemu-arm", ARM_NO_F).unwrap();
        for v in [
            "linux/arm/v5",
            "linux/arm/v6",
            "linux/arm/v7",
            "linux/armhf",
        ] {
            assert!(arm.matches(&elf_header(&plat(v)).unwrap()), "{v}");
        }
        assert!(elf_header(&plat("windows/amd64")).is_none());
        assert!(elf_header(&plat("linux/wasm")).is_none());
    }

    #[test]
    fn table_from_a_fake_dir() {
        let d = fake(
            &[
                ("qemu-aarch64", AARCH64),
                ("qemu-arm", ARM_NO_F),
                ("jar", JAR),
            ],
            "enabled\n",
        );
        let t = read_table(d.path()).unwrap();
        assert!(t.mounted && t.enabled);
        assert_eq!(
            t.handlers
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>(),
            ["jar", "qemu-aarch64", "qemu-arm"]
        );
        let none = tempfile::tempdir().unwrap();
        let t = read_table(none.path()).unwrap();
        assert!(!t.mounted);
    }

    fn host_is(arch: &str) -> bool {
        Platform::host().architecture == arch
    }

    #[test]
    fn emulation_decisions() {
        if !host_is("amd64") {
            eprintln!("SKIP: emulation_decisions assumes an amd64 host");
            return;
        }
        let d = fake(
            &[
                ("qemu-aarch64", AARCH64),
                ("qemu-arm", ARM_NO_F),
                ("qemu-s390x", S390X_OFF),
                ("jar", JAR),
            ],
            "enabled\n",
        );
        let t = read_table(d.path()).unwrap();
        assert_eq!(
            emulation_in(&t, &plat("linux/amd64")),
            Ok(Emulation::Native)
        );
        assert_eq!(emulation_in(&t, &plat("linux/386")), Ok(Emulation::Native));
        match emulation_in(&t, &plat("linux/arm64")) {
            Ok(Emulation::Emulated(h)) => assert_eq!(h.name, "qemu-aarch64"),
            other => panic!("{other:?}"),
        }
        let e = emulation_in(&t, &plat("linux/arm/v7")).unwrap_err();
        assert!(matches!(e, EmulationError::NoFixBinary { .. }));
        assert!(e.to_string().contains("lacks the F flag"), "{e}");
        let e = emulation_in(&t, &plat("linux/ppc64le")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no emulator for linux/ppc64le: install qemu-user-static and binfmt-support, or run `rbuild binfmt --install`"
        );
        let e = emulation_in(&t, &plat("windows/arm64")).unwrap_err();
        assert!(matches!(e, EmulationError::Unsupported { .. }));

        // The exact message of the issue, for binfmt_misc not mounted or switched off.
        let msg = "no emulator for linux/arm64: install qemu-user-static and binfmt-support, or run `rbuild binfmt --install`";
        let unmounted = read_table(tempfile::tempdir().unwrap().path()).unwrap();
        assert_eq!(
            emulation_in(&unmounted, &plat("linux/arm64"))
                .unwrap_err()
                .to_string(),
            msg
        );
        let off = fake(&[("qemu-aarch64", AARCH64)], "disabled\n");
        let t = read_table(off.path()).unwrap();
        assert_eq!(
            emulation_in(&t, &plat("linux/arm64"))
                .unwrap_err()
                .to_string(),
            msg
        );
        // A disabled handler says so.
        let dis = fake(
            &[("qemu-aarch64", &AARCH64.replace("enabled", "disabled"))],
            "enabled\n",
        );
        let t = read_table(dis.path()).unwrap();
        assert!(matches!(
            emulation_in(&t, &plat("linux/arm64")),
            Err(EmulationError::Disabled { .. })
        ));
    }

    const DEB_AARCH64: &str = "package qemu-user-static\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nmagic \\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00\noffset 0\nmask \\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff\ncredentials no\nfix_binary yes\npreserve yes\n";

    #[test]
    fn debian_formats_and_register_lines() {
        let f = parse_debian_format("qemu-aarch64", DEB_AARCH64).unwrap();
        assert_eq!(f.package, "qemu-user-static");
        assert!(f.serves(&plat("linux/arm64")));
        assert!(!f.serves(&plat("linux/amd64")));
        assert_eq!(
            f.register_line(),
            ":qemu-aarch64:M:0:\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:PF"
        );
        assert!(parse_debian_format("x", "package p\nmagic \\xZZ\ninterpreter /x\n").is_none());
    }

    #[test]
    fn install_into_a_fake_dir() {
        // The interpreter must exist: point the definition at a file we make.
        let interp = tempfile::NamedTempFile::new().unwrap();
        let formats = tempfile::tempdir().unwrap();
        let deb = DEB_AARCH64.replace(
            "/usr/libexec/qemu-binfmt/aarch64-binfmt-P",
            &interp.path().display().to_string(),
        );
        std::fs::write(formats.path().join("qemu-aarch64"), &deb).unwrap();
        std::fs::write(
            formats.path().join("qemu-x86_64"),
            deb.replace("\\xb7", "\\x3e").replace("aarch64", "x86_64"),
        )
        .unwrap();
        std::fs::write(formats.path().join("python3.11"), "package python3.11\n").unwrap();

        // Fresh: registers arm64, never the host's own architecture.
        let d = fake(&[], "enabled\n");
        let done = install(d.path(), formats.path(), &[]).unwrap();
        if host_is("amd64") {
            assert_eq!(
                done,
                [("qemu-aarch64".to_string(), InstallAction::Registered)]
            );
        }
        let line = std::fs::read_to_string(d.path().join("register")).unwrap();
        assert!(
            line.starts_with(":qemu-aarch64:M:0:") && line.ends_with(":PF"),
            "{line}"
        );

        // Present with F: left alone. Present without F: removed (-1) and registered again.
        let d = fake(&[("qemu-aarch64", AARCH64)], "enabled\n");
        let done = install(d.path(), formats.path(), &[plat("linux/arm64")]).unwrap();
        assert_eq!(done, [("qemu-aarch64".to_string(), InstallAction::Present)]);
        let d = fake(
            &[("qemu-aarch64", &AARCH64.replace("PF", "P"))],
            "enabled\n",
        );
        let done = install(d.path(), formats.path(), &[plat("linux/arm64")]).unwrap();
        assert_eq!(
            done,
            [("qemu-aarch64".to_string(), InstallAction::Replaced)]
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("qemu-aarch64")).unwrap(),
            "-1"
        );

        // Errors: nothing for s390x; no definitions; binfmt_misc off; interpreter missing.
        let d = fake(&[], "enabled\n");
        let e = install(d.path(), formats.path(), &[plat("linux/s390x")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no qemu-user-static handler serves linux/s390x"
        );
        let empty = tempfile::tempdir().unwrap();
        let e = install(d.path(), empty.path(), &[]).unwrap_err();
        assert!(
            e.to_string().contains("apt-get install qemu-user-static"),
            "{e}"
        );
        let off = fake(&[], "disabled\n");
        assert!(matches!(
            install(off.path(), formats.path(), &[]),
            Err(InstallError::Off { .. })
        ));
        let gone = tempfile::tempdir().unwrap();
        std::fs::write(
            gone.path().join("qemu-aarch64"),
            DEB_AARCH64.replace("/usr/libexec", "/nonexistent"),
        )
        .unwrap();
        assert!(matches!(
            install(d.path(), gone.path(), &[]),
            Err(InstallError::MissingInterpreter { .. })
        ));
    }
}
