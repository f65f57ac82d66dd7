//! rbuild-s3 against a real S3 API server on loopback: moto's standalone server (`moto_server`,
//! PyPI `moto[server]`). Skips, saying why, when it is not installed.

use rbuild_s3::{Client, Error, S3Options};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Moto(Child, u16);
impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto() -> Option<Moto> {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = match Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIP: moto_server not runnable ({e}); pip install 'moto[server]'");
            return None;
        }
    };
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "moto_server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Moto(child, port))
}

fn client(port: u16, bucket: &str) -> Client {
    let attrs: BTreeMap<String, String> = [
        ("bucket", bucket),
        ("region", "us-east-1"),
        ("endpoint_url", &format!("http://127.0.0.1:{port}")),
        ("use_path_style", "true"),
        ("access_key_id", "testing"),
        ("secret_access_key", "testing"),
        ("prefix", "ci/"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Client::new(S3Options::parse(&attrs).unwrap()).unwrap()
}

#[test]
fn objects_round_trip() {
    let Some(m) = moto() else { return };
    let c = client(m.1, "rbuild-cache");
    c.create_bucket().unwrap();
    let key = c.options().blob_key("sha256:0123");
    assert_eq!(c.head(&key).unwrap(), None);
    assert_eq!(c.get_bytes(&key, 1 << 20).unwrap(), None);
    c.put_bytes(&key, b"hello".to_vec()).unwrap();
    assert_eq!(c.head(&key).unwrap(), Some(5));
    assert_eq!(c.get_bytes(&key, 1 << 20).unwrap().unwrap(), b"hello");
    // Over the cap: refused, not truncated.
    assert!(matches!(c.get_bytes(&key, 3), Err(Error::TooLarge { .. })));

    // A file, signed with a digest the caller already knows, and one hashed here.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("blob");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&f, &data).unwrap();
    let hex = rbuild_s3_test_sha(&data);
    let key2 = c.options().blob_key(&format!("sha256:{hex}"));
    c.put_file(&key2, &f, Some(&hex)).unwrap();
    let mut got = Vec::new();
    assert_eq!(
        c.get_to(&key2, &mut got, 1 << 30).unwrap(),
        Some(data.len() as u64)
    );
    assert_eq!(got, data);
    c.put_file(&c.options().manifest_key("main"), &f, None)
        .unwrap();
    c.touch(&key).unwrap();
    assert_eq!(
        c.get_bytes(&key, 100).unwrap().unwrap(),
        b"hello",
        "touch keeps the bytes"
    );

    // (moto checks neither signatures nor payload hashes; the signer is checked against AWS's
    // documented example in src/sign.rs.)
    assert!(c.requests() >= 10);
}

#[test]
fn missing_bucket_and_unreachable_endpoint() {
    let Some(m) = moto() else { return };
    let c = client(m.1, "no-such-bucket");
    let err = c.put_bytes("k", b"x".to_vec()).unwrap_err().to_string();
    assert!(err.contains("404") && err.contains("NoSuchBucket"), "{err}");
    drop(m);
    // Nothing listens there any more: a transport error naming the URL, quickly.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = client(port, "b");
    let t = Instant::now();
    let err = c.head("k").unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(15));
}

fn rbuild_s3_test_sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}
