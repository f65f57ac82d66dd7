//! `WWW-Authenticate` challenges (RFC 7235) as registries send them, and bearer token scopes.

use std::collections::BTreeMap;

/// An authentication challenge a registry answered 401 with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="..."`: send the username and password with every request.
    Basic,
    /// `Bearer realm=...,service=...,scope=...`: get a token from `realm`, then send it.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parse one `WWW-Authenticate` header value. Of several challenges, Bearer wins over Basic; unknown
/// schemes are skipped. `None` if nothing usable is there.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let mut found = Vec::new();
    for (scheme, params) in parse_challenges(header) {
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" => {
                if let Some(realm) = params.get("realm").filter(|r| !r.is_empty()) {
                    found.push(Challenge::Bearer {
                        realm: realm.clone(),
                        service: params.get("service").cloned(),
                        scope: params.get("scope").cloned(),
                    });
                }
            }
            "basic" => found.push(Challenge::Basic),
            _ => {}
        }
    }
    found.sort_by_key(|c| matches!(c, Challenge::Basic));
    found.into_iter().next()
}

/// Split a header into (scheme, params) challenges. Parameter names are lowercased; quoted values
/// have their backslash escapes removed.
fn parse_challenges(s: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let b = s.as_bytes();
    let mut out: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    let is_token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&c);
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && is_token(b[i]) {
            i += 1;
        }
        if i == start {
            i += 1; // stray byte: skip it
            continue;
        }
        let word = &s[start..i];
        // Is this word a parameter name (followed by '=') or a new scheme?
        let mut j = i;
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && !out.is_empty() {
            i = j + 1;
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    let ch_len = utf8_len(b[i]);
                    v.push_str(&s[i..(i + ch_len).min(b.len())]);
                    i += ch_len;
                }
                i += 1; // closing quote
                v
            } else {
                let vs = i;
                while i < b.len() && b[i] != b',' && b[i] != b' ' {
                    i += 1;
                }
                s[vs..i].to_string()
            };
            if let Some(last) = out.last_mut() {
                last.1.insert(word.to_ascii_lowercase(), value);
            }
        } else {
            out.push((word.to_string(), BTreeMap::new()));
        }
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// The token scope to pull from `repository`.
pub fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

/// The token scope to push to `repository`.
pub fn push_scope(repository: &str) -> String {
    format!("repository:{repository}:pull,push")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_bearer() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#;
        assert_eq!(
            parse_challenge(h),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
    }

    #[test]
    fn basic_and_mixed() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        let h = r#"Basic realm="x", Bearer realm="https://a/t", service=svc"#;
        assert_eq!(
            parse_challenge(h),
            Some(Challenge::Bearer {
                realm: "https://a/t".into(),
                service: Some("svc".into()),
                scope: None
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge(""), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn quoted_escapes_and_junk() {
        let h = r#"bearer REALM="https://a/t\"x", scope="repository:a:pull,push""#;
        assert_eq!(
            parse_challenge(h),
            Some(Challenge::Bearer {
                realm: "https://a/t\"x".into(),
                service: None,
                scope: Some("repository:a:pull,push".into())
            })
        );
        for junk in [
            "\"",
            "=",
            "Bearer realm=\"",
            "Bearer realm=\"é",
            ",,,",
            "Bearer =x",
        ] {
            let _ = parse_challenge(junk); // must not panic
        }
    }
}
