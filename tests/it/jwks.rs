//! `--jwks-url`: a token signed by an identity provider's key is verified
//! with the key of its `kid` from the provider's JSON Web Key Set, served
//! here by a local HTTP server; a key the provider adds later is accepted
//! without a restart (an unknown kid fetches the set again), and a token
//! naming a kid the set does not have is refused saying so.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::common;
use crate::common::process::ServerProcess;
use crate::webhook_support::read_request;

/// An Ed25519 key made with openssl: (private PEM, public JWK with `kid`).
fn ed25519(dir: &std::path::Path, kid: &str) -> (Vec<u8>, Value) {
    let pem = dir.join(format!("{kid}.pem"));
    let ok = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&pem)
        .status()
        .expect("openssl runs");
    assert!(ok.success());
    let der = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&pem)
        .output()
        .expect("openssl runs")
        .stdout;
    // The raw public key is the DER's last 32 bytes.
    let raw = &der[der.len() - 32..];
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let jwk =
        json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"});
    (std::fs::read(&pem).expect("pem"), jwk)
}

fn token(pem: &[u8], kid: &str, uid: &str) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.into());
    let claims = json!({"uid": uid, "scope": "connect", "exp": rollcall::time::unix_now() + 3600});
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_ed_pem(pem).expect("key"),
    )
    .expect("sign")
}

/// Serves `set` (changeable) as the JWKS; counts the fetches.
async fn provider(set: Arc<Mutex<Value>>, fetches: Arc<Mutex<usize>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let set = set.clone();
            let fetches = fetches.clone();
            tokio::spawn(async move {
                if read_request(&mut stream).await.is_none() {
                    return;
                }
                *fetches.lock().unwrap() += 1;
                let body = set.lock().unwrap().to_string();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    url
}

async fn rejection(server: &ServerProcess, token: &str) -> Option<String> {
    let url = format!("ws://{}/hotsock?token={token}", server.addr);
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => None,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Some(format!(
            "{} {}",
            r.status(),
            String::from_utf8_lossy(r.body().as_deref().unwrap_or_default())
        )),
        Err(e) => panic!("connect: {e}"),
    }
}

// Multi-threaded: the provider answers while the server starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_verified_with_the_providers_keys_by_kid() {
    let dir = std::env::temp_dir().join(format!("rollcall-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (pem_a, jwk_a) = ed25519(&dir, "key-a");
    let (pem_b, jwk_b) = ed25519(&dir, "key-b");
    let set = Arc::new(Mutex::new(json!({"keys": [jwk_a]})));
    let fetches = Arc::new(Mutex::new(0));
    let url = provider(set.clone(), fetches.clone()).await;
    let server = ServerProcess::start("jwks", &["--jwks-url", &url]);

    assert_eq!(
        rejection(&server, &token(&pem_a, "key-a", "amy")).await,
        None
    );
    // key-b is not published yet: refused, saying why.
    let refused = rejection(&server, &token(&pem_b, "key-b", "bob"))
        .await
        .expect("refused");
    assert!(refused.starts_with("401"), "{refused}");
    assert!(refused.contains("key id \"key-b\" is unknown"), "{refused}");
    // key-a's kid with key-b's signature: refused.
    assert!(
        rejection(&server, &token(&pem_b, "key-a", "eve"))
            .await
            .is_some()
    );

    // The provider publishes key-b: accepted without a restart.
    set.lock().unwrap()["keys"] = json!([jwk_a, jwk_b]);
    let accepted = common::eventually(Duration::from_secs(12), || async {
        rejection(&server, &token(&pem_b, "key-b", "bob"))
            .await
            .is_none()
    })
    .await;
    assert!(accepted, "key-b never accepted");
    assert!(*fetches.lock().unwrap() >= 2);
    // An unknown kid does not make the server fetch on every token.
    let before = *fetches.lock().unwrap();
    for _ in 0..10 {
        let _ = rejection(&server, &token(&pem_b, "key-z", "zed")).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(*fetches.lock().unwrap() <= before + 1, "fetched per token");
    let _ = std::fs::remove_dir_all(&dir);
}
