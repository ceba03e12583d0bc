//! A first end-to-end pass over the Hotsock front end.

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn two_users_see_each_other_join_and_leave() {
    let srv = TestServer::start().await;
    let mut jim = srv.connect(user("jim", json!({"name": "Jim"}))).await;
    let sub = jim.subscribe("presence.room").await;
    assert_eq!(
        sub,
        json!({"event":"hotsock.subscribed","channel":"presence.room","data":{"members":[{"uid":"jim","umd":{"name":"Jim"}}]},"meta":{"uid":"jim","umd":{"name":"Jim"}}})
    );
    let mut dwight = srv.connect(user("dwight", json!(null))).await;
    let sub = dwight.subscribe("presence.room").await;
    assert_eq!(
        sub["data"]["members"],
        json!([{"uid":"jim","umd":{"name":"Jim"}},{"uid":"dwight","umd":null}])
    );
    let added = jim.expect("hotsock.memberAdded").await;
    assert_eq!(added["data"]["member"], json!({"uid":"dwight","umd":null}));
    dwight.close().await;
    let removed = jim.expect("hotsock.memberRemoved").await;
    assert_eq!(
        removed["data"]["members"],
        json!([{"uid":"jim","umd":{"name":"Jim"}}])
    );
    srv.stop().await;
}
