//! `--chmod`: octal (`755`) or symbolic (`u+x,g-w,o=r`, `+x`, `a=rX`) as chmod(1) reads it, applied
//! per copied file and directory.

use crate::error::{FileOpError, Result};
use rbuild_ops::Chmod;

/// A parsed `--chmod` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModeSpec {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

/// One comma-separated clause: who (`ugoa`) and its actions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clause {
    /// Bits the clause may touch (`u` = 0o4700, `g` = 0o2070, `o` = 0o1007; all when empty).
    who: u32,
    actions: Vec<(char, Vec<char>)>,
}

impl ModeSpec {
    /// Parse a `--chmod` value from the build graph.
    pub fn parse(chmod: &Chmod) -> Result<ModeSpec> {
        match chmod {
            Chmod::Octal(m) if *m <= 0o7777 => Ok(ModeSpec::Octal(*m)),
            Chmod::Octal(m) => Err(FileOpError::BadChmod {
                value: format!("{m:o}"),
                reason: "octal mode above 7777",
            }),
            Chmod::Symbolic(s) => Self::parse_str(s),
        }
    }

    /// Parse a textual `--chmod` value (octal digits or symbolic clauses).
    pub fn parse_str(s: &str) -> Result<ModeSpec> {
        let bad = |reason| FileOpError::BadChmod {
            value: s.to_string(),
            reason,
        };
        if !s.is_empty() && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            let m = u32::from_str_radix(s, 8).map_err(|_| bad("octal mode too long"))?;
            if m > 0o7777 {
                return Err(bad("octal mode above 7777"));
            }
            return Ok(ModeSpec::Octal(m));
        }
        let mut clauses = Vec::new();
        for part in s.split(',') {
            let mut chars = part.chars().peekable();
            let mut who = 0u32;
            while let Some(&c) = chars.peek() {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    'a' => 0o7777,
                    _ => break,
                };
                chars.next();
            }
            if who == 0 {
                who = 0o7777;
            }
            let mut actions = Vec::new();
            while let Some(op) = chars.next() {
                if !matches!(op, '+' | '-' | '=') {
                    return Err(bad("expected one of + - = after [ugoa]"));
                }
                let mut perms = Vec::new();
                while let Some(&c) = chars.peek() {
                    if matches!(c, '+' | '-' | '=') {
                        break;
                    }
                    if !matches!(c, 'r' | 'w' | 'x' | 'X' | 's' | 't' | 'u' | 'g' | 'o') {
                        return Err(bad("unknown permission letter (expected rwxXst or ugo)"));
                    }
                    perms.push(c);
                    chars.next();
                }
                actions.push((op, perms));
            }
            if actions.is_empty() {
                return Err(bad("a clause needs an operator (+, - or =)"));
            }
            clauses.push(Clause { who, actions });
        }
        Ok(ModeSpec::Symbolic(clauses))
    }

    /// The mode (permission bits, `0o7777`) a file or directory with `mode` gets.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let mut m = mode & 0o7777;
        match self {
            ModeSpec::Octal(o) => *o,
            ModeSpec::Symbolic(clauses) => {
                for c in clauses {
                    for (op, perms) in &c.actions {
                        let mut bits = 0u32;
                        for p in perms {
                            bits |= match p {
                                'r' => 0o444,
                                'w' => 0o222,
                                'x' => 0o111,
                                'X' if is_dir || m & 0o111 != 0 => 0o111,
                                'X' => 0,
                                's' => 0o6000,
                                't' => 0o1000,
                                'u' => ((m >> 6) & 7) * 0o111,
                                'g' => ((m >> 3) & 7) * 0o111,
                                'o' => (m & 7) * 0o111,
                                _ => 0,
                            };
                        }
                        let bits = bits & c.who;
                        match op {
                            '+' => m |= bits,
                            '-' => m &= !bits,
                            _ => m = (m & !(c.who & 0o0777)) | bits,
                        }
                    }
                }
                m
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str, mode: u32, dir: bool) -> u32 {
        ModeSpec::parse_str(s).unwrap().apply(mode, dir)
    }

    #[test]
    fn symbolic_modes() {
        assert_eq!(sym("u+x,g-w,o=r", 0o664, false), 0o744);
        assert_eq!(sym("+x", 0o644, false), 0o755);
        assert_eq!(sym("a=rX", 0o640, true), 0o555);
        assert_eq!(sym("a=rX", 0o640, false), 0o444);
        assert_eq!(sym("a=rX", 0o740, false), 0o555);
        assert_eq!(sym("go=u", 0o700, false), 0o777);
        assert_eq!(sym("u+s", 0o755, false), 0o4755);
        assert_eq!(sym("o+t", 0o777, true), 0o1777);
        assert_eq!(sym("u=rwx,go=", 0o666, false), 0o700);
        assert_eq!(sym("u+x-w", 0o644, false), 0o544);
        assert_eq!(sym("0750", 0o644, false), 0o750);
        assert_eq!(
            ModeSpec::parse(&Chmod::Octal(0o600))
                .unwrap()
                .apply(0o777, true),
            0o600
        );
        for bad in ["u", "z+x", "u+q", "99999", "", "u+x,"] {
            assert!(ModeSpec::parse_str(bad).is_err(), "{bad} accepted");
        }
        assert!(ModeSpec::parse(&Chmod::Octal(0o17777)).is_err());
    }
}
