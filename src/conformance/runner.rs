//! Executes suite cases against a live server over real sockets.
//!
//! Each case gets fresh variables (including `${run}`, 8 random lowercase
//! letters and digits, for unique channel names) and its own clients; all
//! clients are closed when the case ends. Cases run one after another.
//! Output is one `PASS <file> :: <case>` / `FAIL <file> :: <case>: <why>`
//! (or `SKIP`) line per case and a final `N passed, M failed` line.

use crate::conformance::matcher::{self, Captures, MatchOptions};
use crate::conformance::resolve::{self, Env, Mode, Vars};
use crate::conformance::suite::{
    self, Case, Clients, CloseStep, ConnectStep, ExpectCloseStep, ExpectNoneStep, ExpectStep,
    HttpStep, MuteStep, RepeatStep, SendStep, Step, SuiteFile,
};
use crate::http_client::{self, HttpClient, UserInfo};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// What to run and against which server.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// A suite directory (every `*.json` in it) or a single suite file.
    pub suite: PathBuf,
    /// Server base URL, e.g. `ws://127.0.0.1:4000`; each `connect` step
    /// appends its path (default `/hotsock`), and `http` steps go to the
    /// same host and port over plain HTTP.
    pub url: String,
    /// Secret used to sign HS256 tokens built from claims.
    pub jwt_secret: String,
    /// Bearer API key for `http` steps; cases that require one are skipped
    /// without it.
    pub api_key: Option<String>,
    /// Run only cases whose name contains this substring.
    pub filter: Option<String>,
}

/// Counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
}

const DEFAULT_PATH: &str = "/hotsock";
const DEFAULT_TIMEOUT_MS: u64 = 2000;
const DEFAULT_NONE_MS: u64 = 500;
const HTTP_TIMEOUT_MS: u64 = 5000;
/// Larger HTTP answers are refused.
const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// Longest rendering of a frame in failure messages.
const SHOW_LIMIT: usize = 1500;

/// Loads the suite and runs every (matching) case in order, printing one
/// line per case and a summary. Errors are suite or option problems (bad
/// JSON, unknown keys, bad URL), not failing cases.
pub async fn run(opts: &RunOptions) -> Result<Summary, String> {
    let files = suite::load(&opts.suite)?;
    let target = Target::parse(&opts.url)?;
    let http = HttpClient::new(None);
    let mut summary = Summary::default();
    let mut matched = 0usize;
    for file in &files {
        for case in &file.cases {
            let label = format!("{} :: {}", file.display, case.name);
            if let Some(f) = &opts.filter
                && !case.name.contains(f.as_str())
                && !label.contains(f.as_str())
            {
                continue;
            }
            matched += 1;
            if let Some(why) = &case.skip {
                println!("SKIP {label} ({why})");
                continue;
            }
            if case.requires.iter().any(|r| r == "api_key") && opts.api_key.is_none() {
                println!("SKIP {label} (needs --api-key)");
                continue;
            }
            let mut run = CaseRun {
                opts,
                file,
                target: &target,
                http: &http,
                vars: Vars::new(),
                clients: HashMap::new(),
            };
            let outcome = run.run(case).await;
            run.teardown().await;
            match outcome {
                Ok(()) => {
                    summary.passed += 1;
                    println!("PASS {label}");
                }
                Err(f) => {
                    summary.failed += 1;
                    println!("FAIL {label}: {f}");
                }
            }
        }
    }
    if matched == 0 && opts.filter.is_some() {
        println!("(no case matched the filter)");
    }
    println!("{} passed, {} failed", summary.passed, summary.failed);
    Ok(summary)
}

/// The server address split into what WebSocket and HTTP requests need.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    scheme: &'static str,
    authority: String,
    prefix: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let (scheme, rest) = if let Some(r) = url.strip_prefix("ws://") {
            ("ws", r)
        } else if let Some(r) = url.strip_prefix("http://") {
            ("ws", r)
        } else if let Some(r) = url.strip_prefix("wss://") {
            ("wss", r)
        } else {
            return Err(format!("--url must start with ws:// (got {url:?})"));
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(format!("--url has no host: {url:?}"));
        }
        let authority = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_string()
        } else {
            format!("{authority}:{}", if scheme == "wss" { 443 } else { 80 })
        };
        Ok(Target {
            scheme,
            authority,
            prefix: prefix.trim_end_matches('/').to_string(),
        })
    }

    fn ws_url(&self, path: &str, query: &str) -> String {
        let sep = if path.starts_with('/') || path.is_empty() {
            ""
        } else {
            "/"
        };
        let q = if query.is_empty() {
            String::new()
        } else if path.contains('?') {
            format!("&{query}")
        } else {
            format!("?{query}")
        };
        format!(
            "{}://{}{}{sep}{path}{q}",
            self.scheme, self.authority, self.prefix
        )
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Renders a value for a failure message, cut at `SHOW_LIMIT`.
fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= SHOW_LIMIT {
        return s;
    }
    let mut cut = SHOW_LIMIT;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}... ({} bytes)", &s[..cut], s.len())
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Something a client's reader task saw.
#[derive(Debug, Clone)]
enum Incoming {
    Text(String),
    Binary(usize),
    /// The connection ended; 1006 when there was no close frame, 1005 when
    /// the close frame had no code.
    Closed {
        code: u16,
        reason: String,
    },
}

impl Incoming {
    fn describe(&self) -> String {
        match self {
            Incoming::Text(t) => {
                let v = serde_json::from_str::<Value>(t).unwrap_or(Value::String(t.clone()));
                show(&v)
            }
            Incoming::Binary(n) => format!("<binary frame of {n} bytes>"),
            Incoming::Closed { code, reason } => format!("<closed: code {code} {reason:?}>"),
        }
    }
}

/// One named WebSocket client: a write half and a queue of what its reader
/// task received.
struct Client {
    sink: SplitSink<Ws, Message>,
    rx: mpsc::UnboundedReceiver<Incoming>,
    pending: VecDeque<Incoming>,
    closed: Option<Incoming>,
    muted: Arc<AtomicBool>,
    reader: JoinHandle<()>,
}

impl Client {
    fn start(ws: Ws) -> Client {
        let (sink, stream) = ws.split();
        let (tx, rx) = mpsc::unbounded_channel();
        let muted = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(read_loop(stream, tx, muted.clone()));
        Client {
            sink,
            rx,
            pending: VecDeque::new(),
            closed: None,
            muted,
            reader,
        }
    }

    /// The next event, or `None` if nothing arrives before `deadline`. Once
    /// the connection is closed every call returns the close again.
    async fn next(&mut self, deadline: Instant) -> Option<Incoming> {
        if let Some(ev) = self.pending.pop_front() {
            return Some(ev);
        }
        if let Some(c) = &self.closed {
            return Some(c.clone());
        }
        let ev = match tokio::time::timeout_at(deadline, self.rx.recv()).await {
            Err(_) => return None,
            Ok(Some(ev)) => ev,
            Ok(None) => Incoming::Closed {
                code: 1006,
                reason: "reader stopped".into(),
            },
        };
        if matches!(ev, Incoming::Closed { .. }) {
            self.closed = Some(ev.clone());
        }
        Some(ev)
    }

    fn is_closed(&mut self) -> bool {
        if self.closed.is_some() {
            return true;
        }
        while let Ok(ev) = self.rx.try_recv() {
            let closed = matches!(ev, Incoming::Closed { .. });
            if closed {
                self.closed = Some(ev.clone());
            }
            self.pending.push_back(ev);
            if closed {
                return true;
            }
        }
        false
    }

    fn discard_queued(&mut self) {
        while let Ok(ev) = self.rx.try_recv() {
            if matches!(ev, Incoming::Closed { .. }) {
                self.closed = Some(ev);
            }
        }
        self.pending.clear();
    }
}

async fn read_loop(
    mut stream: SplitStream<Ws>,
    tx: mpsc::UnboundedSender<Incoming>,
    muted: Arc<AtomicBool>,
) {
    let mut closed = false;
    while let Some(msg) = stream.next().await {
        let ev = match msg {
            Ok(Message::Text(t)) => Incoming::Text(t.to_string()),
            Ok(Message::Binary(b)) => Incoming::Binary(b.len()),
            Ok(Message::Close(frame)) => {
                closed = true;
                match frame {
                    Some(f) => Incoming::Closed {
                        code: u16::from(f.code),
                        reason: f.reason.to_string(),
                    },
                    None => Incoming::Closed {
                        code: 1005,
                        reason: String::new(),
                    },
                }
            }
            Ok(_) => continue,
            Err(e) => {
                if !closed {
                    let _ = tx.send(Incoming::Closed {
                        code: 1006,
                        reason: e.to_string(),
                    });
                }
                return;
            }
        };
        let is_frame = !matches!(ev, Incoming::Closed { .. });
        if is_frame && muted.load(Ordering::Relaxed) {
            continue;
        }
        if tx.send(ev).is_err() {
            return;
        }
    }
    if !closed {
        let _ = tx.send(Incoming::Closed {
            code: 1006,
            reason: "connection ended without a close frame".into(),
        });
    }
}

/// The state of one running case.
struct CaseRun<'a> {
    opts: &'a RunOptions,
    file: &'a SuiteFile,
    target: &'a Target,
    /// The client of `http` steps.
    http: &'a HttpClient,
    vars: Vars,
    clients: HashMap<String, Client>,
}

fn random_run_id() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

impl<'a> CaseRun<'a> {
    async fn run(&mut self, case: &Case) -> Result<(), String> {
        self.vars.insert("run".into(), Value::from(random_run_id()));
        let mut pending: Vec<(String, Value)> = self
            .file
            .vars
            .iter()
            .filter(|(k, _)| !case.vars.contains_key(*k))
            .chain(case.vars.iter())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // Variables may refer to each other: resolve in passes until no
        // pass makes progress.
        while !pending.is_empty() {
            let before = pending.len();
            let mut left = Vec::new();
            let mut last_err = String::new();
            for (k, v) in pending.drain(..) {
                match self.resolve(&v, Mode::Send) {
                    Ok(r) => {
                        self.vars.insert(k, r);
                    }
                    Err(e) => {
                        last_err = format!("variable {k:?}: {e}");
                        left.push((k, v));
                    }
                }
            }
            if left.len() == before {
                return Err(last_err);
            }
            pending = left;
        }
        self.exec_steps(&case.steps, "").await
    }

    /// Closes every client still open and waits (up to a second, all at
    /// once) for the server's close replies: a server that removes members
    /// before replying has then told everyone, so this case's clients
    /// cannot leak events into the next case.
    async fn teardown(&mut self) {
        let clients: Vec<Client> = self.clients.drain().map(|(_, c)| c).collect();
        let deadline = Instant::now() + Duration::from_millis(1000);
        let closing = clients.into_iter().map(|mut c| async move {
            if c.closed.is_none() {
                let sent = tokio::time::timeout(
                    Duration::from_millis(200),
                    c.sink.send(Message::Close(None)),
                )
                .await;
                if matches!(sent, Ok(Ok(()))) {
                    while let Some(ev) = c.next(deadline).await {
                        if matches!(ev, Incoming::Closed { .. }) {
                            break;
                        }
                    }
                }
            }
            c.reader.abort();
        });
        futures_util::future::join_all(closing).await;
    }

    fn env(&self) -> Env<'_> {
        Env::new(&self.vars, &self.file.templates, &self.opts.jwt_secret)
    }

    fn resolve(&self, v: &Value, mode: Mode) -> Result<Value, String> {
        resolve::resolve(v, &self.env(), mode)
    }

    fn text(&self, s: &str) -> Result<String, String> {
        resolve::interpolate_str(s, &self.env())
    }

    fn names(&self, c: &Clients) -> Result<Vec<String>, String> {
        c.names().iter().map(|n| self.text(n)).collect()
    }

    fn timeout(&self, ms: Option<u64>) -> Duration {
        Duration::from_millis(
            ms.or(self.file.defaults.timeout_ms)
                .unwrap_or(DEFAULT_TIMEOUT_MS),
        )
    }

    fn client(&mut self, name: &str) -> Result<&mut Client, String> {
        self.clients
            .get_mut(name)
            .ok_or_else(|| format!("no client named {name:?} (connect it first)"))
    }

    fn capture(&mut self, caps: Captures) {
        for (k, v) in caps {
            self.vars.insert(k, v);
        }
    }

    async fn exec_steps(&mut self, steps: &[Step], prefix: &str) -> Result<(), String> {
        for (i, step) in steps.iter().enumerate() {
            let label = format!("{prefix}step {} ({})", i + 1, self.describe(step));
            match step {
                Step::Repeat(r) => self.repeat(r, &label).await?,
                other => self
                    .exec(other)
                    .await
                    .map_err(|e| format!("{label}: {e}"))?,
            }
        }
        Ok(())
    }

    fn describe(&self, step: &Step) -> String {
        let who = |c: &Clients| self.names(c).unwrap_or_else(|_| c.names()).join(", ");
        match step {
            Step::Connect(s) => format!(
                "connect {}",
                self.text(&s.connect).unwrap_or(s.connect.clone())
            ),
            Step::Send(s) => format!("send {}", who(&s.send)),
            Step::Expect(s) => format!("expect {}", who(&s.expect)),
            Step::ExpectNone(s) => format!("expect_none {}", who(&s.expect_none)),
            Step::ExpectClose(s) => format!("expect_close {}", who(&s.expect_close)),
            Step::Http(s) => format!(
                "http {} {}",
                s.http,
                self.text(&s.path).unwrap_or(s.path.clone())
            ),
            Step::Close(s) => format!("close {}", who(&s.close)),
            Step::Sleep(s) => format!("sleep_ms {}", s.sleep_ms),
            Step::Set(_) => "set".into(),
            Step::Mute(s) => match (&s.mute, &s.unmute) {
                (Some(m), _) => format!("mute {}", who(m)),
                (None, Some(u)) => format!("unmute {}", who(u)),
                _ => "mute".into(),
            },
            Step::Repeat(_) => "repeat".into(),
        }
    }

    async fn repeat(&mut self, r: &RepeatStep, label: &str) -> Result<(), String> {
        let spec = self
            .resolve(&r.repeat, Mode::Send)
            .map_err(|e| format!("{label}: {e}"))?;
        // A list: one iteration per element. A count: a counter from `from`.
        let values: Vec<Value> = match spec {
            Value::Array(items) => items,
            other => {
                let count = other
                    .as_u64()
                    .or_else(|| other.as_str().and_then(|s| s.trim().parse().ok()))
                    .ok_or_else(|| {
                        format!("{label}: repeat takes a count or a list of values, got {other}")
                    })?;
                (0..count)
                    .map(|k| {
                        let n = r.from.saturating_add(i64::try_from(k).unwrap_or(i64::MAX));
                        match r.width {
                            Some(w) => Value::from(format!("{n:0w$}")),
                            None => Value::from(n),
                        }
                    })
                    .collect()
            }
        };
        for value in values {
            let shown = show(&value);
            self.vars.insert(r.var.clone(), value);
            let prefix = format!("{label} {}={shown} > ", r.var);
            Box::pin(self.exec_steps(&r.steps, &prefix)).await?;
        }
        Ok(())
    }

    async fn exec(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Connect(s) => self.connect(s).await,
            Step::Send(s) => self.send(s).await,
            Step::Expect(s) => self.expect(s).await,
            Step::ExpectNone(s) => self.expect_none(s).await,
            Step::ExpectClose(s) => self.expect_close(s).await,
            Step::Http(s) => self.http(s).await,
            Step::Close(s) => self.close(s).await,
            Step::Sleep(s) => {
                tokio::time::sleep(Duration::from_millis(s.sleep_ms)).await;
                Ok(())
            }
            Step::Set(s) => {
                for (k, v) in &s.set {
                    let name = self.text(k)?;
                    let value = self.resolve(v, Mode::Send)?;
                    self.vars.insert(name, value);
                }
                Ok(())
            }
            Step::Mute(s) => self.mute(s),
            Step::Repeat(_) => Err("nested repeat reached exec".into()),
        }
    }

    async fn connect(&mut self, s: &ConnectStep) -> Result<(), String> {
        let name = self.text(&s.connect)?;
        if let Some(c) = self.clients.get_mut(&name) {
            if !c.is_closed() {
                return Err(format!(
                    "client {name:?} is still connected; close it first"
                ));
            }
            c.reader.abort();
            self.clients.remove(&name);
        }
        let token = if let Some(claims) = &s.claims {
            let claims = self.resolve(claims, Mode::Send)?;
            let Value::Object(claims) = claims else {
                return Err(format!("claims must be an object, got {claims}"));
            };
            Some(resolve::mint_token(
                &claims,
                &self.opts.jwt_secret,
                "HS256",
                Some("JWT".into()),
                false,
                Some("connect"),
            )?)
        } else if let Some(t) = &s.token {
            match self.resolve(t, Mode::Send)? {
                Value::String(t) => Some(t),
                Value::Null => None,
                other => return Err(format!("token must be a string, got {other}")),
            }
        } else {
            None
        };
        let path = match s.path.as_ref().or(self.file.defaults.path.as_ref()) {
            Some(p) => self.text(p)?,
            None => DEFAULT_PATH.to_string(),
        };
        let mut query = Vec::new();
        if let Some(t) = &token {
            query.push(format!("token={}", pct(t)));
        }
        if let Some(q) = &s.query {
            query.push(self.text(q)?);
        }
        let url = self.target.ws_url(&path, &query.join("&"));
        let shown_url = self.target.ws_url(&path, "");
        let timeout = self.timeout(s.timeout_ms);
        let want_refusal = s.status.filter(|c| *c != 101);
        let request = {
            use tungstenite::client::IntoClientRequest;
            let mut req = url
                .as_str()
                .into_client_request()
                .map_err(|e| format!("invalid URL {shown_url}: {e}"))?;
            let protocol = match s.protocol.as_ref().or(self.file.defaults.protocol.as_ref()) {
                Some(p) => self.text(p)?,
                None => String::new(),
            };
            if !protocol.is_empty() {
                let value = tungstenite::http::HeaderValue::from_str(&protocol)
                    .map_err(|e| format!("invalid protocol {protocol:?}: {e}"))?;
                req.headers_mut().insert("Sec-WebSocket-Protocol", value);
            }
            req
        };
        let res = tokio::time::timeout(timeout, tokio_tungstenite::connect_async(request)).await;
        match res {
            Err(_) => Err(format!(
                "upgrade of {shown_url} timed out after {} ms",
                timeout.as_millis()
            )),
            Ok(Err(tungstenite::Error::Http(resp))) => {
                let code = resp.status().as_u16();
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                match want_refusal {
                    Some(want) if want == code => Ok(()),
                    Some(want) => Err(format!(
                        "upgrade of {shown_url} refused with HTTP {code}, expected HTTP {want} {body}"
                    )),
                    None => Err(format!(
                        "upgrade of {shown_url} refused with HTTP {code} {body}"
                    )),
                }
            }
            Ok(Err(e)) => Err(format!("connect to {shown_url}: {e}")),
            Ok(Ok((ws, _))) => {
                let mut client = Client::start(ws);
                if let Some(want) = want_refusal {
                    let _ = client.sink.send(Message::Close(None)).await;
                    client.reader.abort();
                    return Err(format!(
                        "upgrade of {shown_url} succeeded, expected HTTP {want}"
                    ));
                }
                self.clients.insert(name.clone(), client);
                if s.expect.is_empty() {
                    return Ok(());
                }
                let opts = ExpectOpts {
                    timeout,
                    partial: false,
                    seek: false,
                    optional: false,
                    unordered: false,
                };
                self.expect_on(&name, &s.expect, opts).await
            }
        }
    }

    async fn send(&mut self, s: &SendStep) -> Result<(), String> {
        let text = if let Some(f) = &s.frame {
            self.resolve(f, Mode::Send)?.to_string()
        } else if let Some(t) = &s.text {
            self.text(t)?
        } else if let Some(n) = s.size {
            padded_frame(n)?
        } else {
            return Err("send needs frame, text or size".into());
        };
        for name in self.names(&s.send)? {
            let client = self.client(&name)?;
            let res = client.sink.send(Message::text(text.clone())).await;
            // An oversized frame may legitimately make the server close
            // the socket while we are still writing it.
            if let Err(e) = res
                && s.size.is_none()
            {
                return Err(format!("sending on {name:?} failed: {e}"));
            }
        }
        Ok(())
    }

    async fn expect(&mut self, s: &ExpectStep) -> Result<(), String> {
        let raw: Vec<Value> = match (&s.frame, &s.frames) {
            (Some(f), _) => vec![f.clone()],
            (None, Some(fs)) => fs.clone(),
            (None, None) => Vec::new(),
        };
        let opts = ExpectOpts {
            timeout: self.timeout(s.timeout_ms),
            partial: s.partial,
            seek: s.seek,
            optional: s.optional,
            unordered: s.unordered,
        };
        let names = self.names(&s.expect)?;
        for name in &names {
            self.expect_on(name, &raw, opts).await.map_err(|e| {
                if names.len() > 1 {
                    format!("on {name}: {e}")
                } else {
                    e
                }
            })?;
        }
        Ok(())
    }

    /// Matches the next frames of one client against `raw` patterns. In
    /// order, each pattern is resolved just before its frame is matched, so
    /// it can use what earlier frames captured.
    async fn expect_on(&mut self, name: &str, raw: &[Value], o: ExpectOpts) -> Result<(), String> {
        let mopts = MatchOptions { partial: o.partial };
        let n = raw.len();
        let ms = o.timeout.as_millis();
        if o.unordered {
            let patterns = raw
                .iter()
                .map(|p| self.resolve(p, Mode::Expect))
                .collect::<Result<Vec<_>, _>>()?;
            let client = self.client(name)?;
            let mut got = Vec::with_capacity(n);
            for k in 0..n {
                let deadline = Instant::now() + o.timeout;
                match client.next(deadline).await {
                    None => {
                        return Err(format!(
                            "timed out after {ms} ms waiting for frame {}/{n} (in any order)\n    expected: {}\n    received so far: {}",
                            k + 1,
                            show(&Value::Array(patterns.to_vec())),
                            show(&Value::Array(got))
                        ));
                    }
                    Some(Incoming::Text(t)) => got.push(parse_frame(&t)),
                    Some(other) => {
                        return Err(format!(
                            "got {} while waiting for frame {}/{n} (in any order)\n    expected: {}",
                            other.describe(),
                            k + 1,
                            show(&Value::Array(patterns.to_vec()))
                        ));
                    }
                }
            }
            let caps = matcher::match_unordered(&patterns, &got, mopts).map_err(|m| {
                format!(
                    "frames did not match in any order: {m}\n    expected: {}\n    actual:   {}",
                    show(&Value::Array(patterns.to_vec())),
                    show(&Value::Array(got.clone()))
                )
            })?;
            self.capture(caps);
            return Ok(());
        }
        for (k, raw_pattern) in raw.iter().enumerate() {
            let pattern = &self.resolve(raw_pattern, Mode::Expect)?;
            let which = if n > 1 {
                format!("frame {}/{n}", k + 1)
            } else {
                "frame".to_string()
            };
            let deadline = Instant::now() + o.timeout;
            let mut skipped: Vec<String> = Vec::new();
            loop {
                let client = self.client(name)?;
                let ev = client.next(deadline).await;
                let Some(ev) = ev else {
                    if o.optional {
                        return Ok(());
                    }
                    let mut msg = format!(
                        "timed out after {ms} ms waiting for {which}\n    expected: {}",
                        show(pattern)
                    );
                    if !skipped.is_empty() {
                        msg.push_str(&format!(
                            "\n    skipped {} non-matching frame(s), last: {}",
                            skipped.len(),
                            skipped.last().cloned().unwrap_or_default()
                        ));
                    }
                    return Err(msg);
                };
                let actual = match &ev {
                    Incoming::Text(t) => parse_frame(t),
                    other => {
                        if o.optional {
                            client.pending.push_front(ev.clone());
                            return Ok(());
                        }
                        return Err(format!(
                            "got {} while waiting for {which}\n    expected: {}",
                            other.describe(),
                            show(pattern)
                        ));
                    }
                };
                match matcher::match_value(pattern, &actual, mopts) {
                    Ok(caps) => {
                        self.capture(caps);
                        break;
                    }
                    Err(_) if o.optional => {
                        client.pending.push_front(ev);
                        return Ok(());
                    }
                    Err(_) if o.seek => skipped.push(show(&actual)),
                    Err(m) => {
                        return Err(format!(
                            "{which} did not match {m}\n    expected: {}\n    actual:   {}",
                            show(pattern),
                            show(&actual)
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    async fn expect_none(&mut self, s: &ExpectNoneStep) -> Result<(), String> {
        let ms = s
            .for_ms
            .or(self.file.defaults.expect_none_ms)
            .unwrap_or(DEFAULT_NONE_MS);
        let deadline = Instant::now() + Duration::from_millis(ms);
        for name in self.names(&s.expect_none)? {
            let client = self.client(&name)?;
            if let Some(ev) = client.next(deadline).await {
                return Err(format!(
                    "expected nothing on {name} for {ms} ms, got {}",
                    ev.describe()
                ));
            }
        }
        Ok(())
    }

    async fn expect_close(&mut self, s: &ExpectCloseStep) -> Result<(), String> {
        let timeout = self.timeout(s.timeout_ms);
        for name in self.names(&s.expect_close)? {
            let client = self.client(&name)?;
            let deadline = Instant::now() + timeout;
            loop {
                match client.next(deadline).await {
                    None => {
                        return Err(format!(
                            "{name}: no close within {} ms",
                            timeout.as_millis()
                        ));
                    }
                    Some(Incoming::Closed { code, reason }) => {
                        if let Some(want) = s.code
                            && want != code
                        {
                            return Err(format!(
                                "{name}: closed with code {code} ({reason:?}), expected {want}"
                            ));
                        }
                        break;
                    }
                    Some(_) if s.allow_frames => {}
                    Some(ev) => {
                        return Err(format!("{name}: expected a close, got {}", ev.describe()));
                    }
                }
            }
        }
        Ok(())
    }

    async fn http(&mut self, s: &HttpStep) -> Result<(), String> {
        let method = self.text(&s.http)?.to_ascii_uppercase();
        let path = self.text(&s.path)?;
        let body: Option<Vec<u8>> = if let Some(b) = &s.body {
            Some(self.resolve(b, Mode::Send)?.to_string().into_bytes())
        } else if let Some(t) = &s.text {
            Some(self.text(t)?.into_bytes())
        } else {
            None
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        for (k, v) in &s.headers {
            headers.push((self.text(k)?, self.text(v)?));
        }
        let has = |hs: &[(String, String)], name: &str| {
            hs.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
        };
        if s.body.is_some() && !has(&headers, "content-type") {
            headers.push(("Content-Type".into(), "application/json".into()));
        }
        let bearer = match &s.auth {
            None | Some(Value::Bool(true)) => self.opts.api_key.clone(),
            Some(Value::Bool(false) | Value::Null) => None,
            Some(Value::String(k)) => Some(self.text(k)?),
            Some(other) => return Err(format!("auth must be a bool or a string, got {other}")),
        };
        if let Some(k) = bearer
            && !has(&headers, "authorization")
        {
            headers.push(("Authorization".into(), format!("Bearer {k}")));
        }
        let pattern = match &s.response {
            Some(p) => Some(self.resolve(p, Mode::Expect)?),
            None => None,
        };
        let timeout = Duration::from_millis(s.timeout_ms.unwrap_or(HTTP_TIMEOUT_MS));
        let retry_until = s
            .retry_for_ms
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        let scheme = if self.target.scheme == "wss" {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{}/", self.target.authority);
        let http_target = http_client::Target::parse(
            "--url",
            &url,
            UserInfo::Refused("give the API key with --api-key"),
        )?
        .with_path(&path)?;
        let method = axum::http::Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("{method:?} is not an HTTP method"))?;
        let header_refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        loop {
            let attempt = self
                .http
                .send(
                    &http_target,
                    method.clone(),
                    &header_refs,
                    body.clone().map(|bytes| http_client::Body {
                        content_type: None,
                        bytes: bytes.into(),
                    }),
                    MAX_RESPONSE_BYTES,
                    timeout,
                )
                .await;
            let outcome = match attempt {
                Err(http_client::HttpError::Timeout { .. }) => {
                    Err(format!("no response within {} ms", timeout.as_millis()))
                }
                Err(e) => Err(e.to_string()),
                Ok(resp) => check_response(&resp, s.status, pattern.as_ref(), s.partial),
            };
            match outcome {
                Ok(caps) => {
                    self.capture(caps);
                    return Ok(());
                }
                Err(e) => match retry_until {
                    Some(t) if Instant::now() + Duration::from_millis(100) < t => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Some(_) => {
                        return Err(format!(
                            "still failing after retrying for {} ms: {e}",
                            s.retry_for_ms.unwrap_or(0)
                        ));
                    }
                    None => return Err(e),
                },
            }
        }
    }

    async fn close(&mut self, s: &CloseStep) -> Result<(), String> {
        for name in self.names(&s.close)? {
            let mut client = self
                .clients
                .remove(&name)
                .ok_or_else(|| format!("no client named {name:?}"))?;
            if s.abrupt {
                client.reader.abort();
                drop(client);
                continue;
            }
            if client.closed.is_none() {
                let frame = CloseFrame {
                    code: CloseCode::from(s.code.unwrap_or(1000)),
                    reason: "".into(),
                };
                let _ = client.sink.send(Message::Close(Some(frame))).await;
                // Wait briefly for the server's close reply so the
                // connection ends cleanly.
                let deadline = Instant::now() + Duration::from_millis(1000);
                while let Some(ev) = client.next(deadline).await {
                    if matches!(ev, Incoming::Closed { .. }) {
                        break;
                    }
                }
            }
            client.reader.abort();
        }
        Ok(())
    }

    fn mute(&mut self, s: &MuteStep) -> Result<(), String> {
        if let Some(m) = &s.mute {
            for name in self.names(m)? {
                let c = self.client(&name)?;
                c.muted.store(true, Ordering::Relaxed);
                c.discard_queued();
            }
        }
        if let Some(u) = &s.unmute {
            for name in self.names(u)? {
                self.client(&name)?.muted.store(false, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct ExpectOpts {
    timeout: Duration,
    partial: bool,
    seek: bool,
    optional: bool,
    unordered: bool,
}

fn parse_frame(t: &str) -> Value {
    serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_string()))
}

fn check_response(
    resp: &http_client::Response,
    status: Option<u16>,
    pattern: Option<&Value>,
    partial: bool,
) -> Result<Captures, String> {
    let text = String::from_utf8_lossy(&resp.body);
    let body = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone().into_owned()))
    };
    if let Some(want) = status
        && want != resp.status
    {
        return Err(format!(
            "status {}, expected {want}; body: {}",
            resp.status,
            show(&body)
        ));
    }
    match pattern {
        None => Ok(Vec::new()),
        Some(p) => matcher::match_value(p, &body, MatchOptions { partial }).map_err(|m| {
            format!(
                "response body did not match {m}\n    expected: {}\n    actual:   {}",
                show(p),
                show(&body)
            )
        }),
    }
}

/// A valid JSON text frame of exactly `n` bytes:
/// `{"event":"hotsock.ping","data":"xxx..."}`.
fn padded_frame(n: usize) -> Result<String, String> {
    const HEAD: &str = "{\"event\":\"hotsock.ping\",\"data\":\"";
    const TAIL: &str = "\"}";
    let fixed = HEAD.len() + TAIL.len();
    if n < fixed {
        return Err(format!("size must be at least {fixed} bytes"));
    }
    let mut s = String::with_capacity(n);
    s.push_str(HEAD);
    s.extend(std::iter::repeat_n('x', n - fixed));
    s.push_str(TAIL);
    Ok(s)
}

#[cfg(test)]
mod tests;
