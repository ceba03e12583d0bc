//! The OpenAPI document of a live server (`GET /api/openapi.json`):
//! valid OpenAPI 3.1, every operation with an operationId, every example
//! valid against its schema and every example ULID a real one
//! (conformance/node/openapi.js, with the pinned
//! @seriousme/openapi-schema-validator and ajv; needs `node` and `cd
//! conformance && npm ci`); and in agreement with the router: every
//! documented operation is routed, with the documented authentication,
//! answers only documented statuses, and every method a documented path
//! does not list is 405.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_valid_openapi_3_1_with_valid_examples() {
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "`node` (Node 20) is not installed; install it (e.g. apt-get install nodejs) to validate the OpenAPI document"
    );
    for pkg in ["@seriousme/openapi-schema-validator", "ajv", "ajv-formats"] {
        assert!(
            Path::new("conformance/node_modules").join(pkg).is_dir(),
            "conformance/node_modules/{pkg} is missing; run `cd conformance && npm ci`"
        );
    }
    let srv = TestServer::start().await;
    let url = format!("http://{}", srv.addr);
    let stdout = run_node_script(
        "conformance/node/openapi.js",
        &["--url", &url],
        Duration::from_secs(60),
    )
    .await;
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    srv.stop().await;
}

/// A path of the document with sample values for its parameters.
fn sample(path: &str) -> String {
    path.replace("{uid}", "alice")
        .replace("{name}", "presence.room")
        // A content or service id, or a connection id (16 hex digits).
        .replace("{id}", "8c1f2a3b00000001")
}

#[tokio::test]
async fn every_documented_operation_is_routed_as_documented() {
    let srv = TestServer::start().await;
    let (status, doc) = http(srv.addr, "GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, 200, "{doc}");
    let paths = doc["paths"].as_object().expect("paths");
    let mut checked = 0;
    for (path, item) in paths {
        let item = item.as_object().expect("path item");
        let url = sample(path);
        for method in ["get", "put", "post", "delete", "patch"] {
            let upper = method.to_ascii_uppercase();
            let Some(op) = item.get(method) else {
                // Routed methods of a documented path are documented.
                let (s, b) = srv.http(&upper, &url, None).await;
                assert_eq!(s, 405, "{upper} {path} is routed but not documented: {b}");
                assert_eq!(b["error"]["code"], "METHOD_NOT_ALLOWED", "{b}");
                continue;
            };
            checked += 1;
            let documented = |s: u16| op["responses"].get(s.to_string()).is_some();
            let body = matches!(method, "post" | "put").then(|| json!({}));
            let (s, b) = http(srv.addr, &upper, &url, body.clone(), None).await;
            if op["security"] == json!([{"apiKey": []}]) {
                assert_eq!(s, 401, "{upper} {path} without the API key: {b}");
                assert_eq!(b["error"]["code"], "MISSING_API_KEY", "{b}");
            } else {
                let code = b["error"]["code"].as_str().unwrap_or_default();
                assert!(
                    !matches!(code, "NOT_FOUND" | "METHOD_NOT_ALLOWED" | "MISSING_API_KEY"),
                    "{upper} {path} is documented {} but answers {s} {b}",
                    op["security"]
                );
            }
            assert!(
                documented(s),
                "{upper} {path} answered {s}, not documented: {b}"
            );
            // The stream would not end; its 401 above is enough.
            if path == "/api/events" {
                continue;
            }
            let (s, b) = srv.http(&upper, &url, body).await;
            assert!(
                documented(s),
                "{upper} {path} with the key answered {s}, not documented: {b}"
            );
            let code = b["error"]["code"].as_str().unwrap_or_default();
            assert!(
                !matches!(code, "NOT_FOUND" | "METHOD_NOT_ALLOWED"),
                "{upper} {path} is documented but not routed: {s} {b}"
            );
        }
    }
    assert!(checked >= 25, "{checked} operations");
    srv.stop().await;
}

#[tokio::test]
async fn real_answers_have_exactly_the_required_fields() {
    // The node script checks the document's examples; this checks a few
    // real answers: every required field, nullable ones as null, nothing
    // else.
    let srv = TestServer::start().await;
    let (_, doc) = http(srv.addr, "GET", "/api/openapi.json", None, None).await;
    let schema = |name: &str| doc["components"]["schemas"][name].clone();
    let fields = |v: &Value| -> Vec<String> {
        let mut keys: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        keys.sort();
        keys
    };
    let required = |name: &str| -> Vec<String> {
        let mut keys: Vec<String> = schema(name)["required"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|k| k.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        keys
    };
    let (s, b) = srv.http("GET", "/api/users/nobody", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(fields(&b), required("UserPresence"), "{b}");
    assert!(b["since"].is_null(), "{b}");
    let (s, b) = srv
        .http("GET", "/api/channels/content:1/members", None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(fields(&b), required("MemberPage"), "{b}");
    assert!(b["next_offset"].is_null(), "{b}");
    let (s, b) = srv
        .http(
            "POST",
            "/api/publish",
            Some(json!({"channel": "c1", "event": "e"})),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(fields(&b), required("Published"), "{b}");
    let (s, b) = srv
        .http("POST", "/api/publish", Some(json!({"nope": 1})))
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(fields(&b), required("ErrorBody"), "{b}");
    assert_eq!(fields(&b["error"]), required("ErrorDetail"), "{b}");
    let (s, b) = http(srv.addr, "GET", "/healthz", None, None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(fields(&b), required("Health"), "{b}");
    srv.stop().await;
}
