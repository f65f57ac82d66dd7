//! Go's text formats that BuildKit writes into image history and config (`%q`, `%v` of slices and
//! maps, `time.Duration`), and Go's `time.ParseDuration` for HEALTHCHECK flags.

/// Go's `strconv.Quote`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        push_escaped(&mut out, c, '"');
    }
    out.push('"');
    out
}

fn push_escaped(out: &mut String, c: char, quote: char) {
    match c {
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        '\\' => out.push_str("\\\\"),
        c if c == quote => {
            out.push('\\');
            out.push(c);
        }
        c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
        c if c.is_control() => {
            if (c as u32) <= 0xffff {
                out.push_str(&format!("\\u{:04x}", c as u32))
            } else {
                out.push_str(&format!("\\U{:08x}", c as u32))
            }
        }
        c => out.push(c),
    }
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub fn quote_slice(v: &[String]) -> String {
    format!(
        "[{}]",
        v.iter().map(|s| quote(s)).collect::<Vec<_>>().join(" ")
    )
}

/// Go's `%v` of a `[]string`: `[a b]`.
pub fn plain_slice(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// Go's `%q` of an int (a rune literal), as in `HEALTHCHECK &{… '\x03'}`.
pub fn quote_rune(v: i64) -> String {
    let Some(c) = u32::try_from(v).ok().and_then(char::from_u32) else {
        return "'\u{fffd}'".to_string();
    };
    let mut out = String::from("'");
    push_escaped(&mut out, c, '\'');
    out.push('\'');
    out
}

/// Go's `time.Duration.String()`, e.g. `5m0s`, `1.5s`, `300ms`, `0s`.
pub fn duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let sign = if neg { "-" } else { "" };
    if u < 1_000_000_000 {
        let (unit, div) = if u < 1_000 {
            ("ns", 1)
        } else if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", frac(u, div));
    }
    let h = u / 3_600_000_000_000;
    let rem = u % 3_600_000_000_000;
    let m = rem / 60_000_000_000;
    let s_ns = rem % 60_000_000_000;
    let secs = frac(s_ns, 1_000_000_000);
    if h > 0 {
        format!("{sign}{h}h{m}m{secs}s")
    } else if m > 0 {
        format!("{sign}{m}m{secs}s")
    } else {
        format!("{sign}{secs}s")
    }
}

/// `v / div` with the fraction printed without trailing zeros.
fn frac(v: u64, div: u64) -> String {
    let whole = v / div;
    let rem = v % div;
    if rem == 0 {
        return whole.to_string();
    }
    let width = (div as f64).log10().round() as usize;
    let f = format!("{rem:0width$}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

/// Go's `time.ParseDuration`: `300ms`, `1.5h`, `2h45m`, `0`; returns nanoseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &r[..n];
            rest = &r[n..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let unit: i128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        let whole: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        total = total.checked_add(whole.checked_mul(unit)?)?;
        let mut scale = unit;
        for d in frac_part.bytes().take(18) {
            scale /= 10;
            total += i128::from(d - b'0') * scale;
        }
        if total > i128::from(i64::MAX) {
            return None;
        }
    }
    let v = i64::try_from(total).ok()?;
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration(300_000_000_000), "5m0s");
        assert_eq!(duration(3_000_000_000), "3s");
        assert_eq!(duration(1_500_000_000), "1.5s");
        assert_eq!(duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(duration(2_000_000), "2ms");
        assert_eq!(duration(0), "0s");
        assert_eq!(parse_duration("5m"), Some(300_000_000_000));
        assert_eq!(parse_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("99999999999999999999h"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a\"b\\\n"), r#""a\"b\\\n""#);
        assert_eq!(quote_slice(&["sh".into(), "-c".into()]), r#"["sh" "-c"]"#);
        assert_eq!(quote_rune(3), r"'\x03'");
        assert_eq!(quote_rune(0), r"'\x00'");
        assert_eq!(quote_rune(65), "'A'");
    }
}
