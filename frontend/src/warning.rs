//! [`Warning`]: something worth telling the user about a Dockerfile that still builds — a build
//! check ([`crate::lint`]) or a parser fallback (an unterminated JSON array read as shell form).

use std::fmt;

/// A warning located at `file:line:column`, rendered like a [`crate::FrontendError`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The build check's name (`FromAsCasing`, …) as BuildKit spells it; `None` for a parser
    /// warning that is no build check.
    pub rule: Option<&'static str>,
    pub message: String,
    /// The rule's documentation.
    pub url: Option<String>,
    /// The Dockerfile's name as given.
    pub file: String,
    pub line: u32,
    pub column: u32,
    /// The text of the line, when known.
    pub line_text: Option<String>,
    /// Whether the `check=error=true` directive (or build arg) makes this warning fail the build.
    pub is_error: bool,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        match self.rule {
            Some(r) => write!(f, "{r}: {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

impl Warning {
    pub(crate) fn new(line: u32, column: u32, message: impl Into<String>) -> Self {
        Warning {
            rule: None,
            message: message.into(),
            url: None,
            file: String::new(),
            line,
            column: column.max(1),
            line_text: None,
            is_error: false,
        }
    }

    /// Fill in the file name and the quoted line from the Dockerfile's text, if not already set.
    pub(crate) fn located_in(mut self, file: &str, text: &str) -> Self {
        if self.file.is_empty() {
            self.file = file.to_string();
        }
        if self.line_text.is_none() {
            self.line_text = crate::error::line_of(text, self.line);
        }
        self
    }

    /// The warning as a user sees it:
    ///
    /// ```text
    /// Dockerfile:1:13: warning: FromAsCasing: 'as' and 'FROM' keywords' casing do not match
    ///  1 | FROM alpine as build
    ///    |             ^
    /// see https://docs.docker.com/go/dockerfile/rule/from-as-casing/
    /// ```
    ///
    /// (`error:` instead of `warning:` when [`Warning::is_error`].)
    pub fn render(&self) -> String {
        let level = if self.is_error { "error" } else { "warning" };
        let mut out = format!("{}:{}:{}: {level}: ", self.file, self.line, self.column);
        match self.rule {
            Some(r) => out.push_str(&format!("{r}: {}\n", self.message)),
            None => out.push_str(&format!("{}\n", self.message)),
        }
        if let Some(text) = &self.line_text {
            out.push_str(&crate::error::quoted_line(self.line, self.column, text));
        }
        if let Some(u) = &self.url {
            out.push_str(&format!("see {u}\n"));
        }
        out
    }
}
