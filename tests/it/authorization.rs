//! Channel authorization on every front end, over real sockets.
//!
//! The matrix: front end (Hotsock, Socket.IO, SocketCluster, sgc) ×
//! credentials (anonymous, authenticated without a grant, granted this
//! channel, granted another channel; plus the one user the backend check
//! allows) × channel (`presence.…`, `user:alice-…`, `room-…`) × server
//! configuration (default, `open_channels`, `authenticated_channels`,
//! `[[channel-rules]]`, backend check). In every cell the client
//! subscribes, publishes, is sent a server message and sees a member join,
//! and each step must end exactly as the configuration's table says: the
//! protocol's own refusal, whose reason names the missing grant or rule, or
//! success. A Hotsock observer granted the channel watches every cell: what
//! a refused client sends must not reach it, and what the channel carries
//! must not reach a refused client. One server per configuration; the cells
//! run concurrently on channels with their own suffix.
//!
//! Also: caching of the backend check, event names checked against the
//! token's `messages` directives, an explicit `false` grant, a
//! SocketCluster socket logging in, out and in again, and `--frontends`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::protocols::{Peer, Proto, Refusal};
use crate::common::*;

/// How long a client must stay silent for "nothing arrived".
const QUIET: u64 = 250;

// ------------------------------------------------------------------ tables

/// The three kinds of channel of every configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `presence.<suffix>`: Hotsock members and member events.
    Presence,
    /// `user:alice-<suffix>`: the user presence channel of user
    /// `alice-<suffix>` (`user.presence` when she comes online).
    User,
    /// `room-<suffix>`.
    Plain,
}

impl Kind {
    fn channel(self, suffix: &str) -> String {
        match self {
            Kind::Presence => format!("presence.{suffix}"),
            Kind::User => format!("user:alice-{suffix}"),
            Kind::Plain => format!("room-{suffix}"),
        }
    }
}

/// What the client proves about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cred {
    /// No token.
    Anonymous,
    /// A valid token (user `bob-…`) without a `channels` claim.
    Authenticated,
    /// A token (user `carol-…`) granting this channel: subscribe, and
    /// publish any event.
    Granted,
    /// A token (user `dave-…`) granting another channel the same way.
    GrantedOther,
    /// A token without grants for user `alice-…`, whom the backend check
    /// allows.
    Alice,
}

impl Cred {
    /// Token claims for this credential in a cell on `channel` (None: no
    /// token).
    fn claims(self, channel: &str, suffix: &str) -> Option<Value> {
        let grant = json!({"subscribe": true, "messages": {"*": {"publish": true}}});
        let (name, channels) = match self {
            Cred::Anonymous => return None,
            Cred::Authenticated => ("bob", None),
            Cred::Granted => ("carol", Some(json!({ channel: grant }))),
            Cred::GrantedOther => ("dave", Some(json!({ format!("{channel}-other"): grant }))),
            Cred::Alice => ("alice", None),
        };
        let uid = format!("{name}-{suffix}");
        let mut claims = json!({"uid": uid, "username": uid, "name": uid});
        if let Some(c) = channels {
            claims["channels"] = c;
        }
        Some(claims)
    }
}

/// The outcome a table expects.
#[derive(Clone, Copy, Debug)]
enum Want {
    Yes,
    No(Why),
}

/// Why the policy refuses: each names the missing grant or the rule.
#[derive(Clone, Copy, Debug)]
enum Why {
    /// Subscribe: no grant and no rule.
    NoGrant,
    /// Publish: no `messages` grant and no rule.
    NoPublishGrant,
    /// Subscribe: the rule admits authenticated connections only.
    AuthenticatedOnly(&'static str),
    /// Subscribe: the rule admits grant holders only.
    GrantOnly(&'static str),
    /// Publish: the rule lets subscribers publish; the client is not one.
    SubscribeFirst(&'static str),
    /// Publish: the rule lets grant holders publish only.
    PublishGrantOnly(&'static str),
    /// Publish: the rule lets only the server publish.
    ServerOnly(&'static str),
    /// The backend check said no.
    Backend,
}

impl Why {
    /// What the refusal's reason must say (compared case-insensitively:
    /// sgc capitalizes it).
    fn text(self, c: &str, event: &str) -> String {
        match self {
            Why::NoGrant => format!(
                "no grant for {c}: the token's channels claim does not allow subscribing to it and no rule opens it"
            ),
            Why::NoPublishGrant => format!(
                "the token's channels claim does not allow sending {event:?} to {c} (messages.{event}.publish) and no rule opens it"
            ),
            Why::AuthenticatedOnly(p) => {
                format!("{c} is open to authenticated connections only (rule {p})")
            }
            Why::GrantOnly(p) => format!("{c} needs a grant (rule {p} admits grant holders only)"),
            Why::SubscribeFirst(p) => format!(
                "subscribe to {c} before publishing on it (rule {p} lets subscribers publish)"
            ),
            Why::PublishGrantOnly(p) => format!(
                "publishing {event:?} on {c} needs a grant (rule {p} admits grant holders only)"
            ),
            Why::ServerOnly(p) => {
                format!("only the server publishes on {c} (rule {p} has publish = \"server\")")
            }
            Why::Backend => format!("the channel check refused: only alice may use {c}"),
        }
    }
}

/// One line of a table: what a credential may do on a kind of channel,
/// whatever the front end.
#[derive(Clone, Copy, Debug)]
struct Row {
    kind: Kind,
    cred: Cred,
    subscribe: Want,
    publish: Want,
}

const fn row(kind: Kind, cred: Cred, subscribe: Want, publish: Want) -> Row {
    Row {
        kind,
        cred,
        subscribe,
        publish,
    }
}

use Cred::*;
use Kind::*;
use Want::*;
use Why::*;

/// No rules: every channel needs a grant.
const DEFAULT: &[Row] = &[
    row(Presence, Anonymous, No(NoGrant), No(NoPublishGrant)),
    row(Presence, Authenticated, No(NoGrant), No(NoPublishGrant)),
    row(Presence, Granted, Yes, Yes),
    row(Presence, GrantedOther, No(NoGrant), No(NoPublishGrant)),
    row(User, Anonymous, No(NoGrant), No(NoPublishGrant)),
    row(User, Authenticated, No(NoGrant), No(NoPublishGrant)),
    row(User, Granted, Yes, Yes),
    row(User, GrantedOther, No(NoGrant), No(NoPublishGrant)),
    row(Plain, Anonymous, No(NoGrant), No(NoPublishGrant)),
    row(Plain, Authenticated, No(NoGrant), No(NoPublishGrant)),
    row(Plain, Granted, Yes, Yes),
    row(Plain, GrantedOther, No(NoGrant), No(NoPublishGrant)),
];

/// `open_channels = ["presence.*", "room-*"]`: anyone subscribes there,
/// subscribers publish; `user:` channels are not covered.
const OPEN: &[Row] = &[
    row(Presence, Anonymous, Yes, Yes),
    row(Presence, Authenticated, Yes, Yes),
    row(Presence, Granted, Yes, Yes),
    row(Presence, GrantedOther, Yes, Yes),
    row(User, Anonymous, No(NoGrant), No(NoPublishGrant)),
    row(User, Authenticated, No(NoGrant), No(NoPublishGrant)),
    row(User, Granted, Yes, Yes),
    row(User, GrantedOther, No(NoGrant), No(NoPublishGrant)),
    row(Plain, Anonymous, Yes, Yes),
    row(Plain, Authenticated, Yes, Yes),
    row(Plain, Granted, Yes, Yes),
    row(Plain, GrantedOther, Yes, Yes),
];

/// `authenticated_channels = ["presence.*", "user:*"]`: any valid token
/// subscribes there, subscribers publish; `room-` channels are not covered.
const AUTHENTICATED: &[Row] = &[
    row(
        Presence,
        Anonymous,
        No(AuthenticatedOnly("presence.*")),
        No(SubscribeFirst("presence.*")),
    ),
    row(Presence, Authenticated, Yes, Yes),
    row(Presence, Granted, Yes, Yes),
    row(Presence, GrantedOther, Yes, Yes),
    row(
        User,
        Anonymous,
        No(AuthenticatedOnly("user:*")),
        No(SubscribeFirst("user:*")),
    ),
    row(User, Authenticated, Yes, Yes),
    row(User, Granted, Yes, Yes),
    row(User, GrantedOther, Yes, Yes),
    row(Plain, Anonymous, No(NoGrant), No(NoPublishGrant)),
    row(Plain, Authenticated, No(NoGrant), No(NoPublishGrant)),
    row(Plain, Granted, Yes, Yes),
    row(Plain, GrantedOther, No(NoGrant), No(NoPublishGrant)),
];

/// The `[[channel-rules]]` of [`rules_config`].
const RULES: &[Row] = &[
    // presence.*: subscribe = "anyone", publish = "server" (grants too).
    row(Presence, Anonymous, Yes, No(ServerOnly("presence.*"))),
    row(Presence, Authenticated, Yes, No(ServerOnly("presence.*"))),
    row(Presence, Granted, Yes, No(ServerOnly("presence.*"))),
    row(Presence, GrantedOther, Yes, No(ServerOnly("presence.*"))),
    // user:*: subscribe = "authenticated", publish = "grant".
    row(
        User,
        Anonymous,
        No(AuthenticatedOnly("user:*")),
        No(PublishGrantOnly("user:*")),
    ),
    row(User, Authenticated, Yes, No(PublishGrantOnly("user:*"))),
    row(User, Granted, Yes, Yes),
    row(User, GrantedOther, Yes, No(PublishGrantOnly("user:*"))),
    // room-*: subscribe = "grant", publish = "subscribers".
    row(
        Plain,
        Anonymous,
        No(GrantOnly("room-*")),
        No(SubscribeFirst("room-*")),
    ),
    row(
        Plain,
        Authenticated,
        No(GrantOnly("room-*")),
        No(SubscribeFirst("room-*")),
    ),
    row(Plain, Granted, Yes, Yes),
    row(
        Plain,
        GrantedOther,
        No(GrantOnly("room-*")),
        No(SubscribeFirst("room-*")),
    ),
];

fn rules_config() -> Vec<rollcall::policy::RuleConfig> {
    vec![
        rule("presence.*", "anyone", "server"),
        rule("user:*", "authenticated", "grant"),
        rule("room-*", "grant", "subscribers"),
    ]
}

/// No rules, a backend check that allows `alice-…` users only; grants
/// settle their channels without asking it.
const BACKEND: &[Row] = &[
    row(Presence, Anonymous, No(Backend), No(Backend)),
    row(Presence, Authenticated, No(Backend), No(Backend)),
    row(Presence, Alice, Yes, Yes),
    row(Presence, Granted, Yes, Yes),
    row(Presence, GrantedOther, No(Backend), No(Backend)),
    row(User, Anonymous, No(Backend), No(Backend)),
    row(User, Authenticated, No(Backend), No(Backend)),
    row(User, Alice, Yes, Yes),
    row(User, Granted, Yes, Yes),
    row(User, GrantedOther, No(Backend), No(Backend)),
    row(Plain, Anonymous, No(Backend), No(Backend)),
    row(Plain, Authenticated, No(Backend), No(Backend)),
    row(Plain, Alice, Yes, Yes),
    row(Plain, Granted, Yes, Yes),
    row(Plain, GrantedOther, No(Backend), No(Backend)),
];

// ------------------------------------------------------------- the matrix

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_default_needs_a_grant() {
    let srv = TestServer::start().await;
    run_matrix("default", srv, DEFAULT, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_open_channels() {
    let srv = TestServer::start_with(|c| {
        c.channels.open_channels = vec!["presence.*".into(), "room-*".into()];
    })
    .await;
    run_matrix("open_channels", srv, OPEN, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_authenticated_channels() {
    let srv = TestServer::start_with(|c| {
        c.channels.authenticated_channels = vec!["presence.*".into(), "user:*".into()];
    })
    .await;
    run_matrix("authenticated_channels", srv, AUTHENTICATED, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_channel_rules() {
    let srv = TestServer::start_with(|c| c.channels.channel_rules = rules_config()).await;
    run_matrix("channel_rules", srv, RULES, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_backend_check() {
    let check = ChannelCheck::start().await;
    let srv = TestServer::start_with(|c| c.channels.channel_check_url = Some(check.url())).await;
    run_matrix("channel_check", srv, BACKEND, Some(check)).await;
}

/// Runs every row on every front end, concurrently, and reports every
/// failed cell.
async fn run_matrix(
    name: &str,
    srv: TestServer,
    rows: &'static [Row],
    check: Option<Arc<ChannelCheck>>,
) {
    let srv = Arc::new(srv);
    let mut cells = Vec::new();
    for row in rows {
        for proto in Proto::ALL {
            let label = format!(
                "{name} / {proto:?} / {:?} channel / {:?}",
                row.kind, row.cred
            );
            let task = tokio::spawn(cell(srv.clone(), check.clone(), proto, *row));
            cells.push((label, task));
        }
    }
    all_pass(cells).await;
    if let Ok(srv) = Arc::try_unwrap(srv) {
        srv.stop().await;
    }
}

/// Awaits every task; fails with the list of those that failed.
async fn all_pass(tasks: Vec<(String, tokio::task::JoinHandle<()>)>) {
    let total = tasks.len();
    let mut failed = Vec::new();
    for (label, task) in tasks {
        if let Err(e) = task.await {
            let why = match e.try_into_panic() {
                Ok(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            failed.push(format!("{label}: {why}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {total} failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// One cell: subscribe, publish, read a server message, see a member join.
async fn cell(srv: Arc<TestServer>, check: Option<Arc<ChannelCheck>>, proto: Proto, row: Row) {
    let s = suffix();
    let channel = row.kind.channel(&s);
    let presence = row.kind == Kind::Presence;
    let mut observer = srv
        .connect(
            json!({"uid": format!("observer-{s}"), "channels": {&channel: {"subscribe": true}}}),
        )
        .await;
    observer.join(&channel).await;

    let claims = row.cred.claims(&channel, &s);
    let anonymous = claims.is_none();
    let mut peer = match Peer::connect(&srv, proto, claims).await {
        Ok(peer) => {
            assert!(
                !(anonymous && proto.needs_token()),
                "a connection without a token was accepted"
            );
            peer
        }
        Err(why) => {
            assert!(
                anonymous && proto.needs_token(),
                "the connection was refused: {why}"
            );
            let says = match proto {
                Proto::Hotsock => "HTTP 401: missing token",
                _ => "no token",
            };
            assert!(why.contains(says), "the refusal says {why:?}");
            observer.expect_none(QUIET).await;
            if let Some(check) = &check {
                check.assert_asked(&channel, proto, None, false, &[]);
            }
            observer.close().await;
            return;
        }
    };

    // `user:<uid>` is a user presence channel: the observer, granted it,
    // sees its user come online.
    if row.kind == Kind::User && row.cred == Cred::Alice {
        let online = observer.expect("user.presence").await;
        assert_eq!(online["channel"], channel.as_str(), "{online}");
        assert_eq!(
            online["data"],
            json!({"uid": peer.user, "online": true}),
            "{online}"
        );
    }

    // 1. Subscribe; a refused subscribe leaves no trace.
    let answer = peer.subscribe(&channel).await;
    let subscribed = judge(
        "subscribe",
        answer,
        row.subscribe,
        proto.subscribe_refused(),
        &channel,
        "",
    );
    let joined = peer.member_of(&channel).filter(|_| subscribed);
    if let Some(member) = joined.filter(|_| presence) {
        expect_added(&mut observer, &channel, member).await;
    }
    let info = srv.channel(&channel).await;
    assert_eq!(
        info["subscriptionsCount"],
        1 + u64::from(subscribed),
        "subscribers of {channel}: {info}"
    );
    let members: Vec<&str> = info["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["uid"].as_str())
        .collect();
    let observer_uid = format!("observer-{s}");
    let expected: Vec<&str> = [presence.then_some(observer_uid.as_str()), joined]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(members, expected, "members of {channel}: {info}");

    // 2. Publish; a refused message reaches nobody.
    let text = format!("from-{s}");
    let event = proto.publish_event();
    let answer = peer.publish(&channel, &text).await;
    let published = match (subscribed, proto.not_subscribed(&channel)) {
        (false, Some(own)) => {
            assert_eq!(answer, Err(own), "publish from outside the channel");
            false
        }
        _ => judge(
            "publish",
            answer,
            row.publish,
            proto.publish_refused(),
            &channel,
            event,
        ),
    };
    if published {
        let m = observer.next().await;
        let data_ok = match proto {
            Proto::SocketIo => m["data"]["content"]["bodyText"] == text.as_str(),
            _ => m["data"] == text.as_str(),
        };
        assert!(
            m["event"] == event
                && m["channel"] == channel.as_str()
                && m["meta"]["uid"] == json!(peer.user)
                && data_ok,
            "the observer got {m} instead of the client's {event:?}"
        );
    }

    // 3. Read: a server message reaches subscribers only.
    let news = format!("news-{s}");
    srv.publish(&channel, "news", json!(news)).await;
    let m = observer.expect("news").await;
    assert_eq!(m["data"], news.as_str(), "{m}");
    if subscribed {
        peer.expect_message(&channel, "news", &news).await;
    }

    // 4. Member events: a granted SocketCluster user joins.
    let joiner_uid = format!("joiner-{s}");
    let joiner_claims = json!({"uid": joiner_uid, "username": joiner_uid,
        "channels": {&channel: {"subscribe": true}}});
    let mut joiner = Peer::connect(&srv, Proto::Sc, Some(joiner_claims))
        .await
        .expect("the joiner connects");
    joiner
        .sc_subscribe(&channel)
        .await
        .expect("the joiner is granted the channel");
    if presence {
        expect_added(&mut observer, &channel, &joiner_uid).await;
    }
    if subscribed && proto.shows_members(&channel) {
        peer.expect_joined(&channel, &joiner_uid).await;
    }

    // 5. Nothing else, either way.
    tokio::join!(peer.expect_none(QUIET), observer.expect_none(QUIET));

    // 6. What the backend check was asked about this channel.
    if let Some(check) = &check {
        let questions: &[(&str, Option<&str>)] = match (row.cred, subscribed) {
            (Cred::Granted, _) => &[],
            (_, false) if proto.publish_needs_subscription() => &[("subscribe", None)],
            _ => &[("subscribe", None), ("publish", Some(event))],
        };
        check.assert_asked(&channel, proto, peer.user.as_deref(), !anonymous, questions);
    }
    tokio::join!(peer.close(), observer.close(), joiner.close());
}

/// Checks an answer against the table; true when the request was admitted.
fn judge(
    what: &str,
    answer: Result<(), Refusal>,
    want: Want,
    code: &str,
    channel: &str,
    event: &str,
) -> bool {
    match (answer, want) {
        (Ok(()), Want::Yes) => true,
        (Err(r), Want::Yes) => panic!("{what} was refused: {r:?}"),
        (Ok(()), Want::No(why)) => panic!(
            "{what} was allowed; expected a refusal saying {:?}",
            why.text(channel, event)
        ),
        (Err(r), Want::No(why)) => {
            assert_eq!(r.code, code, "{what} refused with another code: {r:?}");
            let says = why.text(channel, event);
            assert!(
                r.reason.to_lowercase().contains(&says.to_lowercase()),
                "{what}: the reason {:?} does not say {says:?}",
                r.reason
            );
            false
        }
    }
}

async fn expect_added(observer: &mut Client, channel: &str, uid: &str) {
    let f = observer.expect("hotsock.memberAdded").await;
    assert_eq!(f["channel"], channel, "{f}");
    assert_eq!(f["data"]["member"]["uid"], uid, "{f}");
}

async fn expect_removed(observer: &mut Client, channel: &str, uid: &str) {
    let f = observer.expect("hotsock.memberRemoved").await;
    assert_eq!(f["channel"], channel, "{f}");
    assert_eq!(f["data"]["member"]["uid"], uid, "{f}");
}

/// A suffix no other cell of this process uses.
fn suffix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{n}x{:05x}", nanos & 0xfffff)
}

// ------------------------------------------------------ the backend check

/// A channel check on 127.0.0.1: allows authenticated users whose id
/// starts with `alice-`, refuses everyone else with a reason, and records
/// every question.
struct ChannelCheck {
    addr: SocketAddr,
    asked: Mutex<Vec<Value>>,
    /// How long it takes to answer.
    delay: Duration,
}

impl ChannelCheck {
    async fn start() -> Arc<ChannelCheck> {
        Self::start_slow(Duration::ZERO).await
    }

    /// A check that takes `delay` to answer.
    async fn start_slow(delay: Duration) -> Arc<ChannelCheck> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let check = Arc::new(ChannelCheck {
            addr: listener.local_addr().unwrap(),
            asked: Mutex::new(Vec::new()),
            delay,
        });
        let server = check.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(server.clone().answer(sock));
            }
        });
        check
    }

    fn url(&self) -> String {
        format!("http://{}/check", self.addr)
    }

    /// Reads one request, records its JSON body and answers it.
    async fn answer(self: Arc<Self>, mut sock: tokio::net::TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let body = loop {
            let n = sock.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                break buf[end + 4..end + 4 + len].to_vec();
            }
        };
        let q: Value = serde_json::from_slice(&body).expect("the question is JSON");
        let alice = q["authenticated"] == true
            && q["user_id"]
                .as_str()
                .is_some_and(|u| u.starts_with("alice-"));
        let answer = match alice {
            true => json!({"allow": true}),
            false => json!({"allow": false, "reason": format!("only alice may use {}", q["channel"].as_str().unwrap_or("?"))}),
        }
        .to_string();
        self.asked.lock().unwrap().push(q);
        tokio::time::sleep(self.delay).await;
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        );
        let _ = sock.write_all(resp.as_bytes()).await;
    }

    /// The questions about `channel`, in order.
    fn about(&self, channel: &str) -> Vec<Value> {
        let asked = self.asked.lock().unwrap();
        asked
            .iter()
            .filter(|q| q["channel"] == channel)
            .cloned()
            .collect()
    }

    /// Asserts the exact questions asked about `channel`: (action, event),
    /// each from `proto` for `user`.
    fn assert_asked(
        &self,
        channel: &str,
        proto: Proto,
        user: Option<&str>,
        authenticated: bool,
        questions: &[(&str, Option<&str>)],
    ) {
        let mut asked = self.about(channel);
        for q in &mut asked {
            let id = q.as_object_mut().and_then(|o| o.remove("connection_id"));
            assert!(
                id.as_ref()
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty()),
                "a question without a connection id: {q}"
            );
        }
        let expected: Vec<Value> = questions
            .iter()
            .map(|(action, event)| {
                json!({"action": action, "channel": channel, "event": event, "user_id": user,
                       "authenticated": authenticated, "protocol": proto.name()})
            })
            .collect();
        assert_eq!(asked, expected, "the questions about {channel}");
    }
}

/// Answers are reused for `channel_check_cache_ttl`: one question per user
/// and channel, whichever front end asks; anonymous connections are asked
/// about one by one; after the TTL the check is asked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_check_answers_are_cached_per_user_across_front_ends() {
    let check = ChannelCheck::start().await;
    let srv = TestServer::start_with(|c| {
        c.channels.channel_check_url = Some(check.url());
        c.channels.channel_check_cache_ttl = std::time::Duration::from_secs(2);
    })
    .await;
    let s = suffix();
    let room = format!("room-{s}");
    let alice = format!("alice-{s}");
    let claims = json!({"uid": alice, "username": alice});
    let asked_alice = || {
        check
            .about(&room)
            .iter()
            .filter(|q| q["user_id"] == alice.as_str())
            .count()
    };

    let first = tokio::time::Instant::now();
    let mut peers = Vec::new();
    for proto in Proto::ALL {
        let mut p = Peer::connect(&srv, proto, Some(claims.clone()))
            .await
            .unwrap();
        p.subscribe(&room)
            .await
            .unwrap_or_else(|r| panic!("{proto:?}: {r:?}"));
        peers.push(p);
    }
    assert_eq!(asked_alice(), 1, "{:?}", check.about(&room));
    assert_eq!(check.about(&room)[0]["protocol"], "hotsock");

    // Anonymous connections have no user to share an answer: each is asked about.
    for _ in 0..2 {
        let mut anon = Peer::connect(&srv, Proto::Sgc, None).await.unwrap();
        let r = anon.subscribe(&room).await.unwrap_err();
        assert!(r.reason.contains("only alice may use"), "{r:?}");
        peers.push(anon);
    }
    let anonymous = check
        .about(&room)
        .iter()
        .filter(|q| q["user_id"].is_null() && q["authenticated"] == false)
        .count();
    assert_eq!(anonymous, 2, "{:?}", check.about(&room));

    // After the TTL, alice's answer is asked for again (once).
    tokio::time::sleep_until(first + Duration::from_millis(2300)).await;
    for proto in [Proto::Sc, Proto::SocketIo] {
        let mut p = Peer::connect(&srv, proto, Some(claims.clone()))
            .await
            .unwrap();
        p.subscribe(&room)
            .await
            .unwrap_or_else(|r| panic!("{proto:?}: {r:?}"));
        peers.push(p);
    }
    assert_eq!(asked_alice(), 2, "{:?}", check.about(&room));
    for p in peers {
        p.close().await;
    }
    srv.stop().await;
}

/// A refusal is an answer of the channel check too: it is reused for
/// `channel_check_cache_ttl` like a permission, on every front end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_check_refusals_are_cached_for_the_ttl() {
    let check = ChannelCheck::start().await;
    let srv = TestServer::start_with(|c| {
        c.channels.channel_check_url = Some(check.url());
        c.channels.channel_check_cache_ttl = std::time::Duration::from_secs(5);
    })
    .await;
    let s = suffix();
    let room = format!("room-{s}");
    let bob = format!("bob-{s}");
    let claims = json!({"uid": bob, "username": bob});
    let first = tokio::time::Instant::now();
    let mut peers = Vec::new();
    for (i, proto) in Proto::ALL.into_iter().enumerate() {
        if i == 2 {
            // Past one second, well within the TTL.
            tokio::time::sleep_until(first + Duration::from_millis(1500)).await;
        }
        let mut p = Peer::connect(&srv, proto, Some(claims.clone()))
            .await
            .unwrap();
        let r = p.subscribe(&room).await.unwrap_err();
        assert_eq!(r.code, proto.subscribe_refused(), "{r:?}");
        let says = format!("the channel check refused: only alice may use {room}");
        assert!(r.reason.to_lowercase().contains(&says), "{proto:?}: {r:?}");
        peers.push(p);
        assert_eq!(
            check.about(&room).len(),
            1,
            "{proto:?}, {:?} after the refusal: the check was asked again within the {}s TTL: {:?}",
            first.elapsed(),
            5,
            check.about(&room)
        );
    }
    for p in peers {
        p.close().await;
    }
    srv.stop().await;
}

/// While the channel check is asked about a subscribe, that connection's
/// later frames wait, so a message sent right behind the subscribe is
/// handled after it, on every front end (README, "The backend check").
/// The check takes 200 ms to answer, as a real one may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_behind_a_channel_check_stay_in_order() {
    let check = ChannelCheck::start_slow(Duration::from_millis(200)).await;
    let srv = Arc::new(
        TestServer::start_with(|c| c.channels.channel_check_url = Some(check.url())).await,
    );
    let mut tasks = Vec::new();
    for proto in Proto::ALL {
        let (srv, check) = (srv.clone(), check.clone());
        let task = tokio::spawn(async move {
            let s = suffix();
            let room = format!("room-{s}");
            let alice = format!("alice-{s}");
            let mut observer = srv
                .connect(json!({"uid": format!("observer-{s}"), "channels": {&room: {"subscribe": true}}}))
                .await;
            observer.join(&room).await;
            let claims = json!({"uid": alice, "username": alice});
            let mut peer = Peer::connect(&srv, proto, Some(claims)).await.unwrap();
            peer.send_subscribe(&room).await;
            peer.send_publish(&room, "right behind").await;
            peer.read_subscribe(&room)
                .await
                .expect("the check allows alice");
            peer.read_publish(&room, "right behind")
                .await
                .expect("the check allows alice");
            let m = observer.next().await;
            assert_eq!(m["event"], proto.publish_event(), "{m}");
            let event = proto.publish_event();
            check.assert_asked(
                &room,
                proto,
                Some(&alice),
                true,
                &[("subscribe", None), ("publish", Some(event))],
            );
            tokio::join!(peer.expect_none(QUIET), observer.expect_none(QUIET));
        });
        tasks.push((format!("{proto:?}"), task));
    }
    all_pass(tasks).await;
}

// ------------------------------------------------- grants in detail

/// Each front end's publish is checked under its own event name (Hotsock:
/// the event; Socket.IO: the category; SocketCluster: `publish`; sgc:
/// `message`) against the token's `messages` directives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_event_names_are_checked_against_messages_directives() {
    let srv = TestServer::start().await;
    for proto in Proto::ALL {
        let s = suffix();
        let room = format!("room-{s}");
        let own = proto.publish_event();
        let token = |uid: &str, event: &str| {
            json!({"uid": uid, "username": uid,
                   "channels": {&room: {"subscribe": true, "messages": {event: {"publish": true}}}}})
        };
        let mut allowed = Peer::connect(&srv, proto, Some(token(&format!("ann-{s}"), own)))
            .await
            .unwrap();
        allowed.subscribe(&room).await.unwrap();
        let mut other = Peer::connect(&srv, proto, Some(token(&format!("ben-{s}"), "other")))
            .await
            .unwrap();
        other.subscribe(&room).await.unwrap();
        if proto.shows_members(&room) {
            allowed.expect_joined(&room, &format!("ben-{s}")).await;
        }
        if proto == Proto::Sc {
            // ben's subscribe to presence>room announces the socket too.
            let id = other.sc_id().to_string();
            allowed.expect_anonymous_join(&room, &id).await;
        }
        allowed
            .publish(&room, "granted")
            .await
            .unwrap_or_else(|r| panic!("{proto:?}: messages.{own}.publish refused: {r:?}"));
        other.expect_message(&room, own, "granted").await;
        let r = other.publish(&room, "not granted").await.unwrap_err();
        assert_eq!(r.code, proto.publish_refused(), "{proto:?}: {r:?}");
        let says = Why::NoPublishGrant.text(&room, own).to_lowercase();
        assert!(r.reason.to_lowercase().contains(&says), "{proto:?}: {r:?}");
        tokio::join!(allowed.expect_none(QUIET), other.expect_none(QUIET));
        tokio::join!(allowed.close(), other.close());
    }
    srv.stop().await;
}

/// An explicit `false` for a channel wins over a pattern that grants it
/// and over an open rule, on every front end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_false_grant_wins() {
    let srv = TestServer::start_with(|c| c.channels.open_channels = vec!["room-*".into()]).await;
    for proto in Proto::ALL {
        let s = suffix();
        let room = format!("room-{s}");
        let uid = format!("eve-{s}");
        let claims = json!({"uid": uid, "username": uid,
            "channels": {"room-*": {"subscribe": true}, &room: {"subscribe": false}}});
        let mut peer = Peer::connect(&srv, proto, Some(claims)).await.unwrap();
        let r = peer.subscribe(&room).await.unwrap_err();
        // sgc too answers 10, though the channel does not exist yet: a
        // refusal says nothing about who is there.
        assert_eq!(r.code, proto.subscribe_refused(), "{proto:?}: {r:?}");
        let says = format!("the token's channels claim denies {room} (subscribe: false)");
        assert!(r.reason.to_lowercase().contains(&says), "{proto:?}: {r:?}");
        peer.subscribe(&format!("{room}-2"))
            .await
            .unwrap_or_else(|r| panic!("{proto:?}: the pattern grant: {r:?}"));
        peer.expect_none(QUIET).await;
        peer.close().await;
    }
    srv.stop().await;
}

// ---------------------------------------- SocketCluster logins and logouts

/// A SocketCluster socket logs in, out and in again with tokens granting
/// different channels: a subscription its new credentials no longer allow
/// ends with `#kickOut`, and its messages and member events stop; open
/// channels stay; logging in again restores the right to subscribe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketcluster_login_logout_and_login_again() {
    let srv = TestServer::start_with(|c| c.channels.open_channels = vec!["lobby-*".into()]).await;
    let s = suffix();
    let a = format!("presence.a-{s}");
    let b = format!("room-b-{s}");
    let lobby = format!("lobby-{s}");
    let sam = format!("sam-{s}");
    let token = |channel: &str| {
        sign(&mut json!({"uid": sam, "username": sam, "channels": {channel: {"subscribe": true}}}))
    };
    let hotsock =
        |name: &str| json!({"uid": format!("{name}-{s}"), "channels": {&a: {"subscribe": true}}});
    // A Hotsock member of A sees sam join and leave; an SC tracker of
    // presence>A would see any join sam publishes there.
    let mut watcher = srv.connect(hotsock("watcher")).await;
    watcher.join(&a).await;
    let tracker_claims = json!({"uid": format!("tracker-{s}"), "username": format!("tracker-{s}"),
        "channels": {&a: {"subscribe": true}}});
    let mut tracker = Peer::connect(&srv, Proto::Sc, Some(tracker_claims))
        .await
        .unwrap();
    tracker
        .sc_subscribe(&format!("presence>{a}"))
        .await
        .unwrap();

    // Logged in with A's grant: A works.
    let sam_a = json!({"uid": sam, "username": sam, "channels": {&a: {"subscribe": true}}});
    let mut sock = Peer::connect(&srv, Proto::Sc, Some(sam_a)).await.unwrap();
    sock.subscribe(&a).await.expect("A is granted");
    expect_added(&mut watcher, &a, &sam).await;
    tracker.expect_joined(&a, &sam).await;
    tracker.expect_anonymous_join(&a, sock.sc_id()).await;
    sock.subscribe(&lobby).await.expect("the lobby is open");
    srv.publish(&a, "news", json!("one")).await;
    sock.expect_message(&a, "news", "one").await;
    watcher.expect("news").await;
    let mut pam = srv.connect(hotsock("pam")).await;
    pam.join(&a).await;
    let pam_uid = format!("pam-{s}");
    sock.expect_joined(&a, &pam_uid).await;
    tracker.expect_joined(&a, &pam_uid).await;
    expect_added(&mut watcher, &a, &pam_uid).await;

    // Logging in with B's grant: A and presence>A end with #kickOut.
    let cid = sock.sc_request("#authenticate", json!(token(&b))).await;
    let (kicked, others) = kick_outs(
        &mut sock,
        cid,
        json!({"isAuthenticated": true, "authError": null}),
    )
    .await;
    // Nothing of A after the login that took A's grant away.
    assert_eq!(
        others,
        Vec::<Value>::new(),
        "frames before the #kickOut of presence>{a}"
    );
    assert_eq!(
        kicked.keys().cloned().collect::<Vec<_>>(),
        [a.clone(), format!("presence>{a}")]
    );
    for message in kicked.values() {
        assert!(message.contains(&format!("no grant for {a}")), "{message}");
    }
    expect_removed(&mut watcher, &a, &sam).await;
    expect_removed(&mut pam, &a, &sam).await;
    let leave = tracker.next().await;
    assert_eq!(
        leave["data"],
        json!({"channel": format!("presence>{a}"), "data": {"type": "leave", "username": sam}})
    );
    // A's messages and member events no longer reach sam; the open lobby's do.
    srv.publish(&a, "news", json!("two")).await;
    watcher.expect("news").await;
    pam.expect("news").await;
    let mut kim = srv.connect(hotsock("kim")).await;
    kim.join(&a).await;
    let kim_uid = format!("kim-{s}");
    expect_added(&mut watcher, &a, &kim_uid).await;
    expect_added(&mut pam, &a, &kim_uid).await;
    tracker.expect_joined(&a, &kim_uid).await;
    srv.publish(&lobby, "news", json!("three")).await;
    sock.expect_message(&lobby, "news", "three").await;
    let r = sock.subscribe(&a).await.unwrap_err();
    assert_eq!(r.code, "ForbiddenError");
    assert!(r.reason.contains(&format!("no grant for {a}")), "{r:?}");
    sock.subscribe(&b).await.expect("B is granted now");
    srv.publish(&b, "news", json!("four")).await;
    sock.expect_message(&b, "news", "four").await;

    // Logging out: B (grant only) ends; the lobby stays.
    let cid = sock.sc_request("#removeAuthToken", Value::Null).await;
    let (kicked, others) = kick_outs(&mut sock, cid, Value::Null).await;
    // Anonymous now, sam is no member of the lobby (which it still tracks).
    let leave = json!({"type": "leave", "username": sam});
    assert_eq!(others, [packet(&lobby, leave)]);
    assert_eq!(
        kicked.keys().cloned().collect::<Vec<_>>(),
        [format!("presence>{b}"), b.clone()]
    );
    for message in kicked.values() {
        assert!(message.contains(&format!("no grant for {b}")), "{message}");
    }
    srv.publish(&b, "news", json!("five")).await;
    srv.publish(&lobby, "news", json!("six")).await;
    sock.expect_message(&lobby, "news", "six").await;
    let r = sock.subscribe(&b).await.unwrap_err();
    assert!(r.reason.contains(&format!("no grant for {b}")), "{r:?}");

    // Logging in again with A's grant: A can be subscribed again.
    let cid = sock.sc_request("#authenticate", json!(token(&a))).await;
    let (kicked, others) = kick_outs(
        &mut sock,
        cid,
        json!({"isAuthenticated": true, "authError": null}),
    )
    .await;
    // A member of the lobby again, seen by its own tracker.
    let join = json!({"type": "join", "username": sam, "timeout": 13000});
    assert_eq!(others, [packet(&lobby, join)]);
    assert!(kicked.is_empty(), "the lobby is open to anyone: {kicked:?}");
    sock.subscribe(&a).await.expect("A is granted again");
    for c in [&mut watcher, &mut pam, &mut kim] {
        expect_added(c, &a, &sam).await;
    }
    tracker.expect_joined(&a, &sam).await;
    tracker.expect_anonymous_join(&a, sock.sc_id()).await;
    srv.publish(&a, "news", json!("seven")).await;
    sock.expect_message(&a, "news", "seven").await;
    for c in [&mut watcher, &mut pam, &mut kim] {
        c.expect("news").await;
    }
    tokio::join!(
        sock.expect_none(QUIET),
        tracker.expect_none(QUIET),
        watcher.expect_none(QUIET),
        pam.expect_none(QUIET),
        kim.expect_none(QUIET)
    );
    srv.stop().await;
}

/// Reads up to the reply to `cid` (which must carry `data`): the
/// `#kickOut`s before it (channel → message) and every other frame.
async fn kick_outs(
    sock: &mut Peer,
    cid: u64,
    data: Value,
) -> (BTreeMap<String, String>, Vec<Value>) {
    let mut kicked = BTreeMap::new();
    let mut others = Vec::new();
    loop {
        let f = sock.next().await;
        if f["rid"] == cid {
            let mut want = json!({ "rid": cid });
            if !data.is_null() {
                want["data"] = data;
            }
            assert_eq!(f, want);
            return (kicked, others);
        }
        if f["event"] != "#kickOut" {
            others.push(f);
            continue;
        }
        let channel = f["data"]["channel"].as_str().expect("channel").to_string();
        let message = f["data"]["message"].as_str().expect("message").to_string();
        assert!(
            kicked.insert(channel, message).is_none(),
            "kicked twice: {f}"
        );
    }
}

/// A presence packet on `presence>channel`.
fn packet(channel: &str, data: Value) -> Value {
    json!({"event": "#publish", "data": {"channel": format!("presence>{channel}"), "data": data}})
}

// ---------------------------------------------------------- --frontends

/// `frontends = ["hotsock", "sc"]`: the sgc and Socket.IO endpoints are
/// not served (404); Hotsock and SocketCluster are, in one channel.
#[tokio::test]
async fn frontends_serves_only_the_chosen_front_ends() {
    let srv =
        TestServer::start_with(|c| c.listener.frontends = vec!["hotsock".into(), "sc".into()])
            .await;
    let refused = Peer::connect(&srv, Proto::Sgc, None).await.err();
    assert!(
        refused
            .as_deref()
            .is_some_and(|r| r.starts_with("HTTP 404")),
        "/sgc: {refused:?}"
    );
    assert_eq!(srv.connect_path("/sgc").await.err(), Some(404));
    assert_eq!(
        srv.connect_path("/socket.io/?EIO=4&transport=websocket")
            .await
            .err(),
        Some(404)
    );
    let (status, _) = http(
        srv.addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        None,
        None,
    )
    .await;
    assert_eq!(status, 404);

    let room = format!("presence.f-{}", suffix());
    let grant =
        |uid: &str| json!({"uid": uid, "username": uid, "channels": {&room: {"subscribe": true}}});
    let mut hot = srv.connect(grant("hot")).await;
    hot.join(&room).await;
    let mut sc = Peer::connect(&srv, Proto::Sc, Some(grant("scott")))
        .await
        .unwrap();
    sc.subscribe(&room).await.unwrap();
    expect_added(&mut hot, &room, "scott").await;
    srv.publish(&room, "news", json!("both")).await;
    sc.expect_message(&room, "news", "both").await;
    assert_eq!(hot.expect("news").await["data"], "both");
    srv.stop().await;
}
