//! Packages compiled into executables: Go's build info (the `.go.buildinfo` section) and the
//! dependency list `cargo auditable` embeds (`.dep-v0`, zlib-compressed JSON). ELF only.

use super::purl::make;
use super::{Ecosystem, Package};
use std::io::Read;

/// A section's bytes, by name, from an ELF file (32/64-bit, either byte order). `None` for
/// anything that is not well-formed ELF or lacks the section; offsets are bounds-checked.
pub(crate) fn elf_section<'a>(data: &'a [u8], wanted: &str) -> Option<&'a [u8]> {
    if data.len() < 52 || &data[..4] != b"\x7fELF" {
        return None;
    }
    let is64 = match data[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let le = match data[5] {
        1 => true,
        2 => false,
        _ => return None,
    };
    let u16_at = |o: usize| -> Option<u64> {
        let b: [u8; 2] = data.get(o..o + 2)?.try_into().ok()?;
        Some(if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        } as u64)
    };
    let u32_at = |o: usize| -> Option<u64> {
        let b: [u8; 4] = data.get(o..o + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        } as u64)
    };
    let u64_at = |o: usize| -> Option<u64> {
        let b: [u8; 8] = data.get(o..o + 8)?.try_into().ok()?;
        Some(if le {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };
    let word = |o: usize| if is64 { u64_at(o) } else { u32_at(o) };
    let (shoff, shentsize, shnum, shstrndx) = if is64 {
        (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?, u16_at(0x3e)?)
    } else {
        (u32_at(0x20)?, u16_at(0x2e)?, u16_at(0x30)?, u16_at(0x32)?)
    };
    let min_ent = if is64 { 64 } else { 40 };
    if shentsize < min_ent || shnum == 0 || shstrndx >= shnum {
        return None;
    }
    // (name offset, file offset, size) of section `i`.
    let header = |i: u64| -> Option<(u64, u64, u64)> {
        let base = usize::try_from(shoff.checked_add(i.checked_mul(shentsize)?)?).ok()?;
        let name = u32_at(base)?;
        let ty = u32_at(base + 4)?;
        let (off, size) = if is64 {
            (word(base + 0x18)?, word(base + 0x20)?)
        } else {
            (word(base + 0x10)?, word(base + 0x14)?)
        };
        // SHT_NOBITS (.bss) has no bytes in the file.
        Some((name, off, if ty == 8 { 0 } else { size }))
    };
    let bytes = |off: u64, size: u64| -> Option<&'a [u8]> {
        let start = usize::try_from(off).ok()?;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        data.get(start..end)
    };
    let (_, stroff, strsize) = header(shstrndx)?;
    let strtab = bytes(stroff, strsize)?;
    for i in 0..shnum {
        let (name, off, size) = header(i)?;
        let name = strtab.get(usize::try_from(name).ok()?..)?;
        let end = name.iter().position(|&b| b == 0)?;
        if &name[..end] == wanted.as_bytes() {
            return bytes(off, size);
        }
    }
    None
}

/// Everything an executable says it was built from.
pub(crate) fn parse_executable(path: &str, data: &[u8]) -> Vec<Package> {
    if !data.starts_with(b"\x7fELF") {
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Some(sec) = elf_section(data, ".go.buildinfo") {
        out.extend(go_buildinfo(path, sec));
    }
    if let Some(sec) = elf_section(data, ".dep-v0") {
        out.extend(cargo_auditable(path, sec));
    }
    out
}

const GO_MAGIC: &[u8] = b"\xff Go buildinf:";

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Go 1.18+ build info: a 32-byte header (magic, pointer size, flags with bit 2 = inline
/// strings), then the Go version and the module info as varint-length strings. Older binaries
/// (pointers into the data segment) are not read.
fn go_buildinfo(path: &str, sec: &[u8]) -> Vec<Package> {
    if !sec.starts_with(GO_MAGIC) || sec.len() < 32 || sec[15] & 0x2 == 0 {
        return Vec::new();
    }
    let mut rest = &sec[32..];
    let mut next = || -> Option<&[u8]> {
        let (n, used) = uvarint(rest)?;
        let end = used.checked_add(usize::try_from(n).ok()?)?;
        let s = rest.get(used..end)?;
        rest = &rest[end..];
        Some(s)
    };
    let (Some(go_version), Some(modinfo)) = (next(), next()) else {
        return Vec::new();
    };
    // The module info is framed by 16-byte sentinels (not UTF-8): strip them as bytes.
    let mi = if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        &modinfo[16..modinfo.len() - 16]
    } else {
        modinfo
    };
    parse_modinfo(
        path,
        &String::from_utf8_lossy(go_version),
        &String::from_utf8_lossy(mi),
    )
}

/// `path`, `mod`, `dep` and `=>` lines of Go's module info.
pub(crate) fn parse_modinfo(path: &str, go_version: &str, mi: &str) -> Vec<Package> {
    let pkg = |name: &str, version: &str| Package {
        ecosystem: Ecosystem::Golang,
        purl: go_purl(name, version),
        name: name.to_string(),
        version: version.to_string(),
        license: None,
        source: path.to_string(),
        supplier: None,
    };
    let mut out: Vec<Package> = Vec::new();
    let mut main_path = None;
    let mut have_main_mod = false;
    for line in mi.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["path", p, ..] => main_path = Some(p.to_string()),
            ["mod", p, v, ..] => {
                have_main_mod = true;
                out.push(pkg(p, v));
            }
            ["dep", p, v, ..] => out.push(pkg(p, v)),
            ["=>", p, v, ..] => {
                if let Some(last) = out.last_mut() {
                    *last = pkg(p, v);
                }
            }
            _ => {}
        }
    }
    if !have_main_mod {
        // GOPATH-mode builds (Debian's) record only the main package's path.
        if let Some(p) = main_path {
            out.insert(0, pkg(&p, "(devel)"));
        }
    }
    if let Some(v) = go_version.strip_prefix("go") {
        let v = v.split_whitespace().next().unwrap_or(v);
        out.push(Package {
            purl: make(Ecosystem::Golang, None, "stdlib", v, &[]),
            ..pkg("stdlib", v)
        });
    }
    out
}

/// `pkg:golang/github.com/x/y@v1.2.3`: the module path's leading segments are the namespace.
fn go_purl(module: &str, version: &str) -> String {
    let version = if version == "(devel)" { "" } else { version };
    match module.rsplit_once('/') {
        Some((ns, name)) => make(Ecosystem::Golang, Some(ns), name, version, &[]),
        None => make(Ecosystem::Golang, None, module, version, &[]),
    }
}

/// The JSON `cargo auditable` compresses into `.dep-v0`: every crate with name, version, source
/// and kind (`build` dependencies are not in the binary and are left out).
fn cargo_auditable(path: &str, sec: &[u8]) -> Vec<Package> {
    let mut json = Vec::new();
    let limit = 16 << 20;
    if flate2::read::ZlibDecoder::new(sec)
        .take(limit)
        .read_to_end(&mut json)
        .is_err()
    {
        return Vec::new();
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&json) else {
        return Vec::new();
    };
    let Some(pkgs) = v.get("packages").and_then(|p| p.as_array()) else {
        return Vec::new();
    };
    pkgs.iter()
        .filter(|p| p.get("kind").and_then(|k| k.as_str()).unwrap_or("runtime") == "runtime")
        .filter_map(|p| {
            let name = p.get("name")?.as_str()?;
            let version = p.get("version")?.as_str()?;
            Some(Package {
                ecosystem: Ecosystem::Cargo,
                purl: make(Ecosystem::Cargo, None, name, version, &[]),
                name: name.to_string(),
                version: version.to_string(),
                license: None,
                source: path.to_string(),
                supplier: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_with_modules() {
        let mi = "path\texample.com/app\nmod\texample.com/app\tv1.0.0\th1:x\ndep\tgolang.org/x/sys\tv0.1.0\th1:y\ndep\tgithub.com/a/b\tv1.2.0\n=>\tgithub.com/fork/b\tv1.2.1\th1:z\nbuild\tGOOS=linux\n";
        let p = parse_modinfo("app", "go1.22.3", mi);
        let purls: Vec<_> = p.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(
            purls,
            [
                "pkg:golang/example.com/app@v1.0.0",
                "pkg:golang/golang.org/x/sys@v0.1.0",
                "pkg:golang/github.com/fork/b@v1.2.1",
                "pkg:golang/stdlib@1.22.3",
            ]
        );
    }

    #[test]
    fn hostile_elf_is_no_panic() {
        let mut d = b"\x7fELF\x02\x01".to_vec();
        d.resize(64, 0xff);
        assert!(elf_section(&d, ".go.buildinfo").is_none());
        assert!(parse_executable("x", &d).is_empty());
        assert!(go_buildinfo("x", b"\xff Go buildinf:\x08\x02").is_empty());
    }
}
