//! The parser: logical lines to [`Instruction`]s, with BuildKit's per-instruction argument rules
//! (JSON-or-shell forms, whitespace lists, ENV/LABEL pairs, ARG declarations, HEALTHCHECK, ONBUILD),
//! flag checking, and heredoc bodies.

use crate::ast::*;
use crate::error::{suggest, ErrorKind, FrontendError};
use crate::lexer::{LogicalLine, Scanner};
use crate::warning::Warning;
use crate::words::{self, extract_flags, heredoc_marker, parse_words, raw_shell_words};

/// Parse a Dockerfile. `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Dockerfile, FrontendError> {
    let mut df = parse_inner(text).map_err(|e| e.located_in(file, text))?;
    df.warnings = std::mem::take(&mut df.warnings)
        .into_iter()
        .map(|w| w.located_in(file, text))
        .collect();
    Ok(df)
}

fn parse_inner(text: &str) -> Result<Dockerfile, FrontendError> {
    let mut scanner = Scanner::new(text)?;
    let directives = scanner.directives()?;
    let escape = scanner.escape;
    let mut instructions = Vec::new();
    let mut warnings = Vec::new();
    while let Some(line) = scanner.next_logical() {
        let mut ins = parse_line(&line, 0, escape, false, &mut warnings)?;
        if !line.empty_continuations.is_empty() {
            let mut w = Warning::new(
                ins.span.start_line,
                ins.span.start_col,
                "Empty continuation line",
            );
            w.rule = Some("NoEmptyContinuation");
            w.url = Some(crate::lint::rule_url("NoEmptyContinuation"));
            warnings.push(w);
        }
        read_heredocs(&mut ins, &mut scanner)?;
        instructions.push(ins);
    }
    if instructions.is_empty() {
        return Err(FrontendError::new(
            ErrorKind::Syntax,
            scanner.line_no().saturating_sub(1).max(1),
            1,
            "file with no instructions",
        )
        .with_hint("a Dockerfile starts with FROM, e.g. `FROM busybox`"));
    }
    Ok(Dockerfile {
        directives,
        escape,
        instructions,
        warnings,
    })
}

fn err(kind: ErrorKind, pos: Pos, msg: impl Into<String>) -> FrontendError {
    FrontendError::new(kind, pos.line, pos.col, msg)
}

/// Keywords, upper-case, for "did you mean".
fn keyword_names() -> Vec<&'static str> {
    [
        "ADD",
        "ARG",
        "CMD",
        "COPY",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "FROM",
        "HEALTHCHECK",
        "LABEL",
        "MAINTAINER",
        "ONBUILD",
        "RUN",
        "SHELL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    ]
    .to_vec()
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{b}' | '\u{c}' | '\r' | '\n')
}

/// Parse the instruction that starts at byte `start` of `line.text`.
fn parse_line(
    line: &LogicalLine,
    start: usize,
    escape: char,
    nested: bool,
    warnings: &mut Vec<Warning>,
) -> Result<Instruction, FrontendError> {
    let text = &line.text;
    let kw_off = start + (text[start..].len() - text[start..].trim_start_matches(is_ws).len());
    let kw_end = text[kw_off..]
        .find(is_ws)
        .map(|i| kw_off + i)
        .unwrap_or(text.len());
    let word = &text[kw_off..kw_end];
    let kw_pos = line.pos(kw_off);
    let keyword = Keyword::parse(word).ok_or_else(|| {
        let e = err(
            ErrorKind::UnknownInstruction,
            kw_pos,
            format!("unknown instruction: {}", word.to_uppercase()),
        );
        match suggest(word, &keyword_names()) {
            Some(s) => e.with_hint(format!("did you mean {s}?")),
            None => e,
        }
    })?;
    let (raw_flags, flags_end) = extract_flags(&text[kw_end..]);
    let flags = check_flags(keyword, &raw_flags, |o| line.pos(kw_end + o))?;
    let args_off = kw_end + flags_end;
    let args_trim = text[args_off..].trim_start_matches(is_ws);
    let rest_off = text.len() - args_trim.len();
    let rest = args_trim.trim_end_matches(is_ws).to_string();
    let rest_pos = line.pos(rest_off);
    let word_list = |r: &str, base: usize| -> Vec<Word> {
        words::split_whitespace(r)
            .into_iter()
            .map(|w| Word {
                pos: line.pos(base + w.offset),
                text: w.text,
            })
            .collect()
    };
    let name = keyword.upper();
    let body = match keyword {
        Keyword::Run | Keyword::Cmd | Keyword::Entrypoint | Keyword::Shell => {
            maybe_json(&rest, rest_pos, warnings)?.unwrap_or_else(|| Body::Shell(rest.clone()))
        }
        Keyword::Copy | Keyword::Add | Keyword::Volume => {
            match maybe_json(&rest, rest_pos, warnings)? {
                Some(b) => b,
                None => Body::Words(word_list(&rest, rest_off)),
            }
        }
        Keyword::From | Keyword::Expose => Body::Words(word_list(&rest, rest_off)),
        Keyword::Env | Keyword::Label => name_val(&rest, rest_off, line, escape, &name)?,
        Keyword::Arg => Body::Args(
            parse_words(&rest, escape)
                .into_iter()
                .map(|w| {
                    let (n, v) = match w.text.split_once('=') {
                        Some((n, v)) => (n.to_string(), Some(v.to_string())),
                        None => (w.text.clone(), None),
                    };
                    ArgDecl {
                        name: n,
                        default: v,
                        pos: line.pos(rest_off + w.offset),
                    }
                })
                .collect(),
        ),
        Keyword::Maintainer | Keyword::User | Keyword::Workdir | Keyword::Stopsignal => {
            Body::Text(rest.clone())
        }
        Keyword::Healthcheck => {
            let kind_end = rest.find(is_ws).unwrap_or(rest.len());
            let kind = rest[..kind_end].to_string();
            let cmd_text = rest[kind_end..].trim_start_matches(is_ws);
            let cmd_off = rest_off + (rest.len() - cmd_text.len());
            let cmd = if cmd_text.is_empty() {
                Body::Empty
            } else {
                maybe_json(cmd_text, line.pos(cmd_off), warnings)?
                    .unwrap_or_else(|| Body::Shell(cmd_text.to_string()))
            };
            if kind.is_empty() {
                Body::Empty
            } else {
                Body::Healthcheck {
                    kind,
                    cmd: Box::new(cmd),
                }
            }
        }
        Keyword::Onbuild => {
            if nested {
                return Err(err(
                    ErrorKind::Invalid,
                    kw_pos,
                    "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                ));
            }
            if rest.is_empty() {
                Body::Empty
            } else {
                let inner = parse_line(line, rest_off, escape, true, warnings)?;
                if matches!(inner.keyword, Keyword::From | Keyword::Maintainer) {
                    return Err(err(
                        ErrorKind::Invalid,
                        inner.pos(),
                        format!(
                            "{} isn't allowed as an ONBUILD trigger",
                            inner.keyword.upper()
                        ),
                    ));
                }
                Body::OnBuild(Box::new(inner))
            }
        }
    };
    let body = if rest.is_empty() && !matches!(body, Body::OnBuild(_)) {
        Body::Empty
    } else {
        body
    };
    let ins = Instruction {
        keyword,
        span: Span {
            start_line: kw_pos.line,
            start_col: kw_pos.col,
            end_line: line.end_line,
            end_col: line.end_col,
        },
        original: text[start..].trim().to_string(),
        rest,
        flags,
        body,
        heredocs: Vec::new(),
    };
    check_arity(&ins, rest_pos)?;
    Ok(ins)
}

const SLICE_FLAGS: &[&str] = &["mount", "exclude"];
const BOOL_FLAGS: &[&str] = &["link", "keep-git-dir", "unpack", "parents"];

fn check_flags(
    keyword: Keyword,
    raw: &[words::RawWord],
    pos: impl Fn(usize) -> Pos,
) -> Result<Vec<Flag>, FrontendError> {
    let allowed = keyword.allowed_flags();
    let mut out: Vec<Flag> = Vec::new();
    for w in raw {
        let p = pos(w.offset);
        let Some(body) = w.text.strip_prefix("--") else {
            return Err(err(
                ErrorKind::Flag,
                p,
                format!("arg should start with -- : {}", w.text),
            ));
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (body.to_string(), None),
        };
        if !allowed.contains(&name.as_str()) {
            let mut e = err(
                ErrorKind::Flag,
                p,
                format!("unknown flag: --{name} for {}", keyword.upper()),
            );
            if let Some(s) = suggest(&name, allowed) {
                e = e.with_hint(format!("did you mean --{s}?"));
            } else if allowed.is_empty() {
                e = e.with_hint(format!("{} takes no flags", keyword.upper()));
            }
            return Err(e);
        }
        let is_bool = BOOL_FLAGS.contains(&name.as_str());
        if is_bool {
            if let Some(v) = &value {
                if !matches!(v.to_ascii_lowercase().as_str(), "true" | "false") {
                    return Err(err(
                        ErrorKind::Flag,
                        p,
                        format!("expecting boolean value for flag --{name}, not: {v}"),
                    ));
                }
            }
        } else if value.is_none() {
            return Err(err(
                ErrorKind::Flag,
                p,
                format!("missing a value on flag: --{name}"),
            )
            .with_hint(format!("write --{name}=VALUE")));
        }
        if !SLICE_FLAGS.contains(&name.as_str()) && out.iter().any(|f| f.name == name) {
            return Err(err(
                ErrorKind::Flag,
                p,
                format!("duplicate flag specified: --{name}"),
            ));
        }
        out.push(Flag {
            raw: w.text.clone(),
            name,
            value,
            pos: p,
        });
    }
    Ok(out)
}

/// BuildKit's `parseJSON` with its fallback: `Ok(None)` means "not JSON, use shell form".
/// Only an array with a non-string element is an error; anything else that is not a JSON array
/// of strings is shell form — with a warning when it looks like an exec form left unterminated.
fn maybe_json(
    rest: &str,
    pos: Pos,
    warnings: &mut Vec<Warning>,
) -> Result<Option<Body>, FrontendError> {
    if !rest.starts_with('[') {
        return Ok(None);
    }
    match serde_json::from_str::<serde_json::Value>(rest) {
        Ok(serde_json::Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                match it {
                    serde_json::Value::String(s) => out.push(s),
                    _ => {
                        return Err(err(
                            ErrorKind::Syntax,
                            pos,
                            "when using JSON array syntax, arrays can only contain strings",
                        ))
                    }
                }
            }
            Ok(Some(Body::Exec(out)))
        }
        Ok(_) => Ok(None),
        Err(e) => {
            if e.is_eof() && rest.trim_start_matches('[').trim_start().starts_with('"') {
                warnings.push(Warning::new(
                    pos.line,
                    pos.col,
                    "unterminated JSON array: run as shell form, as BuildKit does; close the \
                     array with `]` for exec form",
                ));
            }
            Ok(None)
        }
    }
}

fn name_val(
    rest: &str,
    rest_off: usize,
    line: &LogicalLine,
    escape: char,
    name: &str,
) -> Result<Body, FrontendError> {
    let rest_pos = line.pos(rest_off);
    let ws = parse_words(rest, escape);
    let Some(first) = ws.first() else {
        return Ok(Body::Empty);
    };
    if !first.text.contains('=') {
        let parts = words::split_whitespace(rest);
        let Some(second) = parts.get(1) else {
            return Err(err(
                ErrorKind::Syntax,
                rest_pos,
                format!("{name} must have two arguments"),
            )
            .with_hint(format!("write {name} {}=VALUE", first.text)));
        };
        return Ok(Body::KeyValues {
            form: KvForm::Legacy,
            pairs: vec![KeyValue {
                key: parts[0].text.clone(),
                value: rest[second.offset..].to_string(),
                pos: rest_pos,
            }],
        });
    }
    let mut pairs = Vec::new();
    for w in ws {
        let pos = line.pos(rest_off + w.offset);
        let Some((k, v)) = w.text.split_once('=') else {
            return Err(err(
                ErrorKind::Syntax,
                pos,
                format!(
                    "Syntax error - can't find = in {:?}. Must be of the form: name=value",
                    w.text
                ),
            ));
        };
        if k.is_empty() {
            return Err(err(
                ErrorKind::Syntax,
                pos,
                format!("{name} names can not be blank"),
            ));
        }
        pairs.push(KeyValue {
            key: k.to_string(),
            value: v.to_string(),
            pos,
        });
    }
    Ok(Body::KeyValues {
        form: KvForm::Equals,
        pairs,
    })
}

fn valid_stage_name(n: &str) -> bool {
    let n = n.to_ascii_lowercase();
    let mut cs = n.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_lowercase())
        && cs.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// Argument-count rules BuildKit applies when it turns nodes into instructions.
fn check_arity(ins: &Instruction, rest_pos: Pos) -> Result<(), FrontendError> {
    let name = ins.keyword.upper();
    let at = |m: String| err(ErrorKind::Syntax, rest_pos, m);
    let empty = matches!(ins.body, Body::Empty)
        || matches!(&ins.body, Body::Exec(v) if v.is_empty() && ins.keyword == Keyword::Run);
    match ins.keyword {
        Keyword::Cmd | Keyword::Entrypoint => {
            if matches!(ins.body, Body::Empty) {
                return Err(at(format!("{name} requires at least one argument"))
                    .with_hint(format!("write {name} [] to clear it")));
            }
        }
        Keyword::Env if empty => {
            return Err(
                at("ENV requires at least one argument".into()).with_hint("write ENV NAME=value")
            );
        }
        Keyword::Copy | Keyword::Add => {
            let n = match &ins.body {
                Body::Words(w) => w.len(),
                Body::Exec(v) => v.len(),
                _ => 0,
            };
            if n < 2 {
                return Err(at(format!(
                    "{name} requires at least two arguments, but only {n} {} provided. Destination could not be determined",
                    if n == 1 { "was" } else { "were" }
                ))
                .with_hint(format!("write {name} SOURCE... DEST")));
            }
        }
        Keyword::From => {
            let Body::Words(w) = &ins.body else {
                return Err(at("FROM requires either one or three arguments".into())
                    .with_hint("write FROM image [AS name]"));
            };
            if w.len() != 1 && w.len() != 3 {
                return Err(at("FROM requires either one or three arguments".into())
                    .with_hint("write FROM image [AS name]"));
            }
            if w.len() == 3 {
                if !w[1].text.eq_ignore_ascii_case("as") {
                    return Err(err(
                        ErrorKind::Syntax,
                        w[1].pos,
                        format!("FROM's second argument must be AS, not {:?}", w[1].text),
                    ));
                }
                if !valid_stage_name(&w[2].text) {
                    return Err(err(
                        ErrorKind::Syntax,
                        w[2].pos,
                        format!(
                            "invalid name for build stage: {:?}, name can't start with a number or contain symbols",
                            w[2].text
                        ),
                    ));
                }
            }
        }
        Keyword::Shell => match &ins.body {
            Body::Exec(v) if !v.is_empty() => {}
            Body::Exec(_) => return Err(at("SHELL requires at least one argument".into())),
            _ => {
                return Err(at("SHELL requires the arguments to be in JSON form".into())
                    .with_hint(r#"write SHELL ["/bin/bash", "-c"]"#))
            }
        },
        Keyword::Onbuild if empty => {
            return Err(at("ONBUILD requires at least one argument".into()))
        }
        Keyword::Healthcheck if empty => {
            return Err(at("HEALTHCHECK requires at least one argument".into())
                .with_hint("write HEALTHCHECK CMD command, or HEALTHCHECK NONE"))
        }
        Keyword::Workdir | Keyword::User | Keyword::Stopsignal | Keyword::Maintainer if empty => {
            return Err(at(format!("{name} requires exactly one argument")))
        }
        Keyword::Run | Keyword::Label | Keyword::Expose | Keyword::Volume | Keyword::Arg
            if empty =>
        {
            return Err(at(format!("{name} requires at least one argument")))
        }
        _ => {}
    }
    Ok(())
}

/// After a RUN/COPY/ADD (or ONBUILD of one) in shell form containing `<<`, read its heredoc bodies.
fn read_heredocs(ins: &mut Instruction, scanner: &mut Scanner<'_>) -> Result<(), FrontendError> {
    let start_line = ins.span.start_line;
    let target: &mut Instruction = match &mut ins.body {
        Body::OnBuild(inner) => inner,
        _ => ins,
    };
    if !matches!(target.keyword, Keyword::Run | Keyword::Copy | Keyword::Add)
        || matches!(target.body, Body::Exec(_))
        || !target.rest.contains("<<")
    {
        return Ok(());
    }
    let mut end = None;
    for w in raw_shell_words(&target.rest) {
        let Some(m) = heredoc_marker(&w.text) else {
            continue;
        };
        let Some((content, term_line)) = scanner.heredoc_body(&m.name, m.chomp) else {
            return Err(FrontendError::new(
                ErrorKind::Syntax,
                start_line,
                target.span.start_col,
                format!("unterminated heredoc {:?}", m.name),
            )
            .with_hint(format!(
                "end the here-document with a line containing only {}",
                m.name
            )));
        };
        end = Some(term_line);
        target.heredocs.push(Heredoc {
            name: m.name,
            content,
            expand: m.expand,
            chomp: m.chomp,
            fd: m.fd,
        });
    }
    if let Some(l) = end {
        let col = scanner.line_chars(l);
        ins.span.end_line = l;
        ins.span.end_col = col;
        if let Body::OnBuild(inner) = &mut ins.body {
            inner.span.end_line = l;
            inner.span.end_col = col;
        }
    }
    Ok(())
}

/// Parse a single instruction given as text (an ONBUILD trigger from a base image's config).
pub(crate) fn parse_trigger(text: &str, escape: char) -> Result<Instruction, FrontendError> {
    let mut scanner = Scanner::new(text)?;
    scanner.escape = escape;
    let line = scanner
        .next_logical()
        .ok_or_else(|| FrontendError::new(ErrorKind::Syntax, 1, 1, "empty ONBUILD trigger"))?;
    let mut ins = parse_line(&line, 0, escape, false, &mut Vec::new())?;
    read_heredocs(&mut ins, &mut scanner)?;
    Ok(ins)
}
