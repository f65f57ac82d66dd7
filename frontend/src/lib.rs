//! # rbuild-frontend — Dockerfile to BuildGraph
//!
//! The Dockerfile language, from text to the build graph the solver runs:
//!
//! 1. [`parse`] — a hand-written lexer ([`lexer`]: BOM, CRLF, parser directives, continuations,
//!    comments, heredoc bodies) and parser ([`parser`]) producing a [`Dockerfile`] of
//!    [`Instruction`]s, each with a [`Span`] (lines and columns). Nothing is expanded yet;
//!    [`to_json`] prints this tree for tools (`rbuild parse --format json`).
//! 2. [`expand`] — BuildKit's shell-word expansion (`$v`, `${v:-w}`, quotes, escapes).
//! 3. [`plan()`] — stages, ARG/ENV scoping, `--target`, ONBUILD triggers, and every instruction's
//!    meaning: a [`rbuild_ops::BuildDefinition`] (the graph of ops, the final image config, history).
//!
//! Every error is a [`FrontendError`] located at `file:line:column`, whose
//! [`render`](FrontendError::render) shows the line and a caret, plus a hint where one helps.
//!
//! What it is not: it does no I/O beyond the text it is given — it never reads the context, touches
//! the store or runs anything. Base images are learned through the caller's
//! [`rbuild_ops::ImageResolver`].

pub mod ast;
mod error;
pub mod expand;
mod json;
pub mod lexer;
pub mod lint;
pub mod parser;
mod plan;
mod warning;
mod words;

pub use ast::{Body, Dockerfile, Heredoc, Instruction, Keyword, Span};
pub use error::{ErrorKind, FrontendError};
pub use json::{instruction_to_json, to_json};
pub use parser::parse;
pub use plan::{plan, plan_checked, Checked, NamedContext, PlanOptions};
pub use warning::Warning;
