//! Runs the Node real-client suite for the Socket.IO front end
//! (socket.io-client 1.7.3, 2.0.4 and 4.8.4 in one run) against a live
//! rollcall: conformance/node/socketio.js. Needs `node` and
//! `cd conformance && npm ci`.

use std::path::Path;
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
    let stdout = run_node_script(
        "conformance/node/socketio.js",
        &["--url", &url, "--secret", SECRET],
        Duration::from_secs(90),
    )
    .await;
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    srv.stop().await;
}
