//! `RUN --mount=…` specs: BuildKit's CSV syntax and defaults, before sources are tied to vertices.

use rbuild_ops::CacheSharing;

/// A parsed `--mount`, values expanded, defaults not yet applied to inputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountSpec {
    pub kind: MountType,
    pub target: Option<String>,
    pub from: Option<String>,
    pub source: Option<String>,
    pub id: Option<String>,
    pub sharing: Option<CacheSharing>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub readonly: Option<bool>,
    pub required: Option<bool>,
    pub size: Option<u64>,
    pub env: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MountType {
    #[default]
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

/// Split a CSV record as Go's `encoding/csv` does for one line: `,` separates, `"…"` quotes
/// (with `""` for a literal quote).
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut at_field_start = true;
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if in_quotes {
            if c == '"' {
                if it.peek() == Some(&'"') {
                    it.next();
                    cur.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            ',' => {
                out.push(std::mem::take(&mut cur));
                at_field_start = true;
                continue;
            }
            '"' if at_field_start => in_quotes = true,
            _ => cur.push(c),
        }
        at_field_start = false;
    }
    if in_quotes {
        return Err(format!("unterminated quote in mount spec {s:?}"));
    }
    out.push(cur);
    Ok(out)
}

fn parse_bool(key: &str, v: Option<&str>) -> Result<bool, String> {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(o) => Err(format!(
            "invalid value for {key}: {o:?} (want true or false)"
        )),
    }
}

fn parse_u32(key: &str, v: &str, radix: u32) -> Result<u32, String> {
    u32::from_str_radix(v, radix).map_err(|_| format!("invalid value for {key}: {v:?}"))
}

/// Docker's `RAMInBytes`: `64m`, `1g`, `512k`, `100` (bytes); binary units.
pub fn parse_size(v: &str) -> Option<u64> {
    let lower = v.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let lower = lower.strip_suffix('i').unwrap_or(lower);
    let digits = lower.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &lower[digits.len()..];
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return None,
    };
    let n: f64 = digits.parse().ok()?;
    if !(0.0..1e18).contains(&n) {
        return None;
    }
    Some((n * mult as f64) as u64)
}

/// Parse one `--mount` value; `expand` is applied to every value (BuildKit expands them).
pub fn parse_mount(
    value: &str,
    expand: &dyn Fn(&str) -> Result<String, String>,
) -> Result<MountSpec, String> {
    let mut m = MountSpec::default();
    let fields = csv_fields(value)?;
    // The type decides defaults, so find it first.
    for f in &fields {
        if let Some(("type", t)) = f.split_once('=').map(|(k, v)| (k.trim(), v)) {
            m.kind = match expand(t)?.to_ascii_lowercase().as_str() {
                "bind" => MountType::Bind,
                "cache" => MountType::Cache,
                "tmpfs" => MountType::Tmpfs,
                "secret" => MountType::Secret,
                "ssh" => MountType::Ssh,
                other => {
                    return Err(format!(
                        "unsupported mount type {other:?} (want bind, cache, tmpfs, secret or ssh)"
                    ))
                }
            };
        }
    }
    for f in fields {
        let f = f.trim();
        if f.is_empty() {
            continue;
        }
        let (key, raw) = match f.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v)),
            None => (f.to_ascii_lowercase(), None),
        };
        let val = match raw {
            Some(v) => Some(expand(v)?),
            None => None,
        };
        let need = |v: &Option<String>| -> Result<String, String> {
            v.clone()
                .ok_or_else(|| format!("invalid field {f:?}: {key} needs a value ({key}=…)"))
        };
        match key.as_str() {
            "type" => {}
            "ro" | "readonly" => m.readonly = Some(parse_bool(&key, val.as_deref())?),
            "rw" | "readwrite" => m.readonly = Some(!parse_bool(&key, val.as_deref())?),
            "required" => m.required = Some(parse_bool(&key, val.as_deref())?),
            "target" | "dst" | "destination" => m.target = Some(need(&val)?),
            "source" | "src" => m.source = Some(need(&val)?),
            "from" => m.from = Some(need(&val)?),
            "id" => m.id = Some(need(&val)?),
            "env" => m.env = Some(need(&val)?),
            "sharing" => {
                m.sharing = Some(match need(&val)?.to_ascii_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    o => {
                        return Err(format!(
                            "unsupported sharing value {o:?} (want shared, private or locked)"
                        ))
                    }
                })
            }
            "mode" => {
                let v = need(&val)?;
                let mode = parse_u32("mode", &v, 8)?;
                if mode > 0o7777 {
                    return Err(format!("invalid value for mode: {v:?}"));
                }
                m.mode = Some(mode);
            }
            "uid" => m.uid = Some(parse_u32("uid", &need(&val)?, 10)?),
            "gid" => m.gid = Some(parse_u32("gid", &need(&val)?, 10)?),
            "size" => {
                let v = need(&val)?;
                m.size = Some(parse_size(&v).ok_or_else(|| format!("invalid size {v:?}"))?);
            }
            _ => {
                return Err(format!("unexpected key '{key}' in '{f}'"));
            }
        }
    }
    let allowed = |ok: bool, what: &str| -> Result<(), String> {
        if ok {
            Ok(())
        } else {
            Err(format!("{what} is not allowed for a {:?} mount", m.kind).to_lowercase())
        }
    };
    match m.kind {
        MountType::Bind | MountType::Cache | MountType::Tmpfs => {
            if m.target.is_none() {
                return Err("mount target must be specified (target=PATH)".into());
            }
        }
        MountType::Secret | MountType::Ssh => {}
    }
    allowed(m.size.is_none() || m.kind == MountType::Tmpfs, "size")?;
    allowed(m.sharing.is_none() || m.kind == MountType::Cache, "sharing")?;
    allowed(m.env.is_none() || m.kind == MountType::Secret, "env")?;
    if m.kind == MountType::Secret && m.id.is_none() && m.target.is_none() && m.source.is_none() {
        return Err("secret mount needs id, source or target".into());
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<MountSpec, String> {
        parse_mount(s, &|v| Ok(v.to_string()))
    }

    #[test]
    fn parses() {
        let m = p("type=cache,target=/root/.cache,sharing=locked,mode=0700,uid=1").unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.mode, Some(0o700));
        assert_eq!(m.sharing, Some(CacheSharing::Locked));
        let m = p("type=secret,id=tok,env=TOKEN,required").unwrap();
        assert_eq!(m.required, Some(true));
        assert!(p("type=bind").is_err());
        assert!(p("type=cache,target=/x,bogus=1").is_err());
        assert!(p("type=nope,target=/x").is_err());
        assert_eq!(
            p("\"target=/a,b\",ro").unwrap().target.as_deref(),
            Some("/a,b")
        );
        assert_eq!(parse_size("64m"), Some(64 << 20));
    }
}
