//! Runs the scripted sgc suite (conformance/sgc) against an in-process
//! server configured like the README command, over real sockets.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scripted_sgc_suite_passes() {
    // The settings and channel rules the suite states in its server.toml.
    let suite = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/sgc");
    let srv = TestServer::start_for_suite(&suite).await;
    let options = rollcall::conformance::RunOptions {
        suite,
        url: format!("ws://{}", srv.addr),
        jwt_secret: SECRET.into(),
        api_key: Some(API_KEY.into()),
        filter: None,
    };
    let run = rollcall::conformance::run(&options);
    let summary = tokio::time::timeout(std::time::Duration::from_secs(90), run)
        .await
        .expect("the suite finishes within 90 s")
        .expect("the suite loads");
    assert_eq!(summary.failed, 0, "failed cases are printed above");
    assert!(summary.passed >= 50, "only {} cases ran", summary.passed);
    srv.stop().await;
}
