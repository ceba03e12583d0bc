//! The scripted suite format: files of cases, cases of steps.
//!
//! A suite is a directory of `*.json` files (or one file). Files whose name
//! starts with `_` hold shared `defaults`, `vars` and `templates` for every
//! suite file in the same directory and contain no cases. See
//! `conformance/README.md` for the full format with examples.
//!
//! # Format
//! ```text
//! {"description": "...", "defaults": {"path": "/hotsock", "timeout_ms": 2000},
//!  "vars": {"name": value}, "templates": {"name": {"params": {..}, "value": ..}},
//!  "cases": [{"name": "...", "vars": {..}, "requires": ["api_key"], "skip": "why",
//!             "steps": [{"connect": "jim", "claims": {..}}, {"send": "jim", "frame": {..}},
//!                       {"expect": "jim", "frame": {..}}, ...]}]}
//! ```
//! Every step is an object with exactly one verb key (`connect`, `send`,
//! `expect`, `expect_none`, `expect_close`, `http`, `close`, `sleep_ms`,
//! `set`, `mute`, `unmute`, `repeat`); unknown keys are rejected when the
//! suite is loaded, so typos fail before anything runs.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One loaded suite file, with the shared `_*.json` settings of its
/// directory already merged in (the file's own entries win).
#[derive(Debug, Clone)]
pub struct SuiteFile {
    /// Where the file was read from.
    pub path: PathBuf,
    /// The name printed in `PASS`/`FAIL` lines: the path relative to the
    /// suite directory.
    pub display: String,
    /// Free text describing the file.
    pub description: Option<String>,
    /// Defaults for steps that do not say otherwise.
    pub defaults: Defaults,
    /// Variables available to every case (resolved per case, so they may
    /// use `${run}`).
    pub vars: Map<String, Value>,
    /// Named value templates, used as `{"$template": "name", ...args}`.
    pub templates: BTreeMap<String, Template>,
    /// The cases, in file order.
    pub cases: Vec<Case>,
}

/// File-level defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// WebSocket path appended to the runner's URL when a `connect` step
    /// gives none (the runner's own default is `/hotsock`).
    pub path: Option<String>,
    /// Timeout of `expect`, `expect_close` and `connect` steps, in ms
    /// (runner default 2000).
    pub timeout_ms: Option<u64>,
    /// Duration of `expect_none` steps without `for_ms` (runner default 500).
    pub expect_none_ms: Option<u64>,
    /// WebSocket subprotocol `connect` steps offer when they give none
    /// (e.g. `presence.esegece.com`).
    pub protocol: Option<String>,
}

impl Defaults {
    fn merge_from(&mut self, base: &Defaults) {
        if self.path.is_none() {
            self.path.clone_from(&base.path);
        }
        if self.timeout_ms.is_none() {
            self.timeout_ms = base.timeout_ms;
        }
        if self.expect_none_ms.is_none() {
            self.expect_none_ms = base.expect_none_ms;
        }
        if self.protocol.is_none() {
            self.protocol.clone_from(&base.protocol);
        }
    }
}

/// A reusable value with parameters: `params` maps each parameter to its
/// default; inside `value`, `${param}` refers to an argument.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Parameter names and default values.
    #[serde(default)]
    pub params: Map<String, Value>,
    /// The template body (a frame, a pattern, claims, ...).
    pub value: Value,
    /// Free text.
    #[serde(default)]
    pub comment: Option<Value>,
}

/// One named scenario: a list of steps run in order on fresh clients.
#[derive(Debug, Clone)]
pub struct Case {
    /// Case name, unique within its file; `--filter` matches a substring.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Runner features the case needs; currently only `"api_key"` (the
    /// case is skipped when the runner has no `--api-key`).
    pub requires: Vec<String>,
    /// When set, the case is not run and the reason is printed.
    pub skip: Option<String>,
    /// Case variables (resolved at case start, may refer to each other).
    pub vars: Map<String, Value>,
    /// The steps.
    pub steps: Vec<Step>,
}

/// One client name or several: `"jim"` or `["jim", "pam"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Clients {
    /// A single client.
    One(String),
    /// Several clients; the step applies to each in turn.
    Many(Vec<String>),
}

impl Clients {
    /// The names as a list.
    pub fn names(&self) -> Vec<String> {
        match self {
            Clients::One(s) => vec![s.clone()],
            Clients::Many(v) => v.clone(),
        }
    }
}

/// Opens a WebSocket for a named client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectStep {
    /// Client name.
    pub connect: String,
    /// Claims of an HS256 token signed with `--jwt-secret`; `exp` defaults
    /// to now + 1 h and `scope` to `"connect"`; a claim set to `null` is
    /// left out.
    pub claims: Option<Value>,
    /// The token as a value (a raw string, or `{"$token": ...}`); without
    /// `claims` or `token` no `token` query parameter is sent.
    pub token: Option<Value>,
    /// Path appended to the runner URL (default from `defaults.path`).
    pub path: Option<String>,
    /// Extra query string appended after the token (`a=1&b=2`).
    pub query: Option<String>,
    /// WebSocket subprotocol to offer in `Sec-WebSocket-Protocol` (default
    /// `defaults.protocol`); the upgrade then fails unless the server
    /// selects it. `""` offers none.
    pub protocol: Option<String>,
    /// Expected HTTP status when the upgrade must be refused (e.g. 401);
    /// absent or 101 means the upgrade must succeed.
    pub status: Option<u16>,
    /// Frames expected right after connecting, in order.
    #[serde(default)]
    pub expect: Vec<Value>,
    /// Timeout for the upgrade and each expected frame, in ms.
    pub timeout_ms: Option<u64>,
    /// Free text.
    #[serde(default)]
    pub comment: Option<Value>,
}

/// Sends one WebSocket text frame.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendStep {
    /// Client (or clients) that send.
    pub send: Clients,
    /// A JSON value, serialized compactly after resolving `${var}`,
    /// `$token` and other value directives.
    pub frame: Option<Value>,
    /// Raw text sent as is (after `${var}` substitution), for malformed
    /// input.
    pub text: Option<String>,
    /// A text frame of exactly this many bytes: a valid JSON
    /// `{"event":"hotsock.ping","data":"xxxx..."}` padded to the size.
    pub size: Option<usize>,
    /// Free text.
    #[serde(default)]
    pub comment: Option<Value>,
}

/// Waits for the next frame(s) on a client and matches them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectStep {
    /// Client (or clients, each checked in turn) that must receive.
    pub expect: Clients,
    /// One expected frame (a pattern).
    pub frame: Option<Value>,
    /// Several expected frames, in order unless `unordered`.
    pub frames: Option<Vec<Value>>,
    /// Accept the `frames` in any order.
    #[serde(default)]
    pub unordered: bool,
    /// Objects may carry keys the pattern does not list, at every level.
    #[serde(default)]
    pub partial: bool,
    /// Drop non-matching frames until a matching one arrives (within the
    /// timeout).
    #[serde(default)]
    pub seek: bool,
    /// The frame may be missing: if the next frame does not match, or none
    /// arrives in time, it is left in place and the step passes.
    #[serde(default)]
    pub optional: bool,
    /// Timeout per frame, in ms (default 2000).
    pub timeout_ms: Option<u64>,
    /// Free text.
    #[serde(default)]
    pub comment: Option<Value>,
}

/// Checks that no frame (and no close) arrives for a while.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectNoneStep {
    /// Client (or clients, checked concurrently).
    pub expect_none: Clients,
    /// How long to wait, in ms (default 500).
    pub for_ms: Option<u64>,
    /// Free text.
    #[serde(default)]
    pub comment: Option<Value>,
}

/// Waits for the server to close the connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectCloseStep {
    /// Client.
    pub expect_close: Clients,
    /// Expected close code; 1006 stands for "closed without a close
    /// frame". Absent: any code.
    pub code: Option<u16>,
    /// Discard frames that arrive before the close instead of failing.
    #[serde(default)]
    pub allow_frames: bool,
    /// Timeout in ms (default 2000).
    pub timeout_ms: Option<u64>,
    /// Free text.
    #[serde(default)]
    pub comment: Option<Value>,
}

/// One HTTP/1.1 request to the server's HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpStep {
    /// Method, e.g. `"GET"` or `"POST"`.
    pub http: String,
    /// Request path (with query), e.g. `/api/channels/${room}`.
    pub path: String,
    /// JSON body (sent with `Content-Type: application/json`).
    pub body: Option<Value>,
    /// Raw text body instead of `body`.
    pub text: Option<String>,
    /// `true` (default): `Authorization: Bearer <--api-key>` when an API
    /// key is given; `false`: no header; a string: that bearer token.
    pub auth: Option<Value>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Expected status code.
    pub status: Option<u16>,
    /// Pattern for the response body (parsed as JSON when possible,
    /// otherwise matched as a string).
    pub response: Option<Value>,
    /// Partial object matching for `response`.
    #[serde(default)]
    pub partial: bool,
    /// Repeat the request every 100 ms until status and response match,
    /// for at most this many ms.
    pub retry_for_ms: Option<u64>,
    /// Timeout of one request in ms (default 5000).
    pub timeout_ms: Option<u64>,
    /// Free text.
    #[serde(default)]
    pub comment: Option<Value>,
}

/// Closes a client's connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseStep {
    /// Client (or clients).
    pub close: Clients,
    /// Close code sent (default 1000).
    pub code: Option<u16>,
    /// Drop the TCP connection without a close frame.
    #[serde(default)]
    pub abrupt: bool,
    /// Free text.
    #[serde(default)]
    pub comment: Option<Value>,
}

/// Pauses the case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepStep {
    /// Milliseconds.
    pub sleep_ms: u64,
    /// Free text.
    #[serde(default)]
    pub comment: Option<Value>,
}

/// Sets case variables (values are resolved first).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetStep {
    /// Variable names and values.
    pub set: Map<String, Value>,
    /// Free text.
    #[serde(default)]
    pub comment: Option<Value>,
}

/// Makes clients discard (mute) or keep (unmute) incoming frames.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MuteStep {
    /// Clients to mute.
    #[serde(default)]
    pub mute: Option<Clients>,
    /// Clients to unmute.
    #[serde(default)]
    pub unmute: Option<Clients>,
    /// Free text.
    #[serde(default)]
    pub comment: Option<Value>,
}

/// Runs nested steps several times with a counter variable.
#[derive(Debug, Clone)]
pub struct RepeatStep {
    /// Iteration count (a number, or a string such as `"${n}"`), or a
    /// list of values to bind `var` to in turn.
    pub repeat: Value,
    /// Counter (or element) variable name (default `i`).
    pub var: String,
    /// First counter value (default 1).
    pub from: i64,
    /// Zero-pad the counter to this width (then it is a string).
    pub width: Option<usize>,
    /// The nested steps.
    pub steps: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepeat {
    repeat: Value,
    #[serde(default)]
    var: Option<String>,
    #[serde(default)]
    from: Option<i64>,
    #[serde(default)]
    width: Option<usize>,
    steps: Vec<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    comment: Option<Value>,
}

/// One step of a case.
#[derive(Debug, Clone)]
pub enum Step {
    /// `{"connect": ...}`
    Connect(ConnectStep),
    /// `{"send": ...}`
    Send(SendStep),
    /// `{"expect": ...}`
    Expect(ExpectStep),
    /// `{"expect_none": ...}`
    ExpectNone(ExpectNoneStep),
    /// `{"expect_close": ...}`
    ExpectClose(ExpectCloseStep),
    /// `{"http": ...}`
    Http(HttpStep),
    /// `{"close": ...}`
    Close(CloseStep),
    /// `{"sleep_ms": ...}`
    Sleep(SleepStep),
    /// `{"set": ...}`
    Set(SetStep),
    /// `{"mute": ...}` / `{"unmute": ...}`
    Mute(MuteStep),
    /// `{"repeat": ...}`
    Repeat(RepeatStep),
}

const VERBS: &[&str] = &[
    "connect",
    "send",
    "expect",
    "expect_none",
    "expect_close",
    "http",
    "close",
    "sleep_ms",
    "set",
    "mute",
    "unmute",
    "repeat",
];

fn typed<T: DeserializeOwned>(v: &Value) -> Result<T, String> {
    serde_json::from_value(v.clone()).map_err(|e| e.to_string())
}

impl Step {
    /// The verb of this step, for messages.
    pub fn verb(&self) -> &'static str {
        match self {
            Step::Connect(_) => "connect",
            Step::Send(_) => "send",
            Step::Expect(_) => "expect",
            Step::ExpectNone(_) => "expect_none",
            Step::ExpectClose(_) => "expect_close",
            Step::Http(_) => "http",
            Step::Close(_) => "close",
            Step::Sleep(_) => "sleep_ms",
            Step::Set(_) => "set",
            Step::Mute(_) => "mute",
            Step::Repeat(_) => "repeat",
        }
    }

    /// Parses and checks one step object.
    pub fn parse(v: &Value) -> Result<Step, String> {
        let Value::Object(obj) = v else {
            return Err(format!("a step must be an object, got {v}"));
        };
        // `expect` is also an option of `connect` (frames right after it).
        let verbs: Vec<&str> = VERBS
            .iter()
            .copied()
            .filter(|k| obj.contains_key(*k))
            .filter(|k| !(*k == "expect" && obj.contains_key("connect")))
            .collect();
        let verb = match verbs.as_slice() {
            [one] => *one,
            [] => {
                return Err(format!(
                    "a step needs one of the keys {}; got keys {:?}",
                    VERBS.join(", "),
                    obj.keys().collect::<Vec<_>>()
                ));
            }
            [_, _] if verbs.contains(&"mute") && verbs.contains(&"unmute") => "mute",
            many => return Err(format!("a step may have only one verb, got {many:?}")),
        };
        let step = match verb {
            "connect" => {
                let s: ConnectStep = typed(v)?;
                if s.claims.is_some() && s.token.is_some() {
                    return Err("connect: give `claims` or `token`, not both".into());
                }
                Step::Connect(s)
            }
            "send" => {
                let s: SendStep = typed(v)?;
                let n = usize::from(s.frame.is_some())
                    + usize::from(s.text.is_some())
                    + usize::from(s.size.is_some());
                if n != 1 {
                    return Err("send: give exactly one of `frame`, `text`, `size`".into());
                }
                Step::Send(s)
            }
            "expect" => {
                let s: ExpectStep = typed(v)?;
                if s.frame.is_some() == s.frames.is_some() {
                    return Err("expect: give exactly one of `frame`, `frames`".into());
                }
                if s.unordered && s.frames.is_none() {
                    return Err("expect: `unordered` needs `frames`".into());
                }
                if s.optional && (s.seek || s.frames.is_some()) {
                    return Err("expect: `optional` works with one `frame` and no `seek`".into());
                }
                Step::Expect(s)
            }
            "expect_none" => Step::ExpectNone(typed(v)?),
            "expect_close" => Step::ExpectClose(typed(v)?),
            "http" => {
                let s: HttpStep = typed(v)?;
                if s.body.is_some() && s.text.is_some() {
                    return Err("http: give `body` or `text`, not both".into());
                }
                Step::Http(s)
            }
            "close" => Step::Close(typed(v)?),
            "sleep_ms" => Step::Sleep(typed(v)?),
            "set" => Step::Set(typed(v)?),
            "mute" | "unmute" => Step::Mute(typed(v)?),
            "repeat" => {
                let r: RawRepeat = typed(v)?;
                let steps = parse_steps(&r.steps)?;
                Step::Repeat(RepeatStep {
                    repeat: r.repeat,
                    var: r.var.unwrap_or_else(|| "i".into()),
                    from: r.from.unwrap_or(1),
                    width: r.width,
                    steps,
                })
            }
            _ => return Err(format!("unknown verb {verb}")),
        };
        Ok(step)
    }
}

fn parse_steps(raw: &[Value]) -> Result<Vec<Step>, String> {
    raw.iter()
        .enumerate()
        .map(|(i, v)| Step::parse(v).map_err(|e| format!("steps[{}]: {e}", i + 1)))
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    requires: Vec<String>,
    #[serde(default)]
    skip: Option<String>,
    #[serde(default)]
    vars: Map<String, Value>,
    steps: Vec<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    comment: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    vars: Map<String, Value>,
    #[serde(default)]
    templates: BTreeMap<String, Template>,
    #[serde(default)]
    cases: Vec<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    comment: Option<Value>,
}

const KNOWN_REQUIREMENTS: &[&str] = &["api_key"];

fn parse_case(v: &Value) -> Result<Case, String> {
    let raw: RawCase = typed(v)?;
    if let Some(r) = raw
        .requires
        .iter()
        .find(|r| !KNOWN_REQUIREMENTS.contains(&r.as_str()))
    {
        return Err(format!(
            "case {:?}: unknown requirement {r:?} (known: {})",
            raw.name,
            KNOWN_REQUIREMENTS.join(", ")
        ));
    }
    let steps = parse_steps(&raw.steps).map_err(|e| format!("case {:?}: {e}", raw.name))?;
    Ok(Case {
        name: raw.name,
        description: raw.description,
        requires: raw.requires,
        skip: raw.skip,
        vars: raw.vars,
        steps,
    })
}

fn read_raw(path: &Path) -> Result<RawFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses the text of one suite file (without shared settings).
pub fn parse_file(path: &Path, display: &str, text: &str) -> Result<SuiteFile, String> {
    let raw: RawFile =
        serde_json::from_str(text).map_err(|e| format!("{}: {e}", path.display()))?;
    build(path, display, raw)
}

fn build(path: &Path, display: &str, raw: RawFile) -> Result<SuiteFile, String> {
    let mut cases = Vec::with_capacity(raw.cases.len());
    for (i, c) in raw.cases.iter().enumerate() {
        let case = parse_case(c).map_err(|e| format!("{}: cases[{i}]: {e}", path.display()))?;
        if cases.iter().any(|k: &Case| k.name == case.name) {
            return Err(format!(
                "{}: duplicate case name {:?}",
                path.display(),
                case.name
            ));
        }
        cases.push(case);
    }
    Ok(SuiteFile {
        path: path.to_path_buf(),
        display: display.to_string(),
        description: raw.description,
        defaults: raw.defaults,
        vars: raw.vars,
        templates: raw.templates,
        cases,
    })
}

fn is_shared(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('_'))
}

fn json_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in entries {
        let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
        let p = e.path();
        if p.is_file() && p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Loads a suite: every `*.json` file of a directory (sorted by name, not
/// recursive), or a single file. Shared `_*.json` files of the directory
/// are merged into each suite file. Any syntax or format error fails the
/// whole load.
pub fn load(path: &Path) -> Result<Vec<SuiteFile>, String> {
    let (dir, files) = if path.is_dir() {
        let all = json_files(path)?;
        let files: Vec<PathBuf> = all.into_iter().filter(|p| !is_shared(p)).collect();
        (path.to_path_buf(), files)
    } else if path.is_file() {
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        (dir, vec![path.to_path_buf()])
    } else {
        return Err(format!("{}: no such file or directory", path.display()));
    };
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    let mut shared = RawFile::default();
    for p in json_files(&dir)?.into_iter().filter(|p| is_shared(p)) {
        let raw = read_raw(&p)?;
        if !raw.cases.is_empty() {
            return Err(format!(
                "{}: shared files (named _*.json) may not contain cases",
                p.display()
            ));
        }
        let mut defaults = raw.defaults;
        defaults.merge_from(&shared.defaults);
        shared.defaults = defaults;
        shared.vars.extend(raw.vars);
        shared.templates.extend(raw.templates);
    }
    let mut out = Vec::new();
    for p in files {
        let mut raw = read_raw(&p)?;
        raw.defaults.merge_from(&shared.defaults);
        for (k, v) in &shared.vars {
            raw.vars.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in &shared.templates {
            raw.templates.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let display = p
            .strip_prefix(&dir)
            .unwrap_or(&p)
            .to_string_lossy()
            .into_owned();
        out.push(build(&p, &display, raw)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_verb() {
        let file = json!({
            "defaults": {"timeout_ms": 100},
            "cases": [{"name": "all", "steps": [
                {"connect": "a", "claims": {"uid": "A"}, "expect": [{"event": "x"}]},
                {"send": "a", "frame": {"event": "hotsock.ping"}},
                {"send": ["a"], "text": "{"},
                {"send": "a", "size": 10},
                {"expect": "a", "frame": {}},
                {"expect": ["a", "b"], "frames": [{}, {}], "unordered": true},
                {"expect_none": "a", "for_ms": 10},
                {"expect_close": "a", "code": 1009},
                {"http": "GET", "path": "/api/channels", "status": 200},
                {"close": "a", "abrupt": true},
                {"sleep_ms": 5},
                {"set": {"x": 1}},
                {"mute": "a"},
                {"unmute": ["a"]},
                {"repeat": 3, "var": "n", "width": 2, "steps": [{"sleep_ms": 1}]}
            ]}]
        });
        let f = parse_file(Path::new("t.json"), "t.json", &file.to_string());
        let f = match f {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        };
        let verbs: Vec<&str> = f.cases[0].steps.iter().map(Step::verb).collect();
        assert_eq!(
            verbs,
            [
                "connect",
                "send",
                "send",
                "send",
                "expect",
                "expect",
                "expect_none",
                "expect_close",
                "http",
                "close",
                "sleep_ms",
                "set",
                "mute",
                "mute",
                "repeat"
            ]
        );
    }

    #[test]
    fn shipped_suites_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/hotsock");
        let files = match load(&dir) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        };
        assert!(files.len() > 5);
        assert!(files.iter().all(|f| !f.display.starts_with('_')));
        assert!(files.iter().all(|f| f.templates.contains_key("connected")));
        assert!(
            files
                .iter()
                .all(|f| f.defaults.path.as_deref() == Some("/hotsock"))
        );
    }

    fn err(steps: Value) -> String {
        let file = json!({"cases": [{"name": "c", "steps": steps}]});
        match parse_file(Path::new("t.json"), "t.json", &file.to_string()) {
            Ok(_) => panic!("expected an error for {steps}"),
            Err(e) => e,
        }
    }

    #[test]
    fn rejects_bad_steps() {
        assert!(err(json!([{"conect": "a"}])).contains("needs one of"));
        assert!(err(json!([{"connect": "a", "send": "a"}])).contains("only one verb"));
        assert!(err(json!([{"connect": "a", "clams": {}}])).contains("unknown field"));
        assert!(err(json!([{"send": "a"}])).contains("exactly one"));
        assert!(err(json!([{"expect": "a"}])).contains("exactly one"));
        assert!(err(json!([{"expect": "a", "frame": {}, "unordered": true}])).contains("frames"));
        assert!(err(json!([{"repeat": 2, "steps": [{"nope": 1}]}])).contains("steps[1]"));
        let dup = json!({"cases": [{"name": "c", "steps": []}, {"name": "c", "steps": []}]});
        let e = parse_file(Path::new("t.json"), "t.json", &dup.to_string());
        assert!(e.is_err_and(|e| e.contains("duplicate")));
    }
}
