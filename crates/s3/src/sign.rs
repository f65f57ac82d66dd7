//! AWS Signature Version 4 for S3 requests (header form, single chunk).

use crate::Credentials;
use sha2::{Digest as _, Sha256};
use std::io::Read;
use std::path::Path;

pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub struct Input<'a> {
    pub method: &'a str,
    pub host: &'a str,
    /// Already URI-encoded path.
    pub path: &'a str,
    /// Canonical query string (sorted, encoded), usually empty.
    pub query: &'a str,
    pub payload_sha256: &'a str,
    pub region: &'a str,
    pub creds: &'a Credentials,
    /// Unix seconds.
    pub time: i64,
    /// More headers to sign (lowercase names).
    pub extra_headers: &'a [(&'a str, &'a str)],
}

/// The headers to add: `x-amz-date`, `x-amz-content-sha256`, the token if any, `authorization`.
pub fn sign(i: &Input<'_>) -> Vec<(String, String)> {
    let amz_date: String = rbuild_oci::rfc3339(i.time)
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let day = &amz_date[..8];
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), i.host.to_string()),
        ("x-amz-content-sha256".into(), i.payload_sha256.to_string()),
        ("x-amz-date".into(), amz_date.clone()),
    ];
    if let Some(t) = &i.creds.session_token {
        headers.push(("x-amz-security-token".into(), t.clone()));
    }
    for (k, v) in i.extra_headers {
        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        i.method, i.path, i.query, canonical_headers, signed_headers, i.payload_sha256
    );
    let scope = format!("{day}/{}/s3/aws4_request", i.region);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let k_date = hmac(
        format!("AWS4{}", i.creds.secret_access_key).as_bytes(),
        day.as_bytes(),
    );
    let k_region = hmac(&k_date, i.region.as_bytes());
    let k_service = hmac(&k_region, b"s3");
    let k_signing = hmac(&k_service, b"aws4_request");
    let signature = hex::encode(hmac(&k_signing, string_to_sign.as_bytes()));
    let mut out: Vec<(String, String)> = headers
        .into_iter()
        .filter(|(k, _)| {
            k == "x-amz-date" || k == "x-amz-content-sha256" || k == "x-amz-security-token"
        })
        .collect();
    out.push((
        "authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            i.creds.access_key_id
        ),
    ));
    out
}

/// HMAC-SHA256 (RFC 2104).
fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 64;
    let mut k = if key.len() > BLOCK {
        Sha256::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    k.resize(BLOCK, 0);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// S3's URI encoding: unreserved characters kept, everything else `%XX`; `/` kept in paths
/// unless `encode_slash`.
pub fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The "GET Object" example of AWS's Signature Version 4 documentation for S3.
    #[test]
    fn aws_documented_example() {
        let creds = Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let h = sign(&Input {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/test.txt",
            query: "",
            payload_sha256: EMPTY_SHA256,
            region: "us-east-1",
            creds: &creds,
            time: 1_369_353_600, // 2013-05-24T00:00:00Z
            extra_headers: &[("range", "bytes=0-9")],
        });
        let auth = &h.iter().find(|(k, _)| k == "authorization").unwrap().1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn hmac_rfc4231_case2() {
        assert_eq!(
            hex::encode(hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn encoding() {
        assert_eq!(uri_encode("a/b c:d~", false), "a/b%20c%3Ad~");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
    }
}
