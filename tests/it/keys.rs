//! Key rotation: `--jwt-secrets-file` holds HMAC secrets by key id; a
//! token whose header names a `kid` is verified with that secret only.
//! Editing the file and sending SIGHUP (or `POST /api/admin/reload-keys`)
//! retires and adds keys without a restart; a broken file is refused and
//! the keys in use stay.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::common;
use crate::common::process::ServerProcess;

/// A Hotsock connect token for `uid` signed with `secret` under `kid`.
fn token(kid: Option<&str>, secret: &str, uid: &str) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(String::from);
    let claims = json!({"uid": uid, "scope": "connect", "exp": rollcall::time::unix_now() + 3600});
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// Whether the server takes a Hotsock connection with `token`.
async fn accepted(server: &ServerProcess, token: &str) -> bool {
    let url = format!("ws://{}/hotsock?token={token}", server.addr);
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => true,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 401 => false,
        Err(e) => panic!("connect: {e}"),
    }
}

#[tokio::test]
async fn keys_by_kid_rotate_with_sighup_and_the_admin_call() {
    let dir = std::env::temp_dir().join(format!("rollcall-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("jwt-secrets.toml");
    std::fs::write(&file, "\"2026-11\" = \"november-secret\"\n").expect("write");
    let server = ServerProcess::start("keys", &["--jwt-secrets-file", &file.display().to_string()]);
    let november = token(Some("2026-11"), "november-secret", "amy");
    let december = token(Some("2026-12"), "december-secret", "amy");
    assert!(accepted(&server, &november).await);
    assert!(!accepted(&server, &december).await, "unknown kid");
    assert!(
        !accepted(&server, &token(Some("2026-11"), "december-secret", "amy")).await,
        "a kid's token signed with another secret"
    );
    // A token without kid uses --jwt-secret.
    assert!(accepted(&server, &token(None, common::SECRET, "amy")).await);

    // December comes, November goes: the file changes, SIGHUP applies it.
    std::fs::write(&file, "\"2026-12\" = \"december-secret\"\n").expect("write");
    let pid = server.pid().to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let rotated = common::eventually(Duration::from_secs(3), || async {
        accepted(&server, &december).await
    })
    .await;
    assert!(rotated, "SIGHUP did not load the new key");
    assert!(
        !accepted(&server, &november).await,
        "the retired key still works"
    );

    // A broken file is refused; the keys in use stay.
    std::fs::write(&file, "\"2027-01\" = \n").expect("write");
    let (status, body) = server.http("POST", "/api/admin/reload-keys", None).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("previous keys stay"),
        "{body}"
    );
    assert!(accepted(&server, &december).await);
    std::fs::write(&file, "\"2027-01\" = \"january-secret\"\n").expect("write");
    let (status, body) = server.http("POST", "/api/admin/reload-keys", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["keys"]
            .as_str()
            .unwrap_or_default()
            .contains("2027-01"),
        "{body}"
    );
    assert!(accepted(&server, &token(Some("2027-01"), "january-secret", "amy")).await);
    let _ = std::fs::remove_dir_all(&dir);
}
