//! The planner: a parsed [`Dockerfile`] to a [`BuildDefinition`].
//!
//! Order of work, as BuildKit's `dockerfile2llb`: global ARGs (before the first FROM) → stages and
//! their base names (expanded with the global ARGs) → dependencies between stages (FROM, `COPY
//! --from`, `RUN --mount from=`) → the stages the target reaches, dependencies first (cycles are
//! errors) → each stage's instructions dispatched in order ([`stage`]).

mod gofmt;
mod mounts;
mod stage;
mod vars;

use crate::ast::{Body, Dockerfile, Instruction, Keyword, Pos};
use crate::error::{suggest, ErrorKind, FrontendError};
use crate::expand::Lexer;
use rbuild_oci::Platform;
use rbuild_ops::{
    BuildDefinition, BuildGraph, ImageResolver, ImageTarget, ResolvedImage, SourceFile, VertexId,
};
use stage::StageResult;
use std::collections::BTreeMap;
use std::sync::Arc;
use vars::GlobalArgs;

/// A `--build-context NAME=…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory (the caller knows where); becomes `Source::Context { name: NAME }`.
    Local,
    /// An image reference (`docker-image://REF`), resolved through the resolver.
    Image(String),
}

/// Everything [`plan`] needs besides the resolver.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    /// The Dockerfile's name, for errors (`Dockerfile`, `build/Containerfile`).
    pub dockerfile_name: String,
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// The text of the `.dockerignore` in effect (the caller picks `<Dockerfile>.dockerignore`
    /// over `.dockerignore`).
    pub dockerignore: Option<String>,
    /// `--build-arg`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to build (default: the last).
    pub target: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--no-cache-filter`: stage names whose steps must not reuse cache.
    pub no_cache_filter: Vec<String>,
    /// `--label`: set on the image after everything else.
    pub labels: BTreeMap<String, String>,
    /// The platform built for (TARGETPLATFORM; the host's by default). A stage runs on it unless
    /// its `FROM --platform` (or the stage it is based on) says otherwise.
    pub platform: Platform,
    /// `--build-context`.
    pub build_contexts: BTreeMap<String, NamedContext>,
    /// The `.dockerignore` text of each local named context that has one (BuildKit reads a
    /// local named context's own `.dockerignore`).
    pub named_dockerignore: BTreeMap<String, String>,
}

impl PlanOptions {
    /// Options for `text` named `name`, everything else default, for the host platform.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        PlanOptions {
            dockerfile_name: name.into(),
            dockerfile: text.into(),
            dockerignore: None,
            build_args: BTreeMap::new(),
            target: None,
            no_cache: false,
            no_cache_filter: Vec::new(),
            labels: BTreeMap::new(),
            platform: Platform::host(),
            build_contexts: BTreeMap::new(),
            named_dockerignore: BTreeMap::new(),
        }
    }
}

/// Plan a build: parse the Dockerfile, resolve base images through `resolver` (once per distinct
/// reference), and produce the graph, the final image config and its history.
pub fn plan(
    opts: &PlanOptions,
    resolver: &dyn ImageResolver,
) -> Result<BuildDefinition, FrontendError> {
    let df = crate::parse(&opts.dockerfile_name, &opts.dockerfile)?;
    plan_parsed(opts, &df, resolver, &mut Vec::new())
        .map_err(|e| e.located_in(&opts.dockerfile_name, &opts.dockerfile))
}

/// A plan with its build checks: see [`plan_checked`].
#[derive(Debug)]
pub struct Checked {
    /// The plan, or why there is none (a stage that cannot be resolved, a bad flag value, …).
    pub definition: Result<BuildDefinition, FrontendError>,
    /// Build-check warnings (and parser warnings), ordered by line, configured by the `check`
    /// directive or the `BUILDKIT_DOCKERFILE_CHECK` build arg. Those found before a planning
    /// error are kept.
    pub warnings: Vec<crate::Warning>,
}

impl Checked {
    /// The rules that are violated as errors (`check=error=true`), sorted and deduplicated.
    pub fn error_rules(&self) -> Vec<&'static str> {
        let mut r: Vec<&'static str> = self
            .warnings
            .iter()
            .filter(|w| w.is_error)
            .filter_map(|w| w.rule)
            .collect();
        r.sort_unstable();
        r.dedup();
        r
    }
}

/// [`plan`] plus the build checks ([`crate::lint`]). Only a syntax error or a malformed check
/// configuration is an `Err`; a planning error is in [`Checked::definition`], next to the
/// warnings found up to it.
pub fn plan_checked(
    opts: &PlanOptions,
    resolver: &dyn ImageResolver,
) -> Result<Checked, FrontendError> {
    let (name, text) = (&opts.dockerfile_name, &opts.dockerfile);
    let df = crate::parse(name, text)?;
    let config = crate::lint::CheckConfig::for_build(&df, &opts.build_args)
        .map_err(|e| e.located_in(name, text))?;
    let mut found =
        crate::lint::static_checks(&df, text, &opts.build_args, opts.dockerignore.as_deref());
    let definition =
        plan_parsed(opts, &df, resolver, &mut found).map_err(|e| e.located_in(name, text));
    let warnings = crate::lint::finish(&df, found, &config, name, text);
    Ok(Checked {
        definition,
        warnings,
    })
}

/// A stage as written: its FROM and its instructions.
pub(crate) struct StageDef<'d> {
    pub from: &'d Instruction,
    pub name: Option<String>,
    pub instructions: Vec<&'d Instruction>,
}

/// Where a stage's base, a `COPY --from` or a mount `from=` points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ref {
    Scratch,
    Stage(usize),
    Named(String),
    Image(String),
}

/// DFS frame: a stage, its dependencies (with where they are referenced), the next one to visit.
type Frame = (usize, Vec<(usize, Pos)>, usize);

pub(crate) struct Planner<'a, 'd> {
    pub opts: &'a PlanOptions,
    pub resolver: &'a dyn ImageResolver,
    pub lexer: Lexer,
    pub escape: char,
    pub graph: BuildGraph,
    pub stages: Vec<StageDef<'d>>,
    pub results: Vec<Option<StageResult>>,
    pub global: GlobalArgs,
    pub resolved: BTreeMap<String, ResolvedImage>,
    pub context_vertex: Option<VertexId>,
    pub named_vertices: BTreeMap<String, VertexId>,
    pub excludes: Vec<String>,
    /// Build-check findings made while planning (`UndefinedVar`, `InvalidBaseImagePlatform`).
    pub found: std::cell::RefCell<Vec<crate::lint::Found>>,
    /// Each planned stage's platform (normal form).
    pub stage_platforms: Vec<Option<Platform>>,
}

fn plan_parsed(
    opts: &PlanOptions,
    df: &Dockerfile,
    resolver: &dyn ImageResolver,
    found: &mut Vec<crate::lint::Found>,
) -> Result<BuildDefinition, FrontendError> {
    let lexer = Lexer::new(df.escape);
    let mut global = GlobalArgs::new(&Platform::host(), &opts.platform);
    let mut stages: Vec<StageDef<'_>> = Vec::new();
    for ins in &df.instructions {
        if ins.keyword == Keyword::From {
            let Body::Words(w) = &ins.body else {
                continue; // the parser guarantees words
            };
            let name = w.get(2).map(|n| n.text.to_ascii_lowercase());
            if let Some(n) = &name {
                if let Some(prev) = stages.iter().find(|s| s.name.as_deref() == Some(n)) {
                    return Err(FrontendError::new(
                        ErrorKind::Stage,
                        w[2].pos.line,
                        w[2].pos.col,
                        format!(
                            "duplicate stage name {n:?} (first defined on line {})",
                            prev.from.span.start_line
                        ),
                    ));
                }
            }
            stages.push(StageDef {
                from: ins,
                name,
                instructions: Vec::new(),
            });
        } else if let Some(st) = stages.last_mut() {
            st.instructions.push(ins);
        } else if ins.keyword == Keyword::Arg {
            global.declare(ins, &lexer, &opts.build_args)?;
        } else {
            let p = ins.pos();
            return Err(FrontendError::new(
                ErrorKind::Invalid,
                p.line,
                p.col,
                format!(
                    "{} before the first FROM: no build stage in current context",
                    ins.keyword.upper()
                ),
            )
            .with_hint("only ARG may come before the first FROM"));
        }
    }
    if stages.is_empty() {
        return Err(FrontendError::new(
            ErrorKind::Invalid,
            df.instructions.last().map(|i| i.span.end_line).unwrap_or(1),
            1,
            "no FROM instruction: a Dockerfile needs at least one build stage",
        )
        .with_hint("add `FROM <image>` (or `FROM scratch`)"));
    }
    let excludes = opts
        .dockerignore
        .as_deref()
        .map(dockerignore_patterns)
        .unwrap_or_default();
    let n = stages.len();
    let mut p = Planner {
        opts,
        resolver,
        lexer,
        escape: df.escape,
        graph: BuildGraph::new(),
        stages,
        results: (0..n).map(|_| None).collect(),
        global,
        resolved: BTreeMap::new(),
        context_vertex: None,
        named_vertices: BTreeMap::new(),
        excludes,
        found: std::cell::RefCell::new(Vec::new()),
        stage_platforms: vec![None; n],
    };
    let target = p.target_index()?;
    let order = p.build_order(target)?;
    for i in order {
        let r = p.plan_stage(i);
        found.append(&mut p.found.borrow_mut());
        p.results[i] = Some(r?);
    }
    let Some(result) = p.results[target].take() else {
        return Err(FrontendError::new(
            ErrorKind::Stage,
            1,
            1,
            "internal error: target stage was not planned",
        ));
    };
    let mut config = result.config;
    for (k, v) in &opts.labels {
        config.config.labels.insert(k.clone(), v.clone());
    }
    // The image is of the target stage's platform (its `FROM --platform`, else the target's).
    let platform = p.stage_platforms[target]
        .clone()
        .unwrap_or_else(|| opts.platform.normalized());
    config.architecture = platform.architecture.clone();
    config.os = platform.os.clone();
    config.variant = platform.variant.clone();
    Ok(BuildDefinition {
        graph: p.graph,
        target: ImageTarget {
            root: result.vertex,
            config,
            history: result.history,
        },
        source: Some(SourceFile {
            name: opts.dockerfile_name.clone(),
            text: Arc::from(opts.dockerfile.as_str()),
        }),
    })
}

/// The patterns of a `.dockerignore`, in file order: comments and blank lines dropped, whitespace
/// trimmed (matching is the ignore crate's job).
fn dockerignore_patterns(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

impl<'a, 'd> Planner<'a, 'd> {
    fn target_index(&self) -> Result<usize, FrontendError> {
        let Some(t) = &self.opts.target else {
            return Ok(self.stages.len() - 1);
        };
        let lower = t.to_ascii_lowercase();
        if let Some(i) = self
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            return Ok(i);
        }
        let names: Vec<&str> = self
            .stages
            .iter()
            .filter_map(|s| s.name.as_deref())
            .collect();
        let mut e = FrontendError::new(
            ErrorKind::Stage,
            1,
            1,
            format!("target stage {t:?} could not be found"),
        );
        e = match suggest(&lower, &names) {
            Some(s) => e.with_hint(format!("did you mean {s}?")),
            None if names.is_empty() => {
                e.with_hint("no stage has a name; name one with FROM image AS name")
            }
            None => e.with_hint(format!("stages: {}", names.join(", "))),
        };
        Err(e)
    }

    /// Resolve a `--from` / base name (already expanded) to a stage, named context or image.
    /// `for_from`: FROM may only name earlier stages and never an index.
    pub fn resolve_ref(&self, name: &str, current: usize, for_from: bool) -> Ref {
        let lower = name.to_ascii_lowercase();
        if for_from && lower == "scratch" {
            return Ref::Scratch;
        }
        let limit = if for_from { current } else { self.stages.len() };
        if let Some(i) = self.stages[..limit]
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            return Ref::Stage(i);
        }
        if !for_from {
            if let Ok(i) = name.parse::<usize>() {
                return Ref::Stage(i);
            }
        }
        if self.opts.build_contexts.contains_key(name) {
            return Ref::Named(name.to_string());
        }
        Ref::Image(name.to_string())
    }

    /// Expand a word with the global ARGs only (FROM, `--from`, `--platform`).
    pub fn expand_global(&self, word: &str, pos: Pos) -> Result<String, FrontendError> {
        let env = |k: &str| self.global.get(k);
        self.lexer
            .process_word(word, &env)
            .map_err(|e| vars::expand_error(e, pos))
    }

    /// The stages `stage` depends on, with the position of the reference.
    fn deps(&self, stage: usize) -> Result<Vec<(usize, Pos)>, FrontendError> {
        let st = &self.stages[stage];
        let mut out = Vec::new();
        if let Body::Words(w) = &st.from.body {
            let base = self.expand_global(&w[0].text, w[0].pos)?;
            if let Ref::Stage(i) = self.resolve_ref(&base, stage, true) {
                out.push((i, w[0].pos));
            }
        }
        for ins in &st.instructions {
            let ins: &Instruction = match &ins.body {
                Body::OnBuild(_) => continue,
                _ => ins,
            };
            let mut froms: Vec<(String, Pos)> = Vec::new();
            if ins.keyword == Keyword::Copy {
                if let Some(f) = ins.flag("from") {
                    froms.push((f.value.clone().unwrap_or_default(), f.pos));
                }
            }
            if ins.keyword == Keyword::Run {
                for f in ins.flag_values("mount") {
                    let v = f.value.as_deref().unwrap_or_default();
                    if let Ok(m) = mounts::parse_mount(v, &|s| Ok(s.to_string())) {
                        if let Some(from) = m.from {
                            froms.push((from, f.pos));
                        }
                    }
                }
            }
            for (raw, pos) in froms {
                let v = self.expand_global(&raw, pos)?;
                match self.resolve_ref(&v, stage, false) {
                    Ref::Stage(i) if i >= self.stages.len() => {
                        return Err(FrontendError::new(
                            ErrorKind::Stage,
                            pos.line,
                            pos.col,
                            format!(
                                "invalid stage index {i}: the Dockerfile has {} stages (0 to {})",
                                self.stages.len(),
                                self.stages.len() - 1
                            ),
                        ))
                    }
                    Ref::Stage(i) => out.push((i, pos)),
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// Stages reachable from `target`, each after the stages it depends on. A cycle is an error.
    fn build_order(&self, target: usize) -> Result<Vec<usize>, FrontendError> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        let mut marks = vec![Mark::New; self.stages.len()];
        let mut order = Vec::new();
        // Explicit stack: (stage, its deps, next dep index).
        let mut stack: Vec<Frame> = Vec::new();
        marks[target] = Mark::Active;
        stack.push((target, self.deps(target)?, 0));
        while let Some((s, deps, i)) = stack.last_mut() {
            let s = *s;
            if *i >= deps.len() {
                marks[s] = Mark::Done;
                order.push(s);
                stack.pop();
                continue;
            }
            let (d, pos) = deps[*i];
            *i += 1;
            match marks[d] {
                Mark::Done => {}
                Mark::Active => {
                    return Err(FrontendError::new(
                        ErrorKind::Stage,
                        pos.line,
                        pos.col,
                        format!(
                            "circular dependency detected on stage: {}",
                            self.stage_label(d)
                        ),
                    ))
                }
                Mark::New => {
                    marks[d] = Mark::Active;
                    let dd = self.deps(d)?;
                    stack.push((d, dd, 0));
                }
            }
        }
        Ok(order)
    }

    pub fn stage_label(&self, i: usize) -> String {
        self.stages[i]
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{i}"))
    }
}
