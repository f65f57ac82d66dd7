//! BuildKit's build-check rules: names, descriptions and documentation URLs as BuildKit's
//! `frontend/dockerfile/linter` defines them.

/// One build check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub name: &'static str,
    pub description: &'static str,
    /// Off unless `check=experimental=<name>` (or `experimental=all`) turns it on.
    pub experimental: bool,
    /// Has documentation under `https://docs.docker.com/go/dockerfile/rule/<slug>/`.
    pub slug: Option<&'static str>,
}

macro_rules! rule {
    ($name:literal, $slug:expr, $exp:literal, $desc:literal) => {
        Rule {
            name: $name,
            description: $desc,
            experimental: $exp,
            slug: $slug,
        }
    };
}

/// Every rule, in BuildKit's documentation order.
pub const RULES: &[Rule] = &[
    rule!("StageNameCasing", Some("stage-name-casing"), false, "Stage names should be lowercase"),
    rule!("FromAsCasing", Some("from-as-casing"), false, "The 'as' keyword should match the case of the 'from' keyword"),
    rule!("NoEmptyContinuation", Some("no-empty-continuation"), false, "Empty continuation lines will become errors in a future release"),
    rule!("ConsistentInstructionCasing", Some("consistent-instruction-casing"), false, "All commands within the Dockerfile should use the same casing (either upper or lower)"),
    rule!("DuplicateStageName", Some("duplicate-stage-name"), false, "Stage names should be unique"),
    rule!("ReservedStageName", Some("reserved-stage-name"), false, "Reserved words should not be used as stage names"),
    rule!("JSONArgsRecommended", Some("json-args-recommended"), false, "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals"),
    rule!("MaintainerDeprecated", Some("maintainer-deprecated"), false, "The MAINTAINER instruction is deprecated, use a label instead to define an image author"),
    rule!("UndefinedArgInFrom", Some("undefined-arg-in-from"), false, "FROM command must use declared ARGs"),
    rule!("WorkdirRelativePath", Some("workdir-relative-path"), false, "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes"),
    rule!("UndefinedVar", Some("undefined-var"), false, "Variables should be defined before their use"),
    rule!("MultipleInstructionsDisallowed", Some("multiple-instructions-disallowed"), false, "Multiple instructions of the same type should not be used in the same stage"),
    rule!("LegacyKeyValueFormat", Some("legacy-key-value-format"), false, "Legacy key/value format with whitespace separator should not be used"),
    rule!("InvalidBaseImagePlatform", None, false, "Base image platform does not match expected target platform"),
    rule!("RedundantTargetPlatform", Some("redundant-target-platform"), false, "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior"),
    rule!("SecretsUsedInArgOrEnv", Some("secrets-used-in-arg-or-env"), false, "Sensitive data should not be used in the ARG or ENV commands"),
    rule!("InvalidDefaultArgInFrom", Some("invalid-default-arg-in-from"), false, "Default value for global ARG results in an empty or invalid base image name"),
    rule!("FromPlatformFlagConstDisallowed", Some("from-platform-flag-const-disallowed"), false, "FROM --platform flag should not use a constant value"),
    rule!("CopyIgnoredFile", Some("copy-ignored-file"), true, "Attempting to Copy file that is excluded by .dockerignore"),
    rule!("InvalidDefinitionDescription", Some("invalid-definition-description"), true, "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment."),
    rule!("ExposeProtoCasing", Some("expose-proto-casing"), false, "Protocol in EXPOSE instruction should be lowercase"),
    rule!("ExposeInvalidFormat", Some("expose-invalid-format"), false, "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release"),
];

/// The rule called `name` (exact spelling).
pub fn rule(name: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.name == name)
}

/// The documentation URL of rule `name` (BuildKit's `docs.docker.com/go/dockerfile/rule/` links);
/// the build-checks index for a rule without a page of its own.
pub fn rule_url(name: &str) -> String {
    match rule(name).and_then(|r| r.slug) {
        Some(slug) => format!("https://docs.docker.com/go/dockerfile/rule/{slug}/"),
        None => "https://docs.docker.com/reference/build-checks/".to_string(),
    }
}
