//! Runs the Node real-client suites for the SocketCluster front end
//! (socketcluster-client 14.3.2 + sc-stateless-presence 1.0.7) against a
//! live rollcall: conformance/node/sc.js, and the differential test
//! conformance/node/sc-differential.js, which also runs the scenario
//! against socketcluster-server 14.7.2 + sc-stateless-presence and compares.
//! Needs `node` and `cd conformance && npm ci`.

use std::path::Path;
use std::time::Duration;

use crate::common::*;

fn require_node() {
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "`node` (Node 20) is not installed; install it (e.g. apt-get install nodejs) to run the SocketCluster real-client suites"
    );
    assert!(
        Path::new("conformance/node_modules/socketcluster-client").is_dir()
            && Path::new("conformance/node_modules/socketcluster-server").is_dir(),
        "conformance/node_modules is missing the SocketCluster packages; run `cd conformance && npm ci`"
    );
}

/// Runs `node <script> --url … --secret … <extra>` and asserts success,
/// printing its PASS/FAIL lines.
async fn run_node(srv: &TestServer, script: &str, extra: &[&str], limit: Duration) {
    let url = format!("http://{}", srv.addr);
    let mut args = vec!["--url", &url, "--secret", SECRET];
    args.extend_from_slice(extra);
    run_node_script(script, &args, limit).await;
}

/// The settings the Node suites state (channel rules for their anonymous
/// sockets), at the default timings.
fn settings() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/node/sc.toml")
}

async fn fast_server() -> TestServer {
    TestServer::start_from_file_with(&settings(), |cfg| {
        cfg.front_ends.sc.sc_presence_interval = 500;
        cfg.front_ends.sc.sc_presence_timeout = Some(1500);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_client_suite_passes() {
    require_node();
    let srv = fast_server().await;
    run_node(
        &srv,
        "conformance/node/sc.js",
        &["--presence-interval", "500", "--presence-timeout", "1500"],
        Duration::from_secs(90),
    )
    .await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_test_against_socketcluster_server_passes() {
    require_node();
    let srv = fast_server().await;
    run_node(
        &srv,
        "conformance/node/sc-differential.js",
        &["--presence-interval", "500", "--presence-timeout", "1500"],
        Duration::from_secs(150),
    )
    .await;
    srv.stop().await;
}

/// The spec §5 acceptance scenario at the default timings (10 s interval,
/// 13 s timeout): proves pings arrive in time when nothing is shortened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_at_default_timings_passes() {
    require_node();
    let srv = TestServer::start_from_file(&settings()).await;
    run_node(
        &srv,
        "conformance/node/sc.js",
        &["--presence-interval", "10000", "--acceptance-only"],
        Duration::from_secs(90),
    )
    .await;
    srv.stop().await;
}
