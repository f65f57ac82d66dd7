#![no_main]
//! Any bytes through parse + to_json + plan: errors are fine, panics and hangs are not.

use libfuzzer_sys::fuzz_target;
use rbuild_oci::{Digest, ImageConfig};
use rbuild_ops::{ImageResolver, ResolveError, ResolvedImage};

struct AnyImage;

impl ImageResolver for AnyImage {
    fn resolve(&self, reference: &str) -> Result<ResolvedImage, ResolveError> {
        if reference.contains("missing") {
            return Err(ResolveError::NotFound {
                reference: reference.into(),
                hint: None,
            });
        }
        let mut config = ImageConfig::default();
        if reference.contains("onbuild") {
            config.config.on_build = vec!["RUN x".into(), "COPY . /".into()];
        }
        Ok(ResolvedImage {
            reference: reference.into(),
            manifest: Digest::sha256_of(reference.as_bytes()),
            config,
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(df) = rbuild_frontend::parse("Dockerfile", text) {
        let _ = rbuild_frontend::to_json(&df);
    }
    let opts = rbuild_frontend::PlanOptions::new("Dockerfile", text);
    if let Err(e) = rbuild_frontend::plan(&opts, &AnyImage) {
        let _ = e.render();
    }
});
