//! Dispatching one stage: its base (FROM), its base's ONBUILD triggers, then every instruction's
//! effect on the graph (RUN → Exec, COPY/ADD/WORKDIR → File) and on the image config and history,
//! as docker/BuildKit write them.

use super::gofmt;
use super::mounts::{self, MountType};
use super::vars::MAX_VARS_BYTES;
use super::vars::{self, env_get, env_set, PROXY_ARGS};
use super::{NamedContext, Planner, Ref};
use crate::ast::{Body, Flag, Instruction, Keyword, Pos};
use crate::error::{ErrorKind, FrontendError};
use rbuild_oci::{Digest, EmptyObject, Healthcheck, ImageConfig, Platform};
use rbuild_ops::{
    CacheSharing, Chmod, Chown, ExecOp, FileAction, FileOp, HistoryStep, Mount, MountKind,
    NetworkMode, Op, ResolvedImage, SecurityMode, Source, Vertex, VertexId, VertexMeta,
};
use std::collections::HashMap;

/// `PATH` BuildKit gives scratch images and RUN steps whose image sets none.
pub use rbuild_oci::DEFAULT_PATH;

/// A planned stage.
#[derive(Clone, Debug)]
pub struct StageResult {
    pub vertex: VertexId,
    pub config: ImageConfig,
    pub history: Vec<HistoryStep>,
}

/// The state of a stage while its instructions are dispatched.
struct St {
    idx: usize,
    prefix: Option<String>,
    total: usize,
    counter: usize,
    vertex: VertexId,
    config: ImageConfig,
    history: Vec<HistoryStep>,
    /// Declared ARGs in order, with effective values.
    args: Vec<(String, Option<String>)>,
    shell: Vec<String>,
    cmd_set: bool,
    ignore_cache: bool,
    stage_name: String,
    /// The stage's platform (normal form): what its base image is narrowed to and its RUN steps
    /// run as.
    platform: Platform,
}

impl St {
    fn lookup(&self, k: &str) -> Option<String> {
        env_get(&self.config.config.env, k).or_else(|| {
            self.args
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .and_then(|(_, v)| v.clone())
        })
    }
}

impl St {
    /// Bytes held by the stage's ENV, LABEL and ARG values (keys included).
    fn vars_size(&self) -> usize {
        let env: usize = self.config.config.env.iter().map(String::len).sum();
        let labels: usize = self
            .config
            .config
            .labels
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        let args: usize = self
            .args
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, String::len))
            .sum();
        env + labels + args
    }

    /// Refuses the instruction at `pos` if it took the stage's variables over [`MAX_VARS_BYTES`].
    fn check_vars_size(&self, keyword: Keyword, pos: Pos) -> Result<(), FrontendError> {
        let size = self.vars_size();
        if size > MAX_VARS_BYTES {
            return Err(err(
                ErrorKind::Expansion,
                pos,
                format!(
                    "{} takes the stage's ENV, LABEL and ARG values to {size} bytes, over the \
                     limit of {MAX_VARS_BYTES} bytes",
                    keyword.upper()
                ),
            ));
        }
        Ok(())
    }
}

fn err(kind: ErrorKind, pos: Pos, msg: impl Into<String>) -> FrontendError {
    FrontendError::new(kind, pos.line, pos.col, msg)
}

fn produces_layer(k: Keyword) -> bool {
    matches!(
        k,
        Keyword::Run | Keyword::Copy | Keyword::Add | Keyword::Workdir
    )
}

/// `path.Clean` of an absolute path.
fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// A path relative to the working directory made absolute; a trailing `/` (or `/.`, or `.`)
/// is kept as `/` because it means "a directory".
fn abs_dest(workdir: &str, p: &str) -> String {
    let joined = if p.starts_with('/') {
        clean(p)
    } else {
        clean(&format!("{workdir}/{p}"))
    };
    let dir = p.ends_with('/') || p.ends_with("/.") || p == ".";
    if dir && !joined.ends_with('/') {
        format!("{joined}/")
    } else {
        joined
    }
}

fn scratch_config() -> ImageConfig {
    let mut c = ImageConfig::default();
    c.config.env = vec![format!("PATH={DEFAULT_PATH}")];
    c.config.working_dir = Some("/".into());
    c
}

fn parse_chown(v: &str) -> Chown {
    match v.split_once(':') {
        Some((u, g)) => Chown {
            user: u.to_string(),
            group: Some(g.to_string()),
        },
        None => Chown {
            user: v.to_string(),
            group: None,
        },
    }
}

fn parse_chmod(v: &str) -> Option<Chmod> {
    if !v.is_empty() && v.len() <= 5 && v.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        let m = u32::from_str_radix(v, 8).ok()?;
        return (m <= 0o7777).then_some(Chmod::Octal(m));
    }
    let ok = v.split(',').all(|clause| {
        let who_len = clause
            .bytes()
            .take_while(|b| matches!(b, b'u' | b'g' | b'o' | b'a'))
            .count();
        let rest = &clause[who_len..];
        !rest.is_empty()
            && rest.split_inclusive(['+', '-', '=']).count() > 0
            && rest.starts_with(['+', '-', '='])
            && rest.bytes().all(|b| {
                matches!(
                    b,
                    b'+' | b'-' | b'=' | b'r' | b'w' | b'x' | b'X' | b's' | b't'
                )
            })
    });
    ok.then(|| Chmod::Symbolic(v.to_string()))
}

const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
];

fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let u = s.to_ascii_uppercase();
    let name = u.strip_prefix("SIG").unwrap_or(&u);
    if SIGNALS.contains(&name) {
        return true;
    }
    // RTMIN+n / RTMAX-n
    for (base, sep) in [("RTMIN", '+'), ("RTMAX", '-')] {
        if name == base {
            return true;
        }
        if let Some(n) = name.strip_prefix(base).and_then(|r| r.strip_prefix(sep)) {
            return n.parse::<u32>().is_ok_and(|n| n <= 30);
        }
    }
    false
}

/// `80`, `80/tcp`, `8000-8010/udp`, `127.0.0.1:80:80` → `["80/tcp", …]`.
fn parse_ports(spec: &str) -> Result<Vec<String>, String> {
    let (port, proto) = match spec.rsplit_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let container = port.rsplit(':').next().unwrap_or(port);
    let num = |s: &str| -> Result<u32, String> {
        s.parse::<u32>()
            .ok()
            .filter(|n| *n <= 65535)
            .ok_or_else(|| format!("invalid containerPort: {spec}"))
    };
    let (lo, hi) = match container.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let n = num(container)?;
            (n, n)
        }
    };
    if hi < lo {
        return Err(format!("invalid port range: {container}"));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

fn is_http_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

fn url_filename(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    let path = no_query
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(no_query);
    let path = path.split_once('/').map(|(_, p)| p).unwrap_or("");
    match path.rsplit('/').next() {
        Some(n) if !n.is_empty() && n != "." && n != ".." => n.to_string(),
        _ => "__unnamed__".into(),
    }
}

impl<'a, 'd> Planner<'a, 'd> {
    fn ex(&self, st: &St, word: &str, pos: Pos) -> Result<String, FrontendError> {
        self.ex_checked(st, word, pos, false).map(|(r, _)| r)
    }

    fn ex_words(&self, st: &St, word: &str, pos: Pos) -> Result<Vec<String>, FrontendError> {
        self.ex_checked(st, word, pos, true).map(|(_, w)| w)
    }

    /// Expands `word` in the stage's environment (and splits it into words when `want_words`),
    /// noting `UndefinedVar` for every variable that is neither set nor a declared ARG
    /// (BuildKit's `reportUnmatchedVariables`). Not reported, to stay clear of false alarms:
    /// the predefined platform and proxy ARGs, and a variable used with a default or
    /// alternative (`${V:-x}`, `${V+x}`, `${V:?msg}`).
    fn ex_checked(
        &self,
        st: &St,
        word: &str,
        pos: Pos,
        want_words: bool,
    ) -> Result<(String, Vec<String>), FrontendError> {
        let env = |k: &str| st.lookup(k);
        let (result, words, unmatched) = self
            .lexer
            .process_word_unmatched(word, &env, want_words)
            .map_err(|e| vars::expand_error(e, pos))?;
        for u in &unmatched {
            // `${u:-default}` and friends say the author expects `u` may be unset.
            let guarded = ["-", ":-", "+", ":+", "?", ":?"]
                .iter()
                .any(|m| word.contains(&format!("${{{u}{m}")));
            if guarded
                || st.args.iter().any(|(n, _)| n == u)
                || PROXY_ARGS.contains(&u.as_str())
                || self.global.platform.contains_key(u)
            {
                continue;
            }
            let mut names: Vec<&str> = st
                .config
                .config
                .env
                .iter()
                .map(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k))
                .collect();
            names.extend(st.args.iter().map(|(n, _)| n.as_str()));
            let mut msg = format!("Usage of undefined variable '${u}'");
            if let Some(s) = crate::error::suggest(u, &names) {
                msg.push_str(&format!(" (did you mean ${s}?)"));
            }
            self.found.borrow_mut().push(crate::lint::Found {
                rule: "UndefinedVar",
                pos,
                message: msg,
            });
        }
        Ok((result, words))
    }

    fn ex_flag(&self, st: &St, f: Option<&Flag>) -> Result<Option<String>, FrontendError> {
        match f {
            Some(f) => Ok(Some(self.ex(
                st,
                f.value.as_deref().unwrap_or(""),
                f.pos,
            )?)),
            None => Ok(None),
        }
    }

    fn bool_flag(ins: &Instruction, name: &str) -> Option<bool> {
        ins.flag(name).map(|f| {
            f.value
                .as_deref()
                .is_none_or(|v| v.eq_ignore_ascii_case("true"))
        })
    }

    fn meta(&self, st: &mut St, text: &str, span: Option<rbuild_ops::Span>) -> VertexMeta {
        st.counter += 1;
        let w = st.total.to_string().len();
        let num = format!("{:>w$}/{}", st.counter, st.total);
        let name = match &st.prefix {
            Some(p) => format!("[{p} {num}] {text}"),
            None => format!("[{num}] {text}"),
        };
        VertexMeta {
            name,
            span,
            stage: Some(st.idx),
            stage_name: Some(st.stage_name.clone()),
            instruction: text.to_string(),
            ignore_cache: st.ignore_cache,
            arg_names: Vec::new(),
        }
    }

    /// `r` for the build's target platform.
    fn resolve_image(&mut self, r: &str, pos: Pos) -> Result<ResolvedImage, FrontendError> {
        let target = self.opts.platform.clone();
        self.resolve_image_for(r, pos, &target)
    }

    /// `r` narrowed to `platform` (the host's goes through the resolver's plain `resolve`).
    fn resolve_image_for(
        &mut self,
        r: &str,
        pos: Pos,
        platform: &Platform,
    ) -> Result<ResolvedImage, FrontendError> {
        let host = platform.same_as(&Platform::host());
        let key = if host {
            r.to_string()
        } else {
            format!("{r}\0{}", platform.normalized())
        };
        if let Some(img) = self.resolved.get(&key) {
            return Ok(img.clone());
        }
        let resolved = if host {
            self.resolver.resolve(r)
        } else {
            self.resolver.resolve_for(r, platform)
        };
        let img = resolved.map_err(|e| {
            let mut fe = err(ErrorKind::Resolve, pos, e.to_string());
            let lower = r.to_ascii_lowercase();
            if let Some(s) = self
                .stages
                .iter()
                .find(|s| s.name.as_deref() == Some(lower.as_str()))
            {
                fe = fe.with_hint(format!(
                    "stage {lower:?} is defined on line {}, after this FROM; FROM can only use earlier stages",
                    s.from.span.start_line
                ));
            }
            fe
        })?;
        self.resolved.insert(key, img.clone());
        Ok(img)
    }

    fn image_vertex(&mut self, img: &ResolvedImage, meta: VertexMeta) -> VertexId {
        self.graph.add(
            Vertex {
                op: Op::Source(Source::Image {
                    reference: img.reference.clone(),
                    manifest: img.manifest.clone(),
                }),
                meta,
            },
            &[],
        )
    }

    fn context_vertex(&mut self) -> VertexId {
        if let Some(v) = self.context_vertex {
            return v;
        }
        let v = self.graph.add(
            Vertex {
                op: Op::Source(Source::Context {
                    name: "context".into(),
                    excludes: self.excludes.clone(),
                }),
                meta: VertexMeta {
                    name: "[internal] load build context".into(),
                    ..Default::default()
                },
            },
            &[],
        );
        self.context_vertex = Some(v);
        v
    }

    fn named_vertex(
        &mut self,
        name: &str,
        pos: Pos,
    ) -> Result<(VertexId, Option<ImageConfig>), FrontendError> {
        match self.opts.build_contexts.get(name).cloned() {
            Some(NamedContext::Image(r)) => {
                let img = self.resolve_image(&r, pos)?;
                let meta = VertexMeta {
                    name: format!("[context {name}] load metadata for {r}"),
                    ..Default::default()
                };
                Ok((self.image_vertex(&img, meta), Some(img.config)))
            }
            _ => {
                if let Some(v) = self.named_vertices.get(name) {
                    return Ok((*v, None));
                }
                let v = self.graph.add(
                    Vertex {
                        op: Op::Source(Source::Context {
                            name: name.to_string(),
                            excludes: self
                                .opts
                                .named_dockerignore
                                .get(name)
                                .map(|t| super::dockerignore_patterns(t))
                                .unwrap_or_default(),
                        }),
                        meta: VertexMeta {
                            name: format!("[context {name}] load from client"),
                            ..Default::default()
                        },
                    },
                    &[],
                );
                self.named_vertices.insert(name.to_string(), v);
                Ok((v, None))
            }
        }
    }

    /// The vertex a `--from` (or mount `from=`) value names; `None` is the build context.
    fn vertex_for_from(
        &mut self,
        st: &St,
        from: Option<(&str, Pos)>,
    ) -> Result<VertexId, FrontendError> {
        let Some((raw, pos)) = from else {
            return Ok(self.context_vertex());
        };
        let v = self.expand_global(raw, pos)?;
        if v.is_empty() {
            return Err(err(
                ErrorKind::Stage,
                pos,
                "--from is empty after expansion",
            ));
        }
        match self.resolve_ref(&v, st.idx, false) {
            Ref::Stage(i) => match self.results.get(i).and_then(|r| r.as_ref()) {
                Some(r) => Ok(r.vertex),
                None if i == st.idx => Err(err(
                    ErrorKind::Stage,
                    pos,
                    format!(
                        "circular dependency detected on stage: {}",
                        self.stage_label(i)
                    ),
                )),
                None => Err(err(
                    ErrorKind::Stage,
                    pos,
                    format!(
                        "stage {} is not available here (referenced from an ONBUILD trigger?)",
                        self.stage_label(i)
                    ),
                )),
            },
            Ref::Named(n) => Ok(self.named_vertex(&n, pos)?.0),
            Ref::Image(r) if r_is(&r) => Ok(self.scratch_vertex()),
            Ref::Image(r) => {
                let platform = st.platform.clone();
                let img = self.resolve_image_for(&r, pos, &platform)?;
                let meta = VertexMeta {
                    name: format!("[internal] load metadata for {}", img.reference),
                    ..Default::default()
                };
                Ok(self.image_vertex(&img, meta))
            }
            Ref::Scratch => Ok(self.scratch_vertex()),
        }
    }

    fn scratch_vertex(&mut self) -> VertexId {
        self.graph.add(
            Vertex {
                op: Op::Source(Source::Scratch),
                meta: VertexMeta::default(),
            },
            &[],
        )
    }

    /// Plan stage `i` (its dependencies are planned already).
    pub(crate) fn plan_stage(&mut self, i: usize) -> Result<StageResult, FrontendError> {
        let from = self.stages[i].from;
        let Body::Words(words) = &from.body else {
            return Err(err(ErrorKind::Syntax, from.pos(), "FROM without an image"));
        };
        let w0 = &words[0];
        let base = self.expand_global(&w0.text, w0.pos)?;
        if base.is_empty() {
            return Err(err(
                ErrorKind::Invalid,
                w0.pos,
                format!("base name ({}) should not be blank", w0.text),
            ));
        }
        // The stage's platform: its `FROM --platform`, else that of the stage it is based on, else
        // the target's (BuildKit's rules).
        let flag_platform = match from.flag("platform") {
            Some(f) => {
                let p = self.expand_global(f.value.as_deref().unwrap_or(""), f.pos)?;
                let parsed = Platform::parse_strict(&p).map_err(|e| {
                    err(
                        ErrorKind::Invalid,
                        f.pos,
                        format!("FROM --platform={p}: {e}"),
                    )
                    .with_hint(
                        "a platform is os/arch[/variant], e.g. linux/arm64 or $BUILDPLATFORM",
                    )
                })?;
                Some(parsed.normalized())
            }
            None => None,
        };
        let stage_name = self.stage_label(i);
        let prefix = if self.stages.len() > 1 || self.stages[i].name.is_some() {
            Some(stage_name.clone())
        } else {
            None
        };
        let ignore_cache = self.opts.no_cache
            || self
                .opts
                .no_cache_filter
                .iter()
                .any(|f| f.eq_ignore_ascii_case(&stage_name) || f == &i.to_string());
        let r = self.resolve_ref(&base, i, true);
        let platform = match (&flag_platform, &r) {
            (Some(p), _) => p.clone(),
            (None, Ref::Stage(j)) => self.stage_platforms[*j]
                .clone()
                .unwrap_or_else(|| self.opts.platform.normalized()),
            (None, _) => self.opts.platform.normalized(),
        };
        self.stage_platforms[i] = Some(platform.clone());
        // Base vertex, config and inherited history.
        let mut from_meta = VertexMeta {
            name: String::new(),
            span: Some(from.span.clone()),
            stage: Some(i),
            stage_name: Some(stage_name.clone()),
            instruction: from.display(),
            ignore_cache,
            arg_names: Vec::new(),
        };
        let (vertex, mut config, history, shown) = match &r {
            Ref::Scratch => (None, scratch_config(), Vec::new(), "scratch".to_string()),
            Ref::Stage(j) => {
                let Some(res) = self.results[*j].clone() else {
                    return Err(err(
                        ErrorKind::Stage,
                        w0.pos,
                        format!("stage {} was not planned", self.stage_label(*j)),
                    ));
                };
                (
                    Some(res.vertex),
                    res.config,
                    res.history,
                    self.stage_label(*j),
                )
            }
            Ref::Named(n) => {
                let (v, c) = self.named_vertex(n, w0.pos)?;
                (
                    Some(v),
                    c.unwrap_or_else(scratch_config),
                    Vec::new(),
                    n.clone(),
                )
            }
            Ref::Image(r) => {
                let img = self.resolve_image_for(r, w0.pos, &platform)?;
                let want = &platform;
                let got = &img.config;
                let got_platform =
                    Platform::new(&got.os, &got.architecture, got.variant.as_deref());
                if !got.architecture.is_empty()
                    && !got.os.is_empty()
                    && !rbuild_oci::Matcher::only(want).matches(&got_platform)
                {
                    let got_s = match &got.variant {
                        Some(v) => format!("{}/{}/{v}", got.os, got.architecture),
                        None => format!("{}/{}", got.os, got.architecture),
                    };
                    self.found.borrow_mut().push(crate::lint::Found {
                        rule: "InvalidBaseImagePlatform",
                        pos: w0.pos,
                        message: format!(
                            "Base image {} was pulled with platform {got_s:?}, expected {:?} for current build",
                            img.reference,
                            vars::platform_string(want)
                        ),
                    });
                }
                (None, img.config.clone(), Vec::new(), img.reference.clone())
            }
        };
        let triggers = std::mem::take(&mut config.config.on_build);
        let mut parsed_triggers = Vec::new();
        for t in &triggers {
            let ins = crate::parser::parse_trigger(t, self.escape).map_err(|e| {
                err(
                    ErrorKind::Invalid,
                    from.pos(),
                    format!("ONBUILD trigger {t:?} of base image {shown}: {}", e.message),
                )
            })?;
            parsed_triggers.push(ins);
        }
        let total = 1
            + self.stages[i]
                .instructions
                .iter()
                .filter(|x| produces_layer(x.keyword))
                .count()
            + parsed_triggers
                .iter()
                .filter(|x| produces_layer(x.keyword))
                .count();
        let shell = config
            .config
            .shell
            .clone()
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
        let mut st = St {
            idx: i,
            prefix,
            total,
            counter: 0,
            vertex: VertexId::new(0),
            config,
            history,
            args: Vec::new(),
            shell,
            cmd_set: false,
            ignore_cache,
            stage_name,
            platform,
        };
        let from_name = self.meta(&mut st, &format!("FROM {shown}"), Some(from.span.clone()));
        from_meta.name = from_name.name;
        st.vertex = match (&r, vertex) {
            (_, Some(v)) => v,
            (Ref::Image(rr), None) => {
                let platform = st.platform.clone();
                let img = self.resolve_image_for(rr, w0.pos, &platform)?;
                self.image_vertex(&img, from_meta)
            }
            _ => self.graph.add(
                Vertex {
                    op: Op::Source(Source::Scratch),
                    meta: from_meta,
                },
                &[],
            ),
        };
        for t in &parsed_triggers {
            let mut t = t.clone();
            relocate(&mut t, from);
            self.dispatch(&mut st, &t)?;
        }
        let instructions = self.stages[i].instructions.clone();
        for ins in instructions {
            self.dispatch(&mut st, ins)?;
        }
        Ok(StageResult {
            vertex: st.vertex,
            config: st.config,
            history: st.history,
        })
    }

    fn history(st: &mut St, created_by: String, vertex: Option<VertexId>) {
        st.history.push(HistoryStep {
            created_by,
            comment: None,
            vertex,
        });
    }

    fn dispatch(&mut self, st: &mut St, ins: &Instruction) -> Result<(), FrontendError> {
        match ins.keyword {
            Keyword::From => Ok(()),
            Keyword::Run => self.run(st, ins),
            Keyword::Copy | Keyword::Add => self.copy(st, ins),
            Keyword::Workdir => {
                let Body::Text(t) = &ins.body else {
                    return Ok(());
                };
                let w = self.ex(st, t, ins.pos())?;
                if w.is_empty() {
                    return Err(err(
                        ErrorKind::Invalid,
                        ins.pos(),
                        "WORKDIR is empty after expansion",
                    ));
                }
                let cur = st
                    .config
                    .config
                    .working_dir
                    .clone()
                    .unwrap_or_else(|| "/".into());
                let wd = if w.starts_with('/') {
                    clean(&w)
                } else {
                    clean(&format!("{cur}/{w}"))
                };
                st.config.config.working_dir = Some(wd.clone());
                let user = st.config.config.user.clone().filter(|u| !u.is_empty());
                let meta = self.meta(st, &ins.display(), Some(ins.span.clone()));
                let v = self.graph.add(
                    Vertex {
                        op: Op::File(FileOp {
                            actions: vec![FileAction::Mkdir {
                                path: wd.clone(),
                                mode: 0o755,
                                chown: user.as_deref().map(parse_chown),
                            }],
                        }),
                        meta,
                    },
                    &[st.vertex],
                );
                st.vertex = v;
                Self::history(st, format!("WORKDIR {wd}"), Some(v));
                Ok(())
            }
            Keyword::Env | Keyword::Label => {
                let Body::KeyValues { pairs, .. } = &ins.body else {
                    return Ok(());
                };
                let mut kvs = Vec::new();
                for p in pairs {
                    let k = self.ex(st, &p.key, p.pos)?;
                    let v = self.ex(st, &p.value, p.pos)?;
                    if k.is_empty() {
                        return Err(err(
                            ErrorKind::Invalid,
                            p.pos,
                            format!("{} names can not be blank", ins.keyword.upper()),
                        ));
                    }
                    kvs.push((k, v));
                }
                let mut msg = ins.keyword.upper();
                for (k, v) in kvs {
                    msg.push_str(&format!(" {k}={v}"));
                    if ins.keyword == Keyword::Env {
                        env_set(&mut st.config.config.env, &k, &v);
                    } else {
                        st.config.config.labels.insert(k, v);
                    }
                }
                st.check_vars_size(ins.keyword, ins.pos())?;
                Self::history(st, msg, None);
                Ok(())
            }
            Keyword::Arg => {
                let Body::Args(decls) = &ins.body else {
                    return Ok(());
                };
                let mut strs = Vec::new();
                for d in decls {
                    // History shows the declaration as written (its default expanded), never
                    // the --build-arg or global value it ends up with: BuildKit's dispatchArg.
                    let default = match &d.default {
                        Some(def) => Some(self.ex(st, def, d.pos)?),
                        None => None,
                    };
                    strs.push(match &default {
                        Some(v) => format!("{}={v}", d.name),
                        None => d.name.clone(),
                    });
                    let value = if let Some(v) = self.opts.build_args.get(&d.name) {
                        Some(v.clone())
                    } else if default.is_some() {
                        default
                    } else if let Some(g) = self.global.declared_value(&d.name) {
                        g
                    } else {
                        self.global.platform.get(&d.name).cloned()
                    };
                    st.args.retain(|(n, _)| n != &d.name);
                    st.args.push((d.name.clone(), value));
                    st.check_vars_size(Keyword::Arg, d.pos)?;
                }
                Self::history(st, format!("ARG {}", strs.join(" ")), None);
                Ok(())
            }
            Keyword::Cmd | Keyword::Entrypoint => {
                let args = match &ins.body {
                    Body::Exec(v) => v.clone(),
                    Body::Shell(s) => {
                        let mut a = st.shell.clone();
                        a.push(s.clone());
                        a
                    }
                    _ => return Ok(()),
                };
                let msg = format!("{} {}", ins.keyword.upper(), gofmt::quote_slice(&args));
                if ins.keyword == Keyword::Cmd {
                    st.config.config.cmd = Some(args);
                    st.cmd_set = true;
                } else {
                    st.config.config.entrypoint = Some(args);
                    if !st.cmd_set {
                        st.config.config.cmd = None;
                    }
                }
                Self::history(st, msg, None);
                Ok(())
            }
            Keyword::User => {
                let Body::Text(t) = &ins.body else {
                    return Ok(());
                };
                let u = self.ex(st, t, ins.pos())?;
                st.config.config.user = Some(u.clone());
                Self::history(st, format!("USER {u}"), None);
                Ok(())
            }
            Keyword::Expose => {
                let Body::Words(ws) = &ins.body else {
                    return Ok(());
                };
                let mut ports = std::collections::BTreeSet::new();
                for w in ws {
                    for p in self.ex_words(st, &w.text, w.pos)? {
                        for port in
                            parse_ports(&p).map_err(|m| err(ErrorKind::Invalid, w.pos, m))?
                        {
                            ports.insert(port);
                        }
                    }
                }
                let shown: Vec<String> = ports.iter().map(|p| format!("{p}:{{}}")).collect();
                for p in ports {
                    st.config.config.exposed_ports.insert(p, EmptyObject {});
                }
                Self::history(st, format!("EXPOSE map[{}]", shown.join(" ")), None);
                Ok(())
            }
            Keyword::Volume => {
                let raw: Vec<(String, Pos)> = match &ins.body {
                    Body::Words(ws) => ws.iter().map(|w| (w.text.clone(), w.pos)).collect(),
                    Body::Exec(v) => v.iter().map(|s| (s.clone(), ins.pos())).collect(),
                    _ => Vec::new(),
                };
                let mut vols = Vec::new();
                for (w, pos) in raw {
                    let v = self.ex(st, &w, pos)?;
                    if v.trim().is_empty() {
                        return Err(err(
                            ErrorKind::Invalid,
                            pos,
                            "VOLUME specified can not be an empty string",
                        ));
                    }
                    vols.push(v);
                }
                for v in &vols {
                    st.config.config.volumes.insert(v.clone(), EmptyObject {});
                }
                Self::history(st, format!("VOLUME {}", gofmt::plain_slice(&vols)), None);
                Ok(())
            }
            Keyword::Stopsignal => {
                let Body::Text(t) = &ins.body else {
                    return Ok(());
                };
                let s = self.ex(st, t, ins.pos())?;
                if !valid_signal(&s) {
                    return Err(err(
                        ErrorKind::Invalid,
                        ins.pos(),
                        format!("invalid signal: {s}"),
                    )
                    .with_hint("use a name like SIGTERM or a number like 15"));
                }
                st.config.config.stop_signal = Some(s.clone());
                Self::history(st, format!("STOPSIGNAL {s}"), None);
                Ok(())
            }
            Keyword::Maintainer => {
                let Body::Text(t) = &ins.body else {
                    return Ok(());
                };
                st.config.author = Some(t.clone());
                Self::history(st, format!("MAINTAINER {t}"), None);
                Ok(())
            }
            Keyword::Shell => {
                let Body::Exec(v) = &ins.body else {
                    return Ok(());
                };
                st.shell = v.clone();
                st.config.config.shell = Some(v.clone());
                Self::history(st, format!("SHELL {}", gofmt::plain_slice(v)), None);
                Ok(())
            }
            Keyword::Onbuild => {
                let Body::OnBuild(inner) = &ins.body else {
                    return Ok(());
                };
                let mut expr = inner.original.clone();
                for h in &inner.heredocs {
                    expr.push('\n');
                    expr.push_str(&h.content);
                    expr.push_str(&h.name);
                }
                // Config only: BuildKit's dispatchOnbuild writes no history entry.
                st.config.config.on_build.push(expr);
                Ok(())
            }
            Keyword::Healthcheck => self.healthcheck(st, ins),
        }
    }

    fn healthcheck(&mut self, st: &mut St, ins: &Instruction) -> Result<(), FrontendError> {
        let Body::Healthcheck { kind, cmd } = &ins.body else {
            return Ok(());
        };
        let pos = ins.pos();
        let test = match kind.to_ascii_uppercase().as_str() {
            "NONE" => {
                if !matches!(**cmd, Body::Empty) {
                    return Err(err(
                        ErrorKind::Invalid,
                        pos,
                        "HEALTHCHECK NONE takes no arguments",
                    ));
                }
                if !ins.flags.is_empty() {
                    return Err(err(
                        ErrorKind::Flag,
                        ins.flags[0].pos,
                        "HEALTHCHECK NONE takes no flags",
                    ));
                }
                vec!["NONE".to_string()]
            }
            "CMD" => match &**cmd {
                Body::Exec(v) if !v.is_empty() => {
                    let mut t = vec!["CMD".to_string()];
                    t.extend(v.iter().cloned());
                    t
                }
                Body::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
                _ => {
                    return Err(err(
                        ErrorKind::Invalid,
                        pos,
                        "Missing command after HEALTHCHECK CMD",
                    ))
                }
            },
            other => {
                return Err(err(
                    ErrorKind::Invalid,
                    pos,
                    format!("Unknown type {other:?} in HEALTHCHECK (try CMD)"),
                ))
            }
        };
        let mut hc = Healthcheck {
            test,
            ..Default::default()
        };
        for (flag, slot) in [
            ("interval", &mut hc.interval),
            ("timeout", &mut hc.timeout),
            ("start-period", &mut hc.start_period),
            ("start-interval", &mut hc.start_interval),
        ] {
            if let Some(f) = ins.flag(flag) {
                let v = f.value.as_deref().unwrap_or("");
                let d = if v.is_empty() {
                    0
                } else {
                    gofmt::parse_duration(v).ok_or_else(|| {
                        err(
                            ErrorKind::Flag,
                            f.pos,
                            format!("invalid duration for --{flag}: {v:?}"),
                        )
                        .with_hint("durations look like 30s, 1m30s, 500ms")
                    })?
                };
                if d != 0 && d < 1_000_000 {
                    return Err(err(
                        ErrorKind::Flag,
                        f.pos,
                        format!("--{flag} {v:?} cannot be less than 1ms"),
                    ));
                }
                *slot = d;
            }
        }
        if let Some(f) = ins.flag("retries") {
            let v = f.value.as_deref().unwrap_or("");
            let n: i64 = v.parse().map_err(|_| {
                err(
                    ErrorKind::Flag,
                    f.pos,
                    format!("invalid --retries value {v:?}"),
                )
            })?;
            if n < 0 {
                return Err(err(
                    ErrorKind::Flag,
                    f.pos,
                    format!("--retries cannot be negative ({n})"),
                ));
            }
            hc.retries = n;
        }
        let msg = format!(
            "HEALTHCHECK &{{{} {} {} {} {} {}}}",
            gofmt::quote_slice(&hc.test),
            gofmt::quote(&gofmt::duration(hc.interval)),
            gofmt::quote(&gofmt::duration(hc.timeout)),
            gofmt::quote(&gofmt::duration(hc.start_period)),
            gofmt::quote(&gofmt::duration(hc.start_interval)),
            gofmt::quote_rune(hc.retries),
        );
        st.config.config.healthcheck = Some(hc);
        Self::history(st, msg, None);
        Ok(())
    }

    fn run(&mut self, st: &mut St, ins: &Instruction) -> Result<(), FrontendError> {
        let mut inputs = vec![st.vertex];
        let mut mounts_out = Vec::new();
        let cwd = st
            .config
            .config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into());
        let mut args = match &ins.body {
            Body::Exec(v) => v.clone(),
            Body::Shell(s) => vec![s.clone()],
            _ => return Ok(()),
        };
        let prepend_shell = matches!(ins.body, Body::Shell(_));
        let mut use_shell = prepend_shell;
        if prepend_shell && !ins.heredocs.is_empty() {
            let single =
                crate::words::heredoc_marker(args[0].trim()).is_some() && ins.heredocs.len() == 1;
            if single {
                let h = &ins.heredocs[0];
                let data = h.effective_content();
                if data.starts_with("#!") {
                    let scratch = self.scratch_vertex();
                    let file = self.graph.add(
                        Vertex {
                            op: Op::File(FileOp {
                                actions: vec![FileAction::Mkfile {
                                    path: format!("/{}", h.name),
                                    data,
                                    mode: 0o755,
                                    chown: None,
                                }],
                            }),
                            meta: VertexMeta {
                                name: "preparing inline document".into(),
                                span: Some(ins.span.clone()),
                                stage: Some(st.idx),
                                stage_name: Some(st.stage_name.clone()),
                                instruction: ins.display(),
                                ignore_cache: st.ignore_cache,
                                arg_names: Vec::new(),
                            },
                        },
                        &[scratch],
                    );
                    inputs.push(file);
                    mounts_out.push(Mount {
                        target: "/dev/pipes/".into(),
                        kind: MountKind::Bind {
                            input: inputs.len() - 1,
                            source: "/".into(),
                            readwrite: false,
                        },
                    });
                    args = vec![format!("/dev/pipes/{}", h.name)];
                    use_shell = false;
                } else {
                    args = vec![data];
                }
            } else {
                let mut full = args[0].clone();
                for h in &ins.heredocs {
                    full.push('\n');
                    full.push_str(&h.content);
                    full.push_str(&h.name);
                }
                args = vec![full];
            }
        }
        if use_shell {
            let mut a = st.shell.clone();
            a.extend(args);
            args = a;
        }
        if args.is_empty() {
            return Err(err(
                ErrorKind::Invalid,
                ins.pos(),
                "RUN requires at least one argument",
            ));
        }
        let network = match ins.flag("network") {
            None => NetworkMode::Default,
            Some(f) => match f.value.as_deref().unwrap_or("") {
                "default" => NetworkMode::Default,
                "none" => NetworkMode::None,
                "host" => NetworkMode::Host,
                o => {
                    return Err(err(
                        ErrorKind::Flag,
                        f.pos,
                        format!("unsupported network mode {o:?}"),
                    )
                    .with_hint("use default, none or host"))
                }
            },
        };
        let security = match ins.flag("security") {
            None => SecurityMode::Sandbox,
            Some(f) => match f.value.as_deref().unwrap_or("") {
                "sandbox" => SecurityMode::Sandbox,
                "insecure" => SecurityMode::Insecure,
                o => {
                    return Err(err(
                        ErrorKind::Flag,
                        f.pos,
                        format!("unsupported security mode {o:?}"),
                    )
                    .with_hint("use sandbox or insecure"))
                }
            },
        };
        let mut ssh_count = 0;
        for f in ins.flag_values("mount") {
            let raw = f.value.as_deref().unwrap_or("");
            let stref: &St = st;
            let spec =
                mounts::parse_mount(raw, &|v| self.ex(stref, v, f.pos).map_err(|e| e.message))
                    .map_err(|m| err(ErrorKind::Flag, f.pos, format!("--mount: {m}")))?;
            let target = spec
                .target
                .as_deref()
                .map(|t| abs_dest(&cwd, t).trim_end_matches('/').to_string())
                .map(|t| if t.is_empty() { "/".to_string() } else { t });
            let kind = match spec.kind {
                MountType::Bind => {
                    let v = self.vertex_for_from(st, spec.from.as_deref().map(|s| (s, f.pos)))?;
                    inputs.push(v);
                    MountKind::Bind {
                        input: inputs.len() - 1,
                        source: spec.source.clone().unwrap_or_else(|| "/".into()),
                        readwrite: spec.readonly == Some(false),
                    }
                }
                MountType::Cache => {
                    let from = match &spec.from {
                        Some(s) => {
                            let v = self.vertex_for_from(st, Some((s, f.pos)))?;
                            inputs.push(v);
                            Some(inputs.len() - 1)
                        }
                        None => None,
                    };
                    MountKind::Cache {
                        id: spec
                            .id
                            .clone()
                            .unwrap_or_else(|| target.clone().unwrap_or_default()),
                        sharing: spec.sharing.unwrap_or(CacheSharing::Shared),
                        from,
                        source: spec.source.clone().unwrap_or_else(|| "/".into()),
                        mode: spec.mode.unwrap_or(0o755),
                        uid: spec.uid.unwrap_or(0),
                        gid: spec.gid.unwrap_or(0),
                        readonly: spec.readonly.unwrap_or(false),
                    }
                }
                MountType::Tmpfs => MountKind::Tmpfs { size: spec.size },
                MountType::Secret => {
                    let id = spec
                        .id
                        .clone()
                        .or_else(|| spec.source.clone())
                        .or_else(|| {
                            target
                                .as_deref()
                                .and_then(|t| t.rsplit('/').next())
                                .map(str::to_string)
                        })
                        .unwrap_or_default();
                    MountKind::Secret {
                        id,
                        required: spec.required.unwrap_or(false),
                        env: spec.env.clone(),
                        mode: spec.mode.unwrap_or(0o400),
                        uid: spec.uid.unwrap_or(0),
                        gid: spec.gid.unwrap_or(0),
                    }
                }
                MountType::Ssh => {
                    ssh_count += 1;
                    MountKind::Ssh {
                        id: spec.id.clone().unwrap_or_else(|| "default".into()),
                        required: spec.required.unwrap_or(false),
                        mode: spec.mode.unwrap_or(0o600),
                        uid: spec.uid.unwrap_or(0),
                        gid: spec.gid.unwrap_or(0),
                    }
                }
            };
            let target = match (&kind, target) {
                (_, Some(t)) => t,
                (MountKind::Secret { id, env, .. }, None) => {
                    if env.is_some() {
                        String::new()
                    } else {
                        format!("/run/secrets/{id}")
                    }
                }
                (MountKind::Ssh { .. }, None) => {
                    format!("/run/buildkit/ssh_agent.{}", ssh_count - 1)
                }
                (_, None) => String::new(),
            };
            mounts_out.push(Mount { target, kind });
        }
        // Environment: image env, then declared ARGs not shadowed by ENV, then default PATH.
        // Maps, not scans: a stage with hundreds of ENVs and ARGs must stay linear per RUN.
        let image_env: HashMap<&str, &str> = st
            .config
            .config
            .env
            .iter()
            .map(|kv| kv.split_once('=').unwrap_or((kv.as_str(), "")))
            .collect();
        let mut env = st.config.config.env.clone();
        let mut added: HashMap<&str, usize> = HashMap::new();
        for (k, v) in &st.args {
            if let Some(v) = v {
                if !image_env.contains_key(k.as_str()) {
                    let kv = format!("{k}={v}");
                    match added.get(k.as_str()) {
                        Some(&i) => env[i] = kv,
                        None => {
                            added.insert(k, env.len());
                            env.push(kv);
                        }
                    }
                }
            }
        }
        if !image_env.contains_key("PATH") && !added.contains_key("PATH") {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        // Which env names are ARGs (a hint for cache-miss explanations, never keyed).
        let mut arg_names: Vec<String> = added.keys().map(|k| k.to_string()).collect();
        arg_names.sort();
        let mut unkeyed_env = Vec::new();
        for p in PROXY_ARGS {
            if let Some(v) = self.opts.build_args.get(*p) {
                if !st.args.iter().any(|(n, _)| n == p) {
                    unkeyed_env.push(format!("{p}={v}"));
                }
            }
        }
        // History: `RUN |N K=V … args # buildkit`.
        // A name's value: ENV first, then its last ARG declaration (St::lookup, with maps).
        let last_arg: HashMap<&str, &Option<String>> =
            st.args.iter().map(|(n, v)| (n.as_str(), v)).collect();
        let mut build_env: Vec<(String, String)> = Vec::new();
        let mut slot_of: HashMap<&str, usize> = HashMap::new();
        for (k, v) in &st.args {
            let val = match image_env.get(k.as_str()) {
                Some(e) => Some(e.to_string()),
                None => last_arg.get(k.as_str()).and_then(|v| (*v).clone()),
            }
            .or_else(|| v.clone())
            .unwrap_or_default();
            match slot_of.get(k.as_str()) {
                Some(&i) => build_env[i].1 = val,
                None => {
                    slot_of.insert(k, build_env.len());
                    build_env.push((k.clone(), val));
                }
            }
        }
        let mut parts: Vec<String> = Vec::new();
        if !build_env.is_empty() {
            parts.push(format!("|{}", build_env.len()));
            parts.extend(build_env.iter().map(|(k, v)| format!("{k}={v}")));
        }
        parts.extend(args.iter().cloned());
        let created_by = format!("RUN {} # buildkit", parts.join(" "));
        let exec = ExecOp {
            args,
            env,
            cwd,
            user: st.config.config.user.clone().unwrap_or_default(),
            network,
            security,
            mounts: mounts_out,
            unkeyed_env,
            platform: (!st.platform.same_as(&Platform::host())).then(|| st.platform.clone()),
        };
        let text = match ins.original.lines().next() {
            Some(l) => display_line(ins, l),
            None => ins.display(),
        };
        let mut meta = self.meta(st, &text, Some(ins.span.clone()));
        meta.arg_names = arg_names;
        let v = self.graph.add(
            Vertex {
                op: Op::Exec(exec),
                meta,
            },
            &inputs,
        );
        st.vertex = v;
        Self::history(st, created_by, Some(v));
        Ok(())
    }

    fn copy(&mut self, st: &mut St, ins: &Instruction) -> Result<(), FrontendError> {
        let is_add = ins.keyword == Keyword::Add;
        let name = ins.keyword.upper();
        let raw: Vec<(String, Pos)> = match &ins.body {
            Body::Words(ws) => ws.iter().map(|w| (w.text.clone(), w.pos)).collect(),
            Body::Exec(v) => v.iter().map(|s| (s.clone(), ins.pos())).collect(),
            _ => return Ok(()),
        };
        let Some(((dest_raw, dest_pos), srcs_raw)) = raw.split_last() else {
            return Ok(());
        };
        if crate::words::heredoc_marker(dest_raw).is_some() && !ins.heredocs.is_empty() {
            return Err(err(
                ErrorKind::Invalid,
                *dest_pos,
                format!("{name} cannot accept a heredoc as a destination"),
            ));
        }
        let dest_x = self.ex(st, dest_raw, *dest_pos)?;
        let cwd = st
            .config
            .config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into());
        let mut chown = self
            .ex_flag(st, ins.flag("chown"))?
            .filter(|s| !s.is_empty())
            .map(|s| parse_chown(&s));
        if Self::bool_flag(ins, "link").unwrap_or(false) {
            // BuildKit's llb.WithUser reads `root` (user or group) as id 0, so a linked copy
            // with it still needs no /etc/passwd and stays independent.
            if let Some(c) = chown.as_mut() {
                let zero = |s: &mut String| {
                    if s == "root" {
                        *s = "0".into();
                    }
                };
                zero(&mut c.user);
                if let Some(g) = c.group.as_mut() {
                    zero(g);
                }
            }
        }
        let chmod = match self.ex_flag(st, ins.flag("chmod"))? {
            Some(v) => Some(parse_chmod(&v).ok_or_else(|| {
                err(
                    ErrorKind::Flag,
                    ins.flag("chmod").map(|f| f.pos).unwrap_or(ins.pos()),
                    format!("invalid chmod parameter: {v:?}"),
                )
                .with_hint("use octal (0755) or symbolic (u+x,g-w) modes")
            })?),
            None => None,
        };
        let mut exclude = Vec::new();
        for f in ins.flag_values("exclude") {
            exclude.push(self.ex(st, f.value.as_deref().unwrap_or(""), f.pos)?);
        }
        let link = Self::bool_flag(ins, "link").unwrap_or(false);
        let parents = Self::bool_flag(ins, "parents").unwrap_or(false);
        // `--checksum`: a digest for an http source, a commit for a git source.
        let checksum_raw = self.ex_flag(st, ins.flag("checksum"))?;
        let checksum_pos = ins.flag("checksum").map(|f| f.pos).unwrap_or(ins.pos());
        let keep_git_dir = Self::bool_flag(ins, "keep-git-dir").unwrap_or(false);
        let is_git_source =
            |s: &str| is_add && rbuild_git::GitRef::parse(s).ok().flatten().is_some();
        let any_git = srcs_raw.iter().any(|(s, _)| is_git_source(s));
        let checksum = match &checksum_raw {
            Some(c) if !any_git => Some(c.parse::<Digest>().map_err(|e| {
                err(
                    ErrorKind::Flag,
                    checksum_pos,
                    format!("invalid --checksum {c:?}: {e}"),
                )
            })?),
            _ => None,
        };
        let n_sources = srcs_raw.len();
        let dest_is_dir = dest_x.ends_with('/') || n_sources > 1;
        let dest = abs_dest(&cwd, &dest_x);
        let mut inputs = vec![st.vertex];
        let mut local: Vec<String> = Vec::new();
        let mut actions = Vec::new();
        let mut shown_srcs = Vec::new();
        let mut shown_heredocs = Vec::new();
        for (s, pos) in srcs_raw {
            if let Some(m) = crate::words::heredoc_marker(s) {
                if let Some(h) = ins.heredocs.iter().find(|h| h.name == m.name) {
                    let mut data = h.effective_content();
                    if h.expand {
                        let env = |k: &str| st.lookup(k);
                        data = self
                            .lexer
                            .clone()
                            .with_skip_process_quotes(true)
                            .process_word(&data, &env)
                            .map_err(|e| vars::expand_error(e, *pos))?;
                    }
                    let path = if dest_is_dir {
                        format!("{}/{}", dest.trim_end_matches('/'), h.name)
                    } else {
                        dest.clone()
                    };
                    let mode = match &chmod {
                        Some(Chmod::Octal(m)) => *m,
                        _ => 0o644,
                    };
                    actions.push(FileAction::Mkfile {
                        path,
                        data,
                        mode,
                        chown: chown.clone(),
                    });
                    shown_heredocs.push(format!("<<{}", h.name));
                    continue;
                }
            }
            let x = self.ex(st, s, *pos)?;
            shown_srcs.push(x.clone());
            if is_add {
                let git = rbuild_git::GitRef::parse(&x)
                    .map_err(|e| err(ErrorKind::Invalid, *pos, e.to_string()))?;
                if let Some(g) = git {
                    if let Some(c) = &checksum_raw {
                        if !(c.len() >= 7 && c.bytes().all(|b| b.is_ascii_hexdigit())) {
                            return Err(err(
                                ErrorKind::Flag,
                                checksum_pos,
                                format!("invalid --checksum {c:?} for a git source: expected a commit id"),
                            ));
                        }
                    }
                    let v = self.graph.add(
                        Vertex {
                            op: Op::Source(Source::Git {
                                remote: g.remote.clone(),
                                reference: g.reference.clone(),
                                subdir: g.subdir.clone(),
                                keep_git_dir,
                                checksum: checksum_raw.clone(),
                            }),
                            meta: VertexMeta {
                                name: format!("[internal] git {}", g.display_remote()),
                                span: Some(ins.span.clone()),
                                stage: Some(st.idx),
                                stage_name: Some(st.stage_name.clone()),
                                instruction: ins.display(),
                                ignore_cache: st.ignore_cache,
                                arg_names: Vec::new(),
                            },
                        },
                        &[],
                    );
                    inputs.push(v);
                    // The repository's tree goes into the destination directory, as BuildKit's
                    // ADD of a git source.
                    let to = if dest.ends_with('/') {
                        dest.clone()
                    } else {
                        format!("{dest}/")
                    };
                    actions.push(FileAction::Copy {
                        input: inputs.len() - 1,
                        sources: vec!["/".to_string()],
                        dest: to,
                        chown: chown.clone(),
                        chmod: chmod.clone(),
                        unpack: false,
                        parents: false,
                        exclude: Vec::new(),
                        link,
                    });
                    continue;
                }
            }
            if is_add && is_http_url(&x) {
                let filename = url_filename(&x);
                let v = self.graph.add(
                    Vertex {
                        op: Op::Source(Source::Http {
                            url: x.clone(),
                            checksum: checksum.clone(),
                            filename: filename.clone(),
                        }),
                        meta: VertexMeta {
                            name: format!("[internal] download {x}"),
                            span: Some(ins.span.clone()),
                            stage: Some(st.idx),
                            stage_name: Some(st.stage_name.clone()),
                            instruction: ins.display(),
                            ignore_cache: st.ignore_cache,
                            arg_names: Vec::new(),
                        },
                    },
                    &[],
                );
                inputs.push(v);
                let to = if dest_is_dir {
                    format!("{}/{filename}", dest.trim_end_matches('/'))
                } else {
                    dest.clone()
                };
                // A remote archive is extracted only with `--unpack=true` (BuildKit), into the
                // destination directory (a file that is no archive is copied as without it).
                let unpack = Self::bool_flag(ins, "unpack").unwrap_or(false);
                let to = match unpack {
                    true if dest_is_dir && !dest.ends_with('/') => format!("{dest}/"),
                    true => dest.clone(),
                    false => to,
                };
                actions.push(FileAction::Copy {
                    input: inputs.len() - 1,
                    sources: vec![filename],
                    dest: to,
                    chown: chown.clone(),
                    chmod: chmod.clone(),
                    unpack,
                    parents: false,
                    exclude: Vec::new(),
                    link,
                });
                continue;
            }
            local.push(x);
        }
        if checksum.is_some() && !local.is_empty() {
            return Err(err(
                ErrorKind::Flag,
                ins.flag("checksum").map(|f| f.pos).unwrap_or(ins.pos()),
                "checksum can't be specified for non-HTTP(S) sources",
            ));
        }
        if !local.is_empty() {
            let from = ins
                .flag("from")
                .map(|f| (f.value.as_deref().unwrap_or(""), f.pos));
            let src = self.vertex_for_from(st, from)?;
            inputs.push(src);
            let dest = if n_sources > 1 && !dest.ends_with('/') {
                format!("{dest}/")
            } else {
                dest.clone()
            };
            actions.insert(
                0,
                FileAction::Copy {
                    input: inputs.len() - 1,
                    sources: local,
                    dest,
                    chown: chown.clone(),
                    chmod: chmod.clone(),
                    unpack: is_add && Self::bool_flag(ins, "unpack").unwrap_or(true),
                    parents,
                    exclude,
                    link,
                },
            );
        }
        let mut msg = name.clone();
        for s in shown_srcs.iter().chain(shown_heredocs.iter()) {
            msg.push(' ');
            msg.push_str(s);
        }
        msg.push(' ');
        msg.push_str(&dest_x);
        let text = match ins.original.lines().next() {
            Some(l) => display_line(ins, l),
            None => ins.display(),
        };
        let meta = self.meta(st, &text, Some(ins.span.clone()));
        // `--link` (as BuildKit, not with --chmod): the copy lands on an empty filesystem, so its
        // key and layer do not depend on the stage; a merge puts its layer on top of the stage.
        // A `--chown` by name (other than `root`) needs the stage's /etc/passwd, which an empty
        // filesystem lacks. BuildKit fails such a build ("invalid user index: -1"; newer
        // frontends reject it when parsing, moby/buildkit#2987 and #7134); rbuild builds it as
        // an ordinary copy instead: the right files and owners, but the layer depends on the parent.
        let numeric = |s: &str| s.parse::<u32>().is_ok();
        let chown_by_id = chown
            .as_ref()
            .is_none_or(|c| numeric(&c.user) && c.group.as_deref().is_none_or(numeric));
        let v = if link && chmod.is_none() && chown_by_id {
            inputs[0] = self.scratch_vertex();
            let mut merge_meta = meta.clone();
            let copy = self.graph.add(
                Vertex {
                    op: Op::File(FileOp { actions }),
                    meta,
                },
                &inputs,
            );
            merge_meta.name = match merge_meta.name.split_once("] ") {
                Some((num, rest)) => format!("{num}] LINK {rest}"),
                None => format!("LINK {}", merge_meta.name),
            };
            self.graph.add(
                Vertex {
                    op: Op::Merge(rbuild_ops::MergeOp {}),
                    meta: merge_meta,
                },
                &[st.vertex, copy],
            )
        } else {
            self.graph.add(
                Vertex {
                    op: Op::File(FileOp { actions }),
                    meta,
                },
                &inputs,
            )
        };
        st.vertex = v;
        Self::history(st, format!("{msg} # buildkit"), Some(v));
        Ok(())
    }
}

fn r_is(r: &str) -> bool {
    r.eq_ignore_ascii_case("scratch")
}

fn display_line(ins: &Instruction, line: &str) -> String {
    match line.trim().split_once(char::is_whitespace) {
        Some((_, rest)) => format!("{} {}", ins.keyword.upper(), rest.trim()),
        None => ins.keyword.upper(),
    }
}

/// Point a trigger's spans at the FROM that pulled it in.
fn relocate(ins: &mut Instruction, from: &Instruction) {
    ins.span = from.span.clone();
    for f in &mut ins.flags {
        f.pos = from.pos();
    }
    match &mut ins.body {
        Body::Words(ws) => ws.iter_mut().for_each(|w| w.pos = from.pos()),
        Body::KeyValues { pairs, .. } => pairs.iter_mut().for_each(|p| p.pos = from.pos()),
        Body::Args(a) => a.iter_mut().for_each(|a| a.pos = from.pos()),
        _ => {}
    }
}
