use super::*;

#[test]
fn config_parses_as_buildkit() {
    let c = CheckConfig::parse("skip=JSONArgsRecommended, StageNameCasing;error=true").unwrap();
    assert!(c.error);
    assert!(!c.enabled("JSONArgsRecommended"));
    assert!(!c.enabled("StageNameCasing"));
    assert!(c.enabled("FromAsCasing"));
    assert!(
        !c.enabled("CopyIgnoredFile"),
        "experimental rules are off by default"
    );
    let c = CheckConfig::parse("skip=all;experimental=CopyIgnoredFile").unwrap();
    assert!(!c.enabled("FromAsCasing"));
    assert!(
        c.enabled("CopyIgnoredFile"),
        "skip=all does not turn experimental rules off"
    );
    assert_eq!(CheckConfig::parse("").unwrap(), CheckConfig::default());
    assert!(CheckConfig::parse("error=maybe").is_err());
    assert!(CheckConfig::parse("skip").is_err());
    assert!(CheckConfig::parse("colour=red").is_err());
    assert!(CheckConfig::parse("error=1").unwrap().error);
}

#[test]
fn secret_names() {
    for k in [
        "GPG_KEY",
        "api_key",
        "GITHUB_TOKEN",
        "AUTH",
        "secret_MESSAGE",
        "DB_PASSWORD",
    ] {
        assert!(looks_secret(k), "{k}");
    }
    for k in [
        "PUBLIC_KEY",
        "KEYS",
        "MONKEY",
        "TOKENIZER",
        "PATH",
        "key_public_x",
    ] {
        assert!(!looks_secret(k), "{k}");
    }
}

#[test]
fn references() {
    for r in [
        "busybox",
        "busybox:1.36",
        "docker.io/library/alpine:3.20",
        "localhost:5000/a/b:c",
        "ghcr.io/o/r@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        assert!(valid_reference(r), "{r}");
    }
    for r in [
        "",
        "busybox:",
        "Busybox",
        "a//b",
        ":tag",
        "a:b:c",
        "x@sha256:12",
    ] {
        assert!(!valid_reference(r), "{r}");
    }
}

#[test]
fn every_rule_has_a_url() {
    for r in RULES {
        assert!(rule_url(r.name).starts_with("https://docs.docker.com/"));
    }
    assert_eq!(
        rule_url("FromAsCasing"),
        "https://docs.docker.com/go/dockerfile/rule/from-as-casing/"
    );
}
