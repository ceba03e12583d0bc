//! Runs the Node real-client suite for the Socket.IO front end
//! (socket.io-client 1.7.3, 2.0.4 and 4.8.4 in one run) against a live
//! rollcall: conformance/node/socketio.js. Needs `node` and
//! `cd conformance && npm ci`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_1_7_3_2_0_4_and_4_8_4_pass() {
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "`node` (Node 20) is not installed; install it (e.g. apt-get install nodejs) to run the Socket.IO real-client suite"
    );
    for pkg in [
        "socket.io-client-1",
        "socket.io-client-2",
        "socket.io-client",
    ] {
        assert!(
            Path::new("conformance/node_modules").join(pkg).is_dir(),
            "conformance/node_modules/{pkg} is missing; run `cd conformance && npm ci`"
        );
    }
    // The settings the suite states: no channel rules (its tokens carry
    // the grants).
    let settings = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/node/socketio.toml");
    let srv = TestServer::start_from_file(&settings).await;
    let url = format!("http://{}", srv.addr);
    let child = tokio::process::Command::new("node")
        .arg("conformance/node/socketio.js")
        .args(["--url", &url, "--secret", SECRET])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let limit = Duration::from_secs(90);
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("socketio.js did not finish within {limit:?}"))
        .expect("node output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "socketio.js failed:\n{stdout}\n{stderr}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    srv.stop().await;
}
