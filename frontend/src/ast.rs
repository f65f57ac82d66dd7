//! The syntax tree of a Dockerfile, before any variable expansion.
//!
//! Every node carries where it came from: an [`Instruction`] its [`Span`] (first and last physical
//! line, including continuation and heredoc lines), flags and words their [`Pos`].

pub use rbuild_ops::Span;

/// A 1-based line and column (column counts characters, not bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

/// A parsed Dockerfile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dockerfile {
    /// Parser directives found at the top (`syntax`, `escape`, `check`), keys lower-cased.
    pub directives: Vec<Directive>,
    /// The escape character in effect (`\` unless `# escape=` set a backtick).
    pub escape: char,
    pub instructions: Vec<Instruction>,
    /// What the parser read leniently, as BuildKit does, but tells the user about: an
    /// unterminated JSON array taken as shell form, blank lines inside a continuation
    /// (`NoEmptyContinuation`).
    pub warnings: Vec<crate::Warning>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub value: String,
    pub line: u32,
}

/// The 18 instructions of the Dockerfile language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Keyword {
    Add,
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    Stopsignal,
    User,
    Volume,
    Workdir,
}

impl Keyword {
    pub const ALL: [Keyword; 18] = [
        Keyword::Add,
        Keyword::Arg,
        Keyword::Cmd,
        Keyword::Copy,
        Keyword::Entrypoint,
        Keyword::Env,
        Keyword::Expose,
        Keyword::From,
        Keyword::Healthcheck,
        Keyword::Label,
        Keyword::Maintainer,
        Keyword::Onbuild,
        Keyword::Run,
        Keyword::Shell,
        Keyword::Stopsignal,
        Keyword::User,
        Keyword::Volume,
        Keyword::Workdir,
    ];

    /// Lower-case spelling, as in `parse --format json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Keyword::Add => "add",
            Keyword::Arg => "arg",
            Keyword::Cmd => "cmd",
            Keyword::Copy => "copy",
            Keyword::Entrypoint => "entrypoint",
            Keyword::Env => "env",
            Keyword::Expose => "expose",
            Keyword::From => "from",
            Keyword::Healthcheck => "healthcheck",
            Keyword::Label => "label",
            Keyword::Maintainer => "maintainer",
            Keyword::Onbuild => "onbuild",
            Keyword::Run => "run",
            Keyword::Shell => "shell",
            Keyword::Stopsignal => "stopsignal",
            Keyword::User => "user",
            Keyword::Volume => "volume",
            Keyword::Workdir => "workdir",
        }
    }

    /// Case-insensitive lookup.
    pub fn parse(word: &str) -> Option<Keyword> {
        let lower = word.to_ascii_lowercase();
        Keyword::ALL.into_iter().find(|k| k.as_str() == lower)
    }

    /// Upper-case spelling, as in messages and history.
    pub fn upper(self) -> String {
        self.as_str().to_ascii_uppercase()
    }

    /// The `--flags` BuildKit accepts for this instruction.
    pub fn allowed_flags(self) -> &'static [&'static str] {
        match self {
            Keyword::Copy => &["from", "chown", "chmod", "link", "parents", "exclude"],
            Keyword::Add => &[
                "chown",
                "chmod",
                "link",
                "checksum",
                "keep-git-dir",
                "unpack",
                "exclude",
            ],
            Keyword::Run => &["mount", "network", "security"],
            Keyword::From => &["platform"],
            Keyword::Healthcheck => &[
                "interval",
                "timeout",
                "start-period",
                "start-interval",
                "retries",
            ],
            _ => &[],
        }
    }
}

/// One `--name[=value]` flag, with quotes and escapes already removed (as BuildKit does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flag {
    pub name: String,
    /// `None` for a bare `--link`.
    pub value: Option<String>,
    /// The flag as BuildKit keeps it: `--name=value` (quotes removed).
    pub raw: String,
    pub pos: Pos,
}

/// A whitespace-delimited word, exactly as written (quotes kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub pos: Pos,
}

/// `ENV`/`LABEL` syntax: `k=v …` or the legacy `k v`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvForm {
    Equals,
    Legacy,
}

/// One `key=value` of ENV or LABEL; both raw (quotes kept), expanded by the planner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    pub pos: Pos,
}

/// One name of an `ARG` line, with its raw default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: String,
    pub default: Option<String>,
    pub pos: Pos,
}

/// A here-document attached to a RUN, COPY or ADD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter with quotes removed.
    pub name: String,
    /// The lines between the instruction and the delimiter, each with its `\n` (not chomped).
    pub content: String,
    /// False when the delimiter was quoted: no variable expansion of the content.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from every line.
    pub chomp: bool,
    /// The file descriptor number written before `<<` (0 when none).
    pub fd: u32,
}

impl Heredoc {
    /// The content as used: with leading tabs removed when `chomp` is set.
    pub fn effective_content(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        self.content
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect()
    }
}

/// The arguments of an instruction, in the shape its syntax gives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Nothing after the keyword (and flags).
    Empty,
    /// JSON (exec) form, decoded.
    Exec(Vec<String>),
    /// Shell form: the command text, continuations joined, trimmed.
    Shell(String),
    /// Whitespace-delimited words (FROM, EXPOSE, and COPY/ADD/VOLUME in shell form).
    Words(Vec<Word>),
    /// One string (USER, WORKDIR, MAINTAINER, STOPSIGNAL).
    Text(String),
    /// ENV, LABEL.
    KeyValues { form: KvForm, pairs: Vec<KeyValue> },
    /// ARG.
    Args(Vec<ArgDecl>),
    /// HEALTHCHECK: the type word (`CMD`, `NONE`, …) and the command after it.
    Healthcheck { kind: String, cmd: Box<Body> },
    /// ONBUILD's trigger instruction.
    OnBuild(Box<Instruction>),
}

/// One instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instruction {
    pub keyword: Keyword,
    /// Physical lines `start_line..=end_line`; `start_col` is the keyword's column.
    pub span: Span,
    /// The logical line after joining continuations (BuildKit's `Original`), without heredoc bodies.
    pub original: String,
    /// The text after the keyword and the flags (trimmed): what `args` are parsed from.
    pub rest: String,
    pub flags: Vec<Flag>,
    pub body: Body,
    pub heredocs: Vec<Heredoc>,
}

impl Instruction {
    /// All values of a flag, in order (`--mount`, `--exclude` may repeat).
    pub fn flag_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Flag> + 'a {
        self.flags.iter().filter(move |f| f.name == name)
    }

    /// The flag's value (last wins), if present.
    pub fn flag(&self, name: &str) -> Option<&Flag> {
        self.flags.iter().rev().find(|f| f.name == name)
    }

    /// Instruction text for display: keyword upper-cased, then the rest of the original line.
    pub fn display(&self) -> String {
        let t = self.original.trim();
        match t.split_once(|c: char| c.is_whitespace()) {
            Some((_, rest)) => format!("{} {}", self.keyword.upper(), rest.trim()),
            None => self.keyword.upper(),
        }
    }

    /// The position of the instruction's keyword.
    pub fn pos(&self) -> Pos {
        Pos {
            line: self.span.start_line,
            col: self.span.start_col,
        }
    }
}
