//! Generated test images: small gzip layers of pseudo-random (incompressible) bytes, a config and an
//! OCI manifest, put into a store.

use rbuild_oci::{
    canonical_json, Descriptor, Digest, History, ImageConfig, Manifest, RootFs,
    MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_LAYER_GZIP, MEDIA_TYPE_OCI_MANIFEST,
};
use rbuild_store::Store;
use std::io::Write as _;

pub struct TestImage {
    pub manifest: Digest,
    pub manifest_bytes: Vec<u8>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl TestImage {
    pub fn blobs(&self) -> Vec<&Descriptor> {
        std::iter::once(&self.config).chain(&self.layers).collect()
    }
    pub fn blob_bytes(&self) -> u64 {
        self.blobs().iter().map(|d| d.size).sum()
    }
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A gzip layer holding one file of `size` pseudo-random bytes; returns (blob, diff_id).
pub fn make_layer(seed: u64, size: usize) -> (Vec<u8>, Digest) {
    let mut tar = tar::Builder::new(Vec::new());
    let data = noise(seed, size);
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, format!("file-{seed}"), &data[..])
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let diff_id = Digest::sha256_of(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// An image with one layer per entry of `layer_sizes`, all blobs put into `store`.
pub fn make_image(store: &Store, seed: u64, layer_sizes: &[usize]) -> TestImage {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, size) in layer_sizes.iter().enumerate() {
        let (blob, diff_id) = make_layer(seed * 1000 + i as u64, *size);
        let d = store.put_blob(&blob).unwrap();
        layers.push(Descriptor::new(
            MEDIA_TYPE_OCI_LAYER_GZIP,
            d,
            blob.len() as u64,
        ));
        diff_ids.push(diff_id);
    }
    let config = ImageConfig {
        architecture: rbuild_oci::host_arch().into(),
        os: "linux".into(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids,
        },
        history: vec![History {
            created_by: Some(format!("rbuild test image {seed}")),
            ..Default::default()
        }],
        ..Default::default()
    };
    let config_bytes = canonical_json(&config);
    let config_digest = store.put_blob(&config_bytes).unwrap();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_MANIFEST.into()),
        artifact_type: None,
        config: Descriptor::new(
            MEDIA_TYPE_OCI_CONFIG,
            config_digest,
            config_bytes.len() as u64,
        ),
        layers,
        subject: None,
        annotations: Default::default(),
    };
    let manifest_bytes = canonical_json(&manifest);
    let digest = store.put_blob(&manifest_bytes).unwrap();
    TestImage {
        manifest: digest,
        manifest_bytes,
        config: manifest.config,
        layers: manifest.layers,
    }
}
