//! Build checks: BuildKit's linter rules ([`rules::RULES`]) over a parsed Dockerfile.
//!
//! [`check`] runs the rules that need only the Dockerfile (casing, stage names, exec form,
//! legacy forms, FROM arguments, secrets in ARG/ENV, EXPOSE, WORKDIR, .dockerignore'd COPY
//! sources); [`crate::plan_checked`] adds the ones that need the build's state (`UndefinedVar`,
//! `InvalidBaseImagePlatform`). Both honour the configuration BuildKit reads from the
//! `# check=skip=<rules>;error=true;experimental=<rules>` directive, or from the
//! `BUILDKIT_DOCKERFILE_CHECK` build arg, which replaces the directive.
//!
//! Every [`Warning`] carries the rule's name, BuildKit's message, the rule's URL and the
//! file:line:column of the offending word; with `error=true` they are errors
//! ([`Warning::is_error`]) and the build fails.

mod rules;
#[cfg(test)]
mod tests;

pub use rules::{rule, rule_url, Rule, RULES};

use crate::ast::{Body, Dockerfile, Instruction, KvForm, Pos};
use crate::error::{suggest, ErrorKind, FrontendError};
use crate::expand::Lexer;
use crate::warning::Warning;
use std::collections::{BTreeMap, BTreeSet};

/// The build arg that overrides the `# check=` directive.
pub const CHECK_BUILD_ARG: &str = "BUILDKIT_DOCKERFILE_CHECK";

/// What to check and how: BuildKit's `check=` option string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckConfig {
    pub skip_all: bool,
    pub skip: BTreeSet<String>,
    pub experimental_all: bool,
    pub experimental: BTreeSet<String>,
    /// `error=true`: a violation fails the build.
    pub error: bool,
}

/// Go's `strconv.ParseBool`.
fn go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

impl CheckConfig {
    /// Parses `skip=A,B;error=true;experimental=all` as BuildKit's `ParseLintOptions` does.
    pub fn parse(s: &str) -> Result<CheckConfig, String> {
        let s = s.trim();
        let mut c = CheckConfig::default();
        if s.is_empty() {
            return Ok(c);
        }
        let list =
            |v: &str| -> BTreeSet<String> { v.split(',').map(|r| r.trim().to_string()).collect() };
        for p in s.splitn(3, ';') {
            let Some((k, v)) = p.split_once('=') else {
                return Err(format!("invalid check option {p:?}"));
            };
            match k.trim() {
                "skip" => match v.trim() {
                    "all" => c.skip_all = true,
                    v => c.skip = list(v),
                },
                "experimental" => match v.trim() {
                    "all" => c.experimental_all = true,
                    v => c.experimental = list(v),
                },
                "error" => {
                    c.error = go_bool(v.trim()).ok_or_else(|| {
                        format!("failed to parse check option {p:?}: invalid syntax")
                    })?
                }
                k => return Err(format!("invalid check option {k:?}")),
            }
        }
        Ok(c)
    }

    /// Whether rule `name` runs under this configuration (experimental rules only when asked
    /// for; `skip` does not apply to them, as in BuildKit).
    pub fn enabled(&self, name: &str) -> bool {
        match rule(name) {
            Some(r) if r.experimental => self.experimental_all || self.experimental.contains(name),
            _ => !(self.skip_all || self.skip.contains(name)),
        }
    }

    /// The configuration of a build: the `BUILDKIT_DOCKERFILE_CHECK` build arg if given, else the
    /// `# check=` directive. A malformed one is an error at the directive (or line 1).
    pub fn for_build(
        df: &Dockerfile,
        build_args: &BTreeMap<String, String>,
    ) -> Result<CheckConfig, FrontendError> {
        if let Some(v) = build_args.get(CHECK_BUILD_ARG) {
            return CheckConfig::parse(v).map_err(|m| {
                FrontendError::new(ErrorKind::Invalid, 1, 1, format!("{CHECK_BUILD_ARG}: {m}"))
            });
        }
        match df.directives.iter().find(|d| d.name == "check") {
            Some(d) => CheckConfig::parse(&d.value).map_err(|m| {
                FrontendError::new(
                    ErrorKind::Syntax,
                    d.line,
                    1,
                    format!("check directive: {m}"),
                )
            }),
            None => Ok(CheckConfig::default()),
        }
    }
}

/// A violation before the configuration is applied.
pub(crate) struct Found {
    pub rule: &'static str,
    pub pos: Pos,
    pub message: String,
}

fn found(rule: &'static str, pos: Pos, message: impl Into<String>) -> Found {
    Found {
        rule,
        pos,
        message: message.into(),
    }
}

/// Turns raw findings into the warnings a user sees: filtered by `config`, located in `file`,
/// with URLs, ordered by line, `is_error` set under `error=true`. Parser warnings of `df` are
/// included (those of a rule are filtered like the rest).
pub(crate) fn finish(
    df: &Dockerfile,
    found: Vec<Found>,
    config: &CheckConfig,
    file: &str,
    text: &str,
) -> Vec<Warning> {
    let mut out: Vec<Warning> = df
        .warnings
        .iter()
        .filter(|w| w.rule.is_none_or(|r| config.enabled(r)))
        .cloned()
        .collect();
    for f in found {
        if !config.enabled(f.rule) {
            continue;
        }
        let Some(r) = rule(f.rule) else { continue };
        let mut w = Warning::new(f.pos.line, f.pos.col, f.message);
        w.rule = Some(r.name);
        w.url = Some(rule_url(r.name));
        out.push(w.located_in(file, text));
    }
    for w in &mut out {
        w.is_error = config.error && w.rule.is_some();
    }
    out.sort_by(|a, b| {
        (a.line, a.column, a.rule, &a.message).cmp(&(b.line, b.column, b.rule, &b.message))
    });
    out.dedup();
    out
}

/// Runs the Dockerfile-only build checks (see the module docs) and returns the warnings,
/// configured by the `check` directive or `BUILDKIT_DOCKERFILE_CHECK` in `build_args`.
/// `dockerignore` is the context's `.dockerignore`, for `CopyIgnoredFile`.
pub fn check(
    df: &Dockerfile,
    file: &str,
    text: &str,
    build_args: &BTreeMap<String, String>,
    dockerignore: Option<&str>,
) -> Result<Vec<Warning>, FrontendError> {
    let config = CheckConfig::for_build(df, build_args).map_err(|e| e.located_in(file, text))?;
    let found = static_checks(df, text, build_args, dockerignore);
    Ok(finish(df, found, &config, file, text))
}

/// BuildKit's predefined platform ARGs, always declared for FROM lines.
const PLATFORM_ARGS: &[&str] = &[
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
];

const RESERVED_STAGE_NAMES: &[&str] = &["context", "scratch"];

/// The keyword as written (first word of the original line).
fn written_keyword(ins: &Instruction) -> &str {
    ins.original
        .split(|c: char| c.is_whitespace())
        .next()
        .unwrap_or("")
}

fn self_consistent(s: &str) -> bool {
    s == s.to_lowercase() || s == s.to_uppercase()
}

/// BuildKit's secret-name check: an `_`-separated part of the name is one of its secret tokens
/// and none is `public`.
fn looks_secret(key: &str) -> bool {
    const DENY: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    let parts: Vec<String> = key.split('_').map(str::to_ascii_lowercase).collect();
    parts.iter().any(|p| DENY.contains(&p.as_str())) && !parts.iter().any(|p| p == "public")
}

/// Whether `s` parses as a docker image reference (`[domain/]path[:tag][@digest]`), as
/// `reference.ParseNormalizedNamed` would accept it.
pub(crate) fn valid_reference(s: &str) -> bool {
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        let Some((algo, hex)) = d.split_once(':') else {
            return false;
        };
        if algo.is_empty() || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return false;
        }
    }
    // A tag is after the last ':' that comes after the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let mut cs = t.chars();
        if !matches!(cs.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
            || t.len() > 128
            || !cs.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return false;
        }
    }
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let mut comps: Vec<&str> = name.split('/').collect();
    if comps.len() > 1 {
        let d = comps[0];
        if d.contains('.')
            || d.contains(':')
            || d == "localhost"
            || d.chars().any(|c| c.is_ascii_uppercase())
        {
            let host = d.split(':').next().unwrap_or("");
            if host.is_empty()
                || !host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            {
                return false;
            }
            comps.remove(0);
        }
    }
    comps.iter().all(|c| {
        !c.is_empty()
            && c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.chars().all(|ch| {
                ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-')
            })
            && !c.contains("..")
            && !c.contains("___")
    })
}

/// Per stage: what later instructions (and child stages) inherit.
#[derive(Clone, Default)]
struct StageState {
    name: Option<String>,
    shell_set: bool,
    abs_workdir: bool,
}

fn from_words(ins: &Instruction) -> &[crate::ast::Word] {
    match &ins.body {
        Body::Words(w) => w,
        _ => &[],
    }
}

/// The rules that look only at the Dockerfile (and the .dockerignore).
pub(crate) fn static_checks(
    df: &Dockerfile,
    text: &str,
    build_args: &BTreeMap<String, String>,
    dockerignore: Option<&str>,
) -> Vec<Found> {
    let mut out = Vec::new();
    let lexer = Lexer::new(df.escape);

    // ConsistentInstructionCasing: against the majority (ties count as upper case).
    let (mut lower, mut upper) = (0, 0);
    for ins in &df.instructions {
        let k = written_keyword(ins);
        if self_consistent(k) {
            if k == k.to_lowercase() {
                lower += 1;
            } else {
                upper += 1;
            }
        }
    }
    let majority_lower = lower > upper;
    for ins in &df.instructions {
        let k = written_keyword(ins);
        let (want, casing) = if majority_lower {
            (k.to_lowercase(), "lowercase")
        } else {
            (k.to_uppercase(), "uppercase")
        };
        if k != want {
            out.push(found(
                "ConsistentInstructionCasing",
                ins.pos(),
                format!("Command '{k}' should match the case of the command majority ({casing})"),
            ));
        }
    }

    // Global ARGs: declared names, values with defaults only (for InvalidDefaultArgInFrom) and
    // with the build's args (for stage references).
    let mut global_names: Vec<String> = PLATFORM_ARGS.iter().map(|s| s.to_string()).collect();
    let mut defaults: BTreeMap<String, String> = BTreeMap::new();
    let mut effective: BTreeMap<String, String> = BTreeMap::new();
    let mut stages: Vec<StageState> = Vec::new();
    let mut cur: Option<StageState> = None;
    let mut used_once: BTreeMap<crate::ast::Keyword, (Pos, &str)> = BTreeMap::new();
    let comments = preceding_comments(text);

    for ins in &df.instructions {
        use crate::ast::Keyword as K;
        match ins.keyword {
            K::From => {
                if let Some(st) = cur.take() {
                    stages.push(st);
                }
                used_once.clear();
                let w = from_words(ins);
                let Some(base) = w.first() else { continue };
                let kw = written_keyword(ins);
                // Variables of the base name and --platform must be global ARGs.
                let platform = ins.flag("platform");
                let mut words = vec![(base.text.clone(), base.pos)];
                if let Some(p) = platform {
                    words.push((p.value.clone().unwrap_or_default(), p.pos));
                }
                for (word, pos) in &words {
                    let env = |k: &str| effective.get(k).cloned();
                    if let Ok(m) = lexer.process_word_with_matches(word, &env) {
                        for u in &m.unmatched {
                            if global_names.iter().any(|g| g == u) {
                                continue;
                            }
                            let cands: Vec<&str> =
                                global_names.iter().map(String::as_str).collect();
                            let mut msg = format!("FROM argument '{u}' is not declared");
                            if let Some(s) = suggest(u, &cands) {
                                msg.push_str(&format!(" (did you mean {s}?)"));
                            }
                            out.push(found("UndefinedArgInFrom", *pos, msg));
                        }
                    }
                }
                if base.text.contains('$') {
                    let env = |k: &str| defaults.get(k).cloned();
                    if let Ok(v) = lexer.process_word(&base.text, &env) {
                        if !valid_reference(&v) {
                            out.push(found(
                                "InvalidDefaultArgInFrom",
                                base.pos,
                                format!(
                                    "Default value for ARG {} results in empty or invalid base image name",
                                    base.text
                                ),
                            ));
                        }
                    }
                }
                let name = w.get(2).map(|n| n.text.clone());
                if let (Some(as_word), Some(n)) = (w.get(1), w.get(2)) {
                    // FromAsCasing only when FROM itself is consistently cased.
                    let as_ok = if kw == kw.to_lowercase() {
                        as_word.text == as_word.text.to_lowercase()
                    } else if kw == kw.to_uppercase() {
                        as_word.text == as_word.text.to_uppercase()
                    } else {
                        true
                    };
                    if !as_ok {
                        out.push(found(
                            "FromAsCasing",
                            as_word.pos,
                            format!(
                                "'{}' and '{kw}' keywords' casing do not match",
                                as_word.text
                            ),
                        ));
                    }
                    if n.text != n.text.to_lowercase() {
                        out.push(found(
                            "StageNameCasing",
                            n.pos,
                            format!("Stage name '{}' should be lowercase", n.text),
                        ));
                    }
                    let lower = n.text.to_lowercase();
                    if RESERVED_STAGE_NAMES.contains(&lower.as_str()) {
                        out.push(found(
                            "ReservedStageName",
                            n.pos,
                            format!("Stage name should not use the same name as reserved stage {lower:?}"),
                        ));
                    }
                    if stages
                        .iter()
                        .any(|s| s.name.as_deref() == Some(lower.as_str()))
                    {
                        out.push(found(
                            "DuplicateStageName",
                            n.pos,
                            format!("Duplicate stage name {lower:?}, stage names should be unique"),
                        ));
                    }
                    if let Some(c) = comments.get(&ins.span.start_line) {
                        if c.split(' ').next() != Some(n.text.as_str()) {
                            out.push(found(
                                "InvalidDefinitionDescription",
                                ins.pos(),
                                format!(
                                    "Comment for FROM should follow the format: `# {} <description>`",
                                    n.text
                                ),
                            ));
                        }
                    }
                }
                if let Some(p) = platform {
                    let v = p.value.as_deref().unwrap_or("");
                    if v == "$TARGETPLATFORM" || v == "${TARGETPLATFORM}" {
                        out.push(found(
                            "RedundantTargetPlatform",
                            p.pos,
                            format!("Setting platform to predefined {v} in FROM is redundant as this is the default behavior"),
                        ));
                    } else if !v.contains('$') && !platform_in_name(v, name.as_deref()) {
                        out.push(found(
                            "FromPlatformFlagConstDisallowed",
                            p.pos,
                            format!("FROM --platform flag should not use constant value {v:?}"),
                        ));
                    }
                }
                // The parent stage, if the base names one: its SHELL and WORKDIR carry over.
                let env = |k: &str| effective.get(k).cloned();
                let base_name = lexer
                    .process_word(&base.text, &env)
                    .unwrap_or_default()
                    .to_lowercase();
                let parent = stages
                    .iter()
                    .find(|s| s.name.as_deref() == Some(base_name.as_str()))
                    .cloned()
                    .unwrap_or_default();
                cur = Some(StageState {
                    name: name.map(|n| n.to_lowercase()),
                    ..parent
                });
            }
            K::Arg => {
                if let Body::Args(decls) = &ins.body {
                    for d in decls {
                        if looks_secret(&d.name) {
                            out.push(found(
                                "SecretsUsedInArgOrEnv",
                                d.pos,
                                format!(
                                    "Do not use ARG or ENV instructions for sensitive data (ARG {:?})",
                                    d.name
                                ),
                            ));
                        }
                        if cur.is_none() {
                            let env = |k: &str| defaults.get(k).cloned();
                            let dv = d
                                .default
                                .as_deref()
                                .map(|v| lexer.process_word(v, &env).unwrap_or_default());
                            let env = |k: &str| effective.get(k).cloned();
                            let ev = match build_args.get(&d.name) {
                                Some(v) => Some(v.clone()),
                                None => d
                                    .default
                                    .as_deref()
                                    .map(|v| lexer.process_word(v, &env).unwrap_or_default()),
                            };
                            defaults.insert(d.name.clone(), dv.unwrap_or_default());
                            effective.insert(d.name.clone(), ev.unwrap_or_default());
                            global_names.push(d.name.clone());
                        }
                    }
                    if let (Some(c), [first, ..]) =
                        (comments.get(&ins.span.start_line), decls.as_slice())
                    {
                        if !decls
                            .iter()
                            .any(|d| c.split(' ').next() == Some(d.name.as_str()))
                        {
                            let key = if decls.len() > 1 {
                                "<arg_key>"
                            } else {
                                first.name.as_str()
                            };
                            out.push(found(
                                "InvalidDefinitionDescription",
                                ins.pos(),
                                format!(
                                    "Comment for ARG should follow the format: `# {key} <description>`"
                                ),
                            ));
                        }
                    }
                }
            }
            K::Env | K::Label => {
                if let Body::KeyValues { form, pairs } = &ins.body {
                    // As written: BuildKit names the command the way the Dockerfile spells it.
                    let name = written_keyword(ins);
                    if *form == KvForm::Legacy {
                        out.push(found(
                            "LegacyKeyValueFormat",
                            ins.pos(),
                            format!("\"{name} key=value\" should be used instead of legacy \"{name} key value\" format"),
                        ));
                    }
                    if ins.keyword == K::Env {
                        for p in pairs {
                            if looks_secret(&p.key) {
                                out.push(found(
                                    "SecretsUsedInArgOrEnv",
                                    p.pos,
                                    format!(
                                        "Do not use ARG or ENV instructions for sensitive data (ENV {:?})",
                                        p.key
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
            K::Maintainer => out.push(found(
                "MaintainerDeprecated",
                ins.pos(),
                "Maintainer instruction is deprecated in favor of using label",
            )),
            K::Shell => {
                if let Some(st) = cur.as_mut() {
                    st.shell_set = true;
                }
            }
            K::Cmd | K::Entrypoint | K::Healthcheck => {
                if let Some((prev, name)) =
                    used_once.insert(ins.keyword, (ins.pos(), written_keyword(ins)))
                {
                    out.push(found(
                        "MultipleInstructionsDisallowed",
                        prev,
                        format!(
                            "Multiple {name} instructions should not be used in the same stage because only the last one will be used"
                        ),
                    ));
                }
                if ins.keyword != K::Healthcheck
                    && matches!(ins.body, Body::Shell(_))
                    && !cur.as_ref().is_some_and(|s| s.shell_set)
                {
                    out.push(found(
                        "JSONArgsRecommended",
                        ins.pos(),
                        format!(
                            "JSON arguments recommended for {} to prevent unintended behavior related to OS signals",
                            written_keyword(ins)
                        ),
                    ));
                }
            }
            K::Workdir => {
                if let Body::Text(t) = &ins.body {
                    let abs = is_abs_path(t);
                    if let Some(st) = cur.as_mut() {
                        if abs {
                            st.abs_workdir = true;
                        } else if !st.abs_workdir && !t.starts_with('$') {
                            out.push(found(
                                "WorkdirRelativePath",
                                ins.pos(),
                                format!("Relative workdir {t:?} can have unexpected results if the base image changes"),
                            ));
                        }
                    }
                }
            }
            K::Expose => {
                if let Body::Words(ws) = &ins.body {
                    for w in ws {
                        if w.text.contains('$') {
                            continue;
                        }
                        if w.text.contains(':') {
                            out.push(found(
                                "ExposeInvalidFormat",
                                w.pos,
                                format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{}'", w.text),
                            ));
                        }
                        if let Some((_, proto)) = w.text.split_once('/') {
                            if proto != proto.to_lowercase() {
                                out.push(found(
                                    "ExposeProtoCasing",
                                    w.pos,
                                    format!("Defined protocol '{}' in EXPOSE instruction should be lowercase", w.text),
                                ));
                            }
                        }
                    }
                }
            }
            K::Copy | K::Add => {
                if let Some(ignore) = dockerignore {
                    copy_ignored(ins, ignore, &mut out);
                }
            }
            _ => {}
        }
    }
    out
}

/// `CopyIgnoredFile`: a literal source of a COPY/ADD from the context that the .dockerignore
/// excludes.
fn copy_ignored(ins: &Instruction, dockerignore: &str, out: &mut Vec<Found>) {
    if ins.flag("from").is_some() {
        return;
    }
    let Ok(m) = rbuild_ignore::Matcher::parse(dockerignore) else {
        return;
    };
    let srcs: Vec<(String, Pos)> = match &ins.body {
        Body::Words(ws) if ws.len() > 1 => ws[..ws.len() - 1]
            .iter()
            .map(|w| (w.text.clone(), w.pos))
            .collect(),
        Body::Exec(v) if v.len() > 1 => v[..v.len() - 1]
            .iter()
            .map(|s| (s.clone(), ins.pos()))
            .collect(),
        _ => return,
    };
    for (src, pos) in srcs {
        if src.contains('$') || src.contains("://") || src.starts_with("<<") {
            continue;
        }
        let rel = rbuild_ignore::clean(src.trim_start_matches('/'));
        if rel == "." || rel.is_empty() {
            continue;
        }
        if m.excluded(&rel).is_some() {
            let cmd = if ins.keyword == crate::ast::Keyword::Add {
                "Add"
            } else {
                "Copy"
            };
            out.push(found(
                "CopyIgnoredFile",
                pos,
                format!("Attempting to {cmd} file {src:?} that is excluded by .dockerignore"),
            ));
        }
    }
}

fn is_abs_path(p: &str) -> bool {
    let b = p.as_bytes();
    p.starts_with('/')
        || p.starts_with('\\')
        || (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':')
}

/// FromPlatformFlagConstDisallowed's exception: a constant platform is fine when the stage's
/// name says which platform, OS or architecture it is for (`FROM --platform=linux/amd64 x AS
/// build_amd64`).
fn platform_in_name(platform: &str, name: Option<&str>) -> bool {
    let Some(name) = name else { return false };
    let name = name.to_lowercase();
    platform
        .split(['/', ','])
        .filter(|p| !p.is_empty())
        .any(|part| name.contains(&part.to_lowercase()))
}

/// For each line that starts an instruction, the last line of the comment block right above it
/// (no blank line between), `#` and surrounding spaces removed. Parser directives at the top
/// are not description comments.
fn preceding_comments(text: &str) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    let mut last: Option<String> = None;
    let mut in_directives = true;
    for (i, raw) in text.split('\n').enumerate() {
        let l = raw
            .trim_end_matches('\r')
            .trim_start_matches('\u{feff}')
            .trim();
        if let Some(c) = l.strip_prefix('#') {
            let is_directive = in_directives && {
                let c = c.trim_start();
                c.split_once('=').is_some_and(|(k, _)| {
                    let k = k.trim().to_ascii_lowercase();
                    matches!(k.as_str(), "syntax" | "escape" | "check")
                })
            };
            if !is_directive {
                in_directives = false;
                let c = c.trim();
                last = if c.is_empty() {
                    None
                } else {
                    Some(c.to_string())
                };
            }
            continue;
        }
        in_directives = false;
        if l.is_empty() {
            last = None;
            continue;
        }
        if let Some(c) = last.take() {
            out.insert(i as u32 + 1, c);
        }
    }
    out
}
