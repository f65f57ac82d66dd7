//! ARG and ENV scoping: global ARGs (before the first FROM), platform ARGs, proxy ARGs, and the
//! lookup a stage's expansion uses (ENV beats ARG).

use crate::ast::{Body, Instruction, Pos};
use crate::error::{ErrorKind, FrontendError};
use crate::expand::{ExpandError, Lexer};
use rbuild_oci::Platform;
use std::collections::BTreeMap;

/// Proxy ARGs every build knows without a declaration; kept out of history and cache keys.
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Most bytes the variables of one scope may hold in all (a stage's ENV and LABEL keys and values
/// and ARG values; the global ARGs): each value is already capped at
/// [`crate::expand::MAX_OUTPUT`], this bounds how many such values there are (`ENV B1=$A B2=$A …`
/// with a 1 MiB `A`). Far above anything a process can be started with (Linux refuses an
/// environment beyond ARG_MAX, 2 MiB by default).
pub const MAX_VARS_BYTES: usize = 8 << 20;

/// `os/arch[/variant]`.
pub fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// BuildKit's automatic platform ARGs: BUILDPLATFORM, BUILDOS, BUILDARCH, BUILDVARIANT of the
/// machine building (`build`), TARGETPLATFORM, TARGETOS, TARGETARCH, TARGETVARIANT of the platform
/// built for (`target`), in their normal form (`linux/arm/v7`, `linux/arm64`: no `v8`).
pub fn platform_args(build: &Platform, target: &Platform) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (prefix, p) in [("BUILD", build), ("TARGET", target)] {
        let p = p.normalized();
        m.insert(format!("{prefix}PLATFORM"), p.format());
        m.insert(format!("{prefix}OS"), p.os.clone());
        m.insert(format!("{prefix}ARCH"), p.architecture.clone());
        m.insert(
            format!("{prefix}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        );
    }
    m
}

/// Turn an expansion failure into a located frontend error.
pub fn expand_error(e: ExpandError, pos: Pos) -> FrontendError {
    let col = pos.col
        + e.word
            .get(..e.offset)
            .map(|s| s.chars().count())
            .unwrap_or(0) as u32;
    FrontendError::new(ErrorKind::Expansion, pos.line, col, e.to_string())
}

/// The ARGs declared before the first FROM, with their effective values.
pub struct GlobalArgs {
    /// Declared names → value (`None`: declared without value and not given).
    pub declared: Vec<(String, Option<String>)>,
    pub platform: BTreeMap<String, String>,
}

impl GlobalArgs {
    pub fn new(build: &Platform, target: &Platform) -> Self {
        GlobalArgs {
            declared: Vec::new(),
            platform: platform_args(build, target),
        }
    }

    /// The value seen by FROM lines and global ARG defaults.
    pub fn get(&self, k: &str) -> Option<String> {
        if let Some((_, v)) = self.declared.iter().rev().find(|(n, _)| n == k) {
            return v.clone();
        }
        self.platform.get(k).cloned()
    }

    /// Whether `k` was declared globally (so a bare `ARG k` in a stage inherits it).
    pub fn declared_value(&self, k: &str) -> Option<Option<String>> {
        self.declared
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    }

    pub fn declare(
        &mut self,
        ins: &Instruction,
        lexer: &Lexer,
        build_args: &BTreeMap<String, String>,
    ) -> Result<(), FrontendError> {
        let Body::Args(decls) = &ins.body else {
            return Ok(());
        };
        for d in decls {
            let value = match (build_args.get(&d.name), &d.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(def)) => {
                    let env = |k: &str| self.get(k);
                    Some(
                        lexer
                            .process_word(def, &env)
                            .map_err(|e| expand_error(e, d.pos))?,
                    )
                }
                (None, None) => self.platform.get(&d.name).cloned(),
            };
            self.declared.retain(|(n, _)| n != &d.name);
            self.declared.push((d.name.clone(), value));
            let size: usize = self
                .declared
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, String::len))
                .sum();
            if size > MAX_VARS_BYTES {
                return Err(FrontendError::new(
                    ErrorKind::Expansion,
                    d.pos.line,
                    d.pos.col,
                    format!(
                        "ARG takes the global ARG values to {size} bytes, over the limit of \
                         {MAX_VARS_BYTES} bytes"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Look a variable up in a `K=V` list (last wins, as docker's env replace keeps one).
pub fn env_get(env: &[String], k: &str) -> Option<String> {
    env.iter().rev().find_map(|kv| {
        let (n, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        (n == k).then(|| v.to_string())
    })
}

/// Set `k=v` in a `K=V` list: replace in place, or append.
pub fn env_set(env: &mut Vec<String>, k: &str, v: &str) {
    let kv = format!("{k}={v}");
    if let Some(slot) = env
        .iter_mut()
        .find(|e| e.split_once('=').map(|(n, _)| n).unwrap_or(e.as_str()) == k)
    {
        *slot = kv;
    } else {
        env.push(kv);
    }
}
