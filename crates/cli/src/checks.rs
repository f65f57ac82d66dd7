//! Build-check output: `rbuild build --check`'s report, the warning lines printed after a build
//! (plain and tty modes, as BuildKit prints them), and `warning` events (json mode).

use crate::progress::Mode;
use rbuild_frontend::Warning;
use std::io::Write;

/// `--check`: every warning in full (rule, message, location, the line with a caret, URL), then
/// BuildKit's closing line.
pub fn print_report(warnings: &[Warning]) {
    let mut out = std::io::stderr().lock();
    for w in warnings {
        let _ = writeln!(out, "{}", w.render());
    }
    let _ = match warnings.len() {
        0 => writeln!(out, "Check complete, no warnings found."),
        1 => writeln!(out, "Check complete, 1 warning has been found!"),
        n => writeln!(out, "Check complete, {n} warnings have been found!"),
    };
}

/// After a build (plain, tty): one line per warning, as BuildKit's summary, plus where to see
/// the details. Nothing in quiet mode; json mode has had its events already.
pub fn print_summary(warnings: &[Warning], mode: Mode) {
    if warnings.is_empty() || !matches!(mode, Mode::Plain | Mode::Tty) {
        return;
    }
    let mut out = std::io::stderr().lock();
    let n = warnings.len();
    let _ = writeln!(
        out,
        "\n {n} warning{} found (use rbuild build --check for details):",
        if n == 1 { "" } else { "s" }
    );
    for w in warnings {
        let rule = w.rule.map(|r| format!("{r}: ")).unwrap_or_default();
        let _ = writeln!(
            out,
            " - {rule}{} ({}:{}:{})",
            w.message, w.file, w.line, w.column
        );
    }
}

/// One json `warning` event.
pub fn event(w: &Warning) -> serde_json::Value {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    serde_json::json!({
        "type": "warning",
        "time": ts,
        "rule": w.rule,
        "message": w.message,
        "url": w.url,
        "file": w.file,
        "line": w.line,
        "column": w.column,
        "source": w.line_text,
        "error": w.is_error,
    })
}

/// Json mode: the warnings as events, before the build's own.
pub fn print_events(warnings: &[Warning]) {
    let mut out = std::io::stderr().lock();
    for w in warnings {
        let _ = writeln!(out, "{}", event(w));
    }
}

/// BuildKit's error when `check=error=true` and a rule is violated.
pub fn violation(rules: &[&str]) -> String {
    format!("lint violation found for rules: {}", rules.join(", "))
}
