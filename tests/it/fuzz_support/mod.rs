//! A small bounded-time property-test ("fuzz") harness for the decoders of
//! untrusted input; see tests/it/fuzz_decoders.rs and fuzz/README.md.
//!
//! Each target runs its check on generated inputs for [`DEFAULT_SECONDS`]
//! (`ROLLCALL_FUZZ_SECONDS`) or [`DEFAULT_MAX_CASES`] cases
//! (`ROLLCALL_FUZZ_CASES`), whichever comes first, on a thread of its own
//! watched for hangs. Inputs are random bytes, random text, and above all
//! mutations of a corpus of valid inputs (bit flips, truncation, splicing,
//! duplication, deep nesting, huge numbers, invalid UTF-8, Unicode
//! controls). A panic is shrunk to a small input and reported with the
//! seed (`ROLLCALL_FUZZ_SEED` reproduces the run) and written to
//! `target/tmp/fuzz_decoders/`.

#![allow(dead_code)]

pub mod checks;

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

/// Seconds each target runs by default (`ROLLCALL_FUZZ_SECONDS`).
pub const DEFAULT_SECONDS: f64 = 2.0;
/// Cases each target runs at most by default (`ROLLCALL_FUZZ_CASES`); no
/// limit when only `ROLLCALL_FUZZ_SECONDS` is set.
pub const DEFAULT_MAX_CASES: u64 = 200_000;
/// One decoder call taking longer than this fails the target ("returns
/// promptly"; generous, for debug builds on a busy machine).
pub const SLOW_CASE: Duration = Duration::from_secs(2);
/// A call still running after this is reported as a hang.
pub const HANG: Duration = Duration::from_secs(20);
/// Time spent shrinking a failing input at most.
pub const SHRINK_BUDGET: Duration = Duration::from_secs(20);

// ------------------------------------------------------------- settings

/// The run's settings, from the environment.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// The run's seed; each target derives its own from it and its name.
    pub seed: u64,
    /// Time budget per target.
    pub budget: Duration,
    /// Case limit per target.
    pub max_cases: u64,
}

/// Reads `ROLLCALL_FUZZ_SEED` (decimal or 0x-hex; default: the clock),
/// `ROLLCALL_FUZZ_SECONDS` (per target) and `ROLLCALL_FUZZ_CASES`.
/// (`ROLLCALL_FUZZ_EXPORT_CORPUS=DIR` also writes each target's corpus to
/// `DIR/<target>/`, see [`run`].)
pub fn settings() -> Settings {
    static S: OnceLock<Settings> = OnceLock::new();
    *S.get_or_init(|| {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let seed = match env("ROLLCALL_FUZZ_SEED") {
            Some(v) => {
                let v = v.trim();
                let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => v.parse(),
                };
                parsed.unwrap_or_else(|_| panic!("ROLLCALL_FUZZ_SEED={v:?} is not a number"))
            }
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1),
        };
        let seconds = env("ROLLCALL_FUZZ_SECONDS").map(|v| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .unwrap_or_else(|| panic!("ROLLCALL_FUZZ_SECONDS={v:?} is not a number of seconds"))
        });
        let max_cases = match env("ROLLCALL_FUZZ_CASES") {
            Some(v) => v
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("ROLLCALL_FUZZ_CASES={v:?} is not a number")),
            None if seconds.is_some() => u64::MAX,
            None => DEFAULT_MAX_CASES,
        };
        let s = Settings {
            seed,
            budget: Duration::from_secs_f64(seconds.unwrap_or(DEFAULT_SECONDS)),
            max_cases,
        };
        // Straight to stderr (not captured by the test harness), once, so
        // that even a run killed by a stack overflow can be reproduced.
        let _ = writeln!(
            std::io::stderr(),
            "fuzz_decoders: ROLLCALL_FUZZ_SEED={:#x} ({:.1} s or {} cases per target)",
            s.seed,
            s.budget.as_secs_f64(),
            s.max_cases
        );
        s
    })
}

fn target_seed(seed: u64, name: &str) -> u64 {
    // FNV-1a of the name, mixed into the run's seed.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    seed ^ h
}

// ---------------------------------------------------------- panic hook

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                let loc = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                    .unwrap_or_default();
                let msg = payload_text(info.payload());
                LAST_PANIC.with(|p| *p.borrow_mut() = Some((msg, loc)));
            } else {
                default(info);
            }
        }));
    });
}

fn payload_text(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".into()
    }
}

/// Runs `check` on `input`; Some((message, location)) if it panicked.
fn try_check(check: fn(&[u8]), input: &[u8]) -> Option<(String, String)> {
    QUIET.with(|q| q.set(true));
    LAST_PANIC.with(|p| *p.borrow_mut() = None);
    let r = catch_unwind(AssertUnwindSafe(|| check(input)));
    QUIET.with(|q| q.set(false));
    match r {
        Ok(()) => None,
        Err(payload) => Some(
            LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| (payload_text(payload.as_ref()), String::new())),
        ),
    }
}

// --------------------------------------------------------------- runner

/// Builds one input from the rng and the corpus.
pub type Generator = fn(&mut StdRng, &[Vec<u8>]) -> Vec<u8>;

/// One fuzz target.
pub struct Target {
    /// Name (also the worker thread's name and the failure file's).
    pub name: &'static str,
    /// The property check (see [`checks`]).
    pub check: fn(&[u8]),
    /// Valid inputs to mutate.
    pub corpus: Vec<Vec<u8>>,
    /// Tokens worth inserting for this decoder.
    pub dict: Vec<Vec<u8>>,
    /// Longest generated input.
    pub max_len: usize,
    /// A structured generator of the target, used for a share of cases.
    pub generator: Option<Generator>,
    /// True if the decoder accepts the input (gets past its first
    /// refusal): the corpus must be mostly accepted, and the share of
    /// accepted generated inputs is reported.
    pub accepts: fn(&[u8]) -> bool,
}

/// What a finished target did.
#[derive(Debug)]
pub struct Stats {
    /// Cases run.
    pub cases: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// The slowest case and its input size.
    pub slowest: (Duration, usize),
    /// Sampled cases, and how many of them the decoder accepted.
    pub accepted: (u64, u64),
}

enum Failure {
    Panic {
        message: String,
        location: String,
        input: Vec<u8>,
        original_len: usize,
        case: u64,
    },
    Slow {
        took: Duration,
        input: Vec<u8>,
        case: u64,
    },
}

struct Shared {
    current: Mutex<Arc<Vec<u8>>>,
    /// ms since the start at which the current call began; u64::MAX when
    /// no call is running.
    call_started_ms: AtomicU64,
    cases: AtomicU64,
    finished: AtomicBool,
}

/// Runs `target` for the configured budget and panics with a report on a
/// failure (a panic or broken invariant, a slow call, a hang).
pub fn run(target: Target) -> Stats {
    install_hook();
    let s = settings();
    let seed = target_seed(s.seed, target.name);
    let valid = target.corpus.iter().filter(|c| (target.accepts)(c)).count();
    assert!(
        valid > 0,
        "{}: only {valid} of {} corpus inputs are accepted",
        target.name,
        target.corpus.len()
    );
    let shared = Arc::new(Shared {
        current: Mutex::new(Arc::new(Vec::new())),
        call_started_ms: AtomicU64::new(u64::MAX),
        cases: AtomicU64::new(0),
        finished: AtomicBool::new(false),
    });
    if let Some(dir) = std::env::var_os("ROLLCALL_FUZZ_EXPORT_CORPUS") {
        // Seeds for the cargo-fuzz target of the same name (fuzz/README.md).
        let dir = PathBuf::from(dir).join(target.name);
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        for (i, c) in target.corpus.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:04}")), c).expect("write a corpus file");
        }
    }
    let corpus_len = target.corpus.len();
    let start = Instant::now();
    let name = target.name;
    let worker = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("fuzz-{name}"))
            .spawn(move || work(target, seed, s, start, &shared))
            .expect("spawn the fuzz worker")
    };
    loop {
        if worker.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        let began = shared.call_started_ms.load(Ordering::Acquire);
        if began != u64::MAX {
            let running = start.elapsed().saturating_sub(Duration::from_millis(began));
            if running > HANG {
                let input = shared
                    .current
                    .lock()
                    .map(|g| Arc::clone(&g))
                    .unwrap_or_default();
                let file = save(name, s.seed, &input);
                panic!(
                    "\nFUZZ HANG in target {name}: a call has not returned after {:.0} s \
                     (case {}).\n  input ({} bytes, saved to {}): {}\n  reproduce: \
                     ROLLCALL_FUZZ_SEED={:#x} cargo test --all-features --test it fuzz_decoders::fuzz_{name}\n",
                    running.as_secs_f64(),
                    shared.cases.load(Ordering::Relaxed) + 1,
                    input.len(),
                    file.display(),
                    preview(&input),
                    s.seed,
                );
            }
        }
    }
    let result = match worker.join() {
        Ok(r) => r,
        Err(p) => panic!(
            "fuzz worker of {name} died outside a check: {}",
            payload_text(p.as_ref())
        ),
    };
    match result {
        Ok(stats) => {
            println!(
                "fuzz {name}: {} cases in {:.2} s, {:.0}% accepted (seed {:#x}; corpus {valid}/{}; \
                 slowest case {:.1} ms on {} bytes)",
                stats.cases,
                stats.elapsed.as_secs_f64(),
                100.0 * stats.accepted.1 as f64 / stats.accepted.0.max(1) as f64,
                s.seed,
                corpus_len,
                stats.slowest.0.as_secs_f64() * 1e3,
                stats.slowest.1
            );
            stats
        }
        Err(Failure::Panic {
            message,
            location,
            input,
            original_len,
            case,
        }) => {
            let file = save(name, s.seed, &input);
            panic!(
                "\nFUZZ FAILURE in target {name} (case {case}, seed ROLLCALL_FUZZ_SEED={:#x}):\n  \
                 panic: {message}\n  at: {location}\n  minimal input ({} bytes, shrunk from {original_len}; \
                 saved to {}):\n    {}\n  reproduce: ROLLCALL_FUZZ_SEED={:#x} cargo test --all-features \
                 --test it fuzz_decoders::fuzz_{name}\n",
                s.seed,
                input.len(),
                file.display(),
                preview(&input),
                s.seed,
            );
        }
        Err(Failure::Slow { took, input, case }) => {
            let file = save(name, s.seed, &input);
            panic!(
                "\nFUZZ SLOW INPUT in target {name} (case {case}, seed ROLLCALL_FUZZ_SEED={:#x}): \
                 one call took {:.2} s (limit {:.1} s)\n  input ({} bytes, saved to {}): {}\n",
                s.seed,
                took.as_secs_f64(),
                SLOW_CASE.as_secs_f64(),
                input.len(),
                file.display(),
                preview(&input),
            );
        }
    }
}

fn work(
    target: Target,
    seed: u64,
    s: Settings,
    start: Instant,
    shared: &Shared,
) -> Result<Stats, Failure> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut slowest = (Duration::ZERO, 0);
    let mut accepted = (0u64, 0u64);
    let mut case = 0u64;
    let since_start_ms = || start.elapsed().as_millis() as u64;
    while case < s.max_cases && (case == 0 || start.elapsed() < s.budget) {
        let input = Arc::new(generate(&mut rng, &target));
        *shared.current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&input);
        shared
            .call_started_ms
            .store(since_start_ms(), Ordering::Release);
        let t = Instant::now();
        let failed = try_check(target.check, &input);
        let took = t.elapsed();
        shared.call_started_ms.store(u64::MAX, Ordering::Release);
        case += 1;
        shared.cases.store(case, Ordering::Relaxed);
        if took > slowest.0 {
            slowest = (took, input.len());
        }
        if let Some((message, location)) = failed {
            let (input_min, message, location) = shrink(
                target.check,
                input.to_vec(),
                message,
                location,
                shared,
                start,
            );
            return Err(Failure::Panic {
                message,
                location,
                input: input_min,
                original_len: input.len(),
                case,
            });
        }
        if took > SLOW_CASE {
            return Err(Failure::Slow {
                took,
                input: input.to_vec(),
                case,
            });
        }
        if case % 8 == 1 {
            accepted.0 += 1;
            accepted.1 += u64::from((target.accepts)(&input));
        }
    }
    shared.finished.store(true, Ordering::Release);
    Ok(Stats {
        cases: case,
        elapsed: start.elapsed(),
        slowest,
        accepted,
    })
}

/// Delta debugging: removes ever smaller chunks while the check still
/// fails at the same place.
fn shrink(
    check: fn(&[u8]),
    mut cur: Vec<u8>,
    mut message: String,
    location: String,
    shared: &Shared,
    start: Instant,
) -> (Vec<u8>, String, String) {
    let deadline = Instant::now() + SHRINK_BUDGET;
    let mut chunk = (cur.len() / 2).max(1);
    loop {
        let mut i = 0;
        let mut removed = false;
        while i < cur.len() && Instant::now() < deadline {
            let end = (i + chunk).min(cur.len());
            let cand: Vec<u8> = [&cur[..i], &cur[end..]].concat();
            *shared.current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(cand.clone());
            shared
                .call_started_ms
                .store(start.elapsed().as_millis() as u64, Ordering::Release);
            let r = try_check(check, &cand);
            shared.call_started_ms.store(u64::MAX, Ordering::Release);
            match r {
                Some((m, loc)) if loc == location => {
                    cur = cand;
                    message = m;
                    removed = true;
                }
                _ => i += chunk,
            }
        }
        if Instant::now() >= deadline || (!removed && chunk == 1) {
            break;
        }
        if !removed {
            chunk = (chunk / 2).max(1);
        }
    }
    (cur, message, location)
}

/// A readable, bounded rendering of an input.
pub fn preview(input: &[u8]) -> String {
    const MAX: usize = 1500;
    let shown = &input[..input.len().min(MAX)];
    let mut s = match std::str::from_utf8(shown) {
        Ok(t) => format!("{t:?}"),
        Err(_) => format!("b\"{}\"", shown.escape_ascii()),
    };
    if input.len() > MAX {
        s.push_str(&format!(" … ({} more bytes)", input.len() - MAX));
    }
    s
}

fn save(name: &str, seed: u64, input: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz_decoders");
    let path = dir.join(format!("{name}-{seed:x}.bin"));
    let _ = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input));
    path
}

// ----------------------------------------------------------- generation

/// Picks one element.
pub fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// Unicode that name checks and parsers must get right: controls, bidi
/// controls, BOM, zero-width, non-ASCII letters, astral characters,
/// Unicode whitespace.
pub const WILD_CHARS: &[char] = &[
    '\u{0}',
    '\u{1}',
    '\u{8}',
    '\t',
    '\n',
    '\r',
    '\u{b}',
    '\u{c}',
    '\u{1b}',
    '\u{1f}',
    '\u{7f}',
    '\u{80}',
    '\u{85}',
    '\u{9f}',
    '\u{a0}',
    '\u{61c}',
    '\u{200b}',
    '\u{200e}',
    '\u{200f}',
    '\u{2028}',
    '\u{2029}',
    '\u{202a}',
    '\u{202e}',
    '\u{2066}',
    '\u{2069}',
    '\u{3000}',
    '\u{feff}',
    '\u{fffd}',
    '\u{ffff}',
    '\u{10ffff}',
    'é',
    'ß',
    'Ω',
    '中',
    '😀',
    '"',
    '\\',
    '/',
    '*',
    ',',
    '#',
    ':',
    '>',
    '?',
    '&',
    '=',
    '%',
    '+',
    '.',
    ' ',
    '{',
    '}',
    '[',
    ']',
];

/// Byte sequences that are not UTF-8.
pub const INVALID_UTF8: &[&[u8]] = &[
    b"\xff",
    b"\xfe\xff",
    b"\x80",
    b"\xc0\x80",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xe2\x82",
];

/// Tokens for every JSON decoder.
pub const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\",
    "null",
    "true",
    "false",
    "0",
    "-0",
    "1e999",
    "-1e-999",
    "1.5",
    "-",
    "1E+2147483648",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "9007199254740993",
    "0.1e1",
    "\"\"",
    "{}",
    "[]",
    "[[]]",
    "\\u0000",
    "\\ud800",
    "\\udfff",
    "\\ud83d\\ude00",
    "\\uDBFF\\uDFFF",
    "\\\"",
    "\\n",
    "\\/",
    "\\x",
    "\"a\":",
    ",\"\":null",
    " ",
    "\t",
    "\r\n",
    "\u{feff}",
];

fn len_hint(rng: &mut StdRng, max: usize) -> usize {
    let cap = match rng.random_range(0..10) {
        0..=5 => 16,
        6..=8 => 256,
        _ => 4096,
    };
    rng.random_range(0..=cap.min(max))
}

/// A random string of `WILD_CHARS`, ASCII and the target's tokens.
pub fn wild_string(rng: &mut StdRng, dict: &[Vec<u8>], max: usize) -> String {
    let n = len_hint(rng, max);
    let mut s = String::new();
    while s.len() < n {
        match rng.random_range(0..10) {
            0..=3 => s.push(rng.random_range(b' '..=b'~') as char),
            4..=6 => s.push(*pick(rng, WILD_CHARS)),
            7 if !dict.is_empty() => {
                s.push_str(&String::from_utf8_lossy(pick::<Vec<u8>>(rng, dict)))
            }
            _ => s.push(rng.random_range(b'a'..=b'z') as char),
        }
    }
    s
}

/// A random JSON value (valid JSON text), nested up to `depth`.
pub fn random_json(rng: &mut StdRng, depth: usize, dict: &[Vec<u8>]) -> String {
    match rng.random_range(0..if depth == 0 { 6 } else { 9 }) {
        0 => "null".into(),
        1 => pick(rng, &["true", "false"]).to_string(),
        2 => pick(
            rng,
            &[
                "0",
                "-1",
                "42",
                "1.5e300",
                "-0.0",
                "18446744073709551615",
                "18446744073709551616",
                "123456789012345678901234567890",
                "1e308",
                "4.9e-324",
                "1000",
                "4005",
            ],
        )
        .to_string(),
        3 | 4 => serde_json::to_string(&wild_string(rng, dict, 64)).unwrap_or_default(),
        5 => {
            // A dictionary word as a JSON string.
            let w = dict
                .get(rng.random_range(0..dict.len().max(1)))
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .unwrap_or_default();
            serde_json::to_string(&w).unwrap_or_default()
        }
        6 | 7 => {
            let n = rng.random_range(0..5);
            let items: Vec<String> = (0..n)
                .map(|_| {
                    let key = if rng.random_bool(0.5) && !dict.is_empty() {
                        String::from_utf8_lossy(pick::<Vec<u8>>(rng, dict)).into_owned()
                    } else {
                        wild_string(rng, &[], 8)
                    };
                    format!(
                        "{}:{}",
                        serde_json::to_string(&key).unwrap_or_default(),
                        random_json(rng, depth - 1, dict)
                    )
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
        _ => {
            let n = rng.random_range(0..5);
            let items: Vec<String> = (0..n).map(|_| random_json(rng, depth - 1, dict)).collect();
            format!("[{}]", items.join(","))
        }
    }
}

/// Deeply nested JSON-ish text (up to 100,000 levels), closed or not,
/// alone or inside a corpus entry.
pub fn deep_nesting(rng: &mut StdRng, corpus: &[Vec<u8>], max: usize) -> Vec<u8> {
    let n = *pick(
        rng,
        &[
            31, 32, 33, 34, 64, 127, 128, 129, 256, 1000, 10_000, 100_000,
        ],
    );
    let (open, close) = *pick(
        rng,
        &[
            ("[", "]"),
            ("{\"a\":", "}"),
            ("[{\"a\":", "}]"),
            ("{\"data\":", "}"),
            ("{\"text\":", "}"),
            ("[\"x\",", "]"),
            ("{\"channels\":", "}"),
        ],
    );
    let unit = open.len() + close.len();
    let n = n.min(max / unit.max(1)).max(1);
    let mut inner = open.repeat(n);
    if rng.random_bool(0.7) {
        inner.push_str(pick::<&str>(rng, &["0", "null", "\"x\"", "{}", "[]"]));
        let closes = if rng.random_bool(0.8) {
            n
        } else {
            rng.random_range(0..n)
        };
        inner.push_str(&close.repeat(closes));
    }
    if rng.random_bool(0.5) && !corpus.is_empty() {
        // Put it in place of a value of a valid input.
        let base = pick(rng, corpus);
        let colons: Vec<usize> = base
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b':')
            .map(|(i, _)| i + 1)
            .collect();
        if !colons.is_empty() {
            let at = *pick(rng, &colons);
            let mut out = base[..at].to_vec();
            out.extend_from_slice(inner.as_bytes());
            out.extend_from_slice(&base[at..]);
            return out;
        }
    }
    inner.into_bytes()
}

fn huge_number(rng: &mut StdRng) -> String {
    let digits = *pick(rng, &[20, 21, 40, 309, 400, 5000, 100_000]);
    let mut s = String::new();
    if rng.random_bool(0.3) {
        s.push('-');
    }
    s.push('1');
    s.push_str(&"0".repeat(digits));
    match rng.random_range(0..4) {
        0 => s.push_str(".5"),
        1 => s.push_str(&format!("e{}", rng.random_range(-400..400))),
        2 => s.push_str("e99999999999999999999"),
        _ => {}
    }
    s
}

/// Applies one mutation to `data`.
pub fn mutate_once(rng: &mut StdRng, data: &mut Vec<u8>, target: &Target) {
    let len = data.len();
    let pos = |rng: &mut StdRng| rng.random_range(0..=len);
    match rng.random_range(0..16) {
        0 if len > 0 => {
            let i = rng.random_range(0..len);
            data[i] ^= 1 << rng.random_range(0..8);
        }
        1 if len > 0 => {
            let i = rng.random_range(0..len);
            data[i] = *pick(
                rng,
                &[
                    0, 0xff, 0x7f, 0x80, b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b' ',
                    b'\n', b'0', b'-', b'*', b'#', b'?', b'%', b'.',
                ],
            );
        }
        2 if len > 0 => {
            // Delete a range.
            let a = rng.random_range(0..len);
            let b = (a + len_hint(rng, len)).min(len);
            data.drain(a..b);
        }
        3 if len > 0 => {
            // Duplicate a range, sometimes many times.
            let a = rng.random_range(0..len);
            let b = (a + 1 + len_hint(rng, len)).min(len);
            let chunk = data[a..b].to_vec();
            let times = if rng.random_bool(0.1) {
                rng.random_range(2..200)
            } else {
                1
            };
            let at = pos(rng);
            let mut ins = Vec::with_capacity(chunk.len() * times);
            for _ in 0..times {
                ins.extend_from_slice(&chunk);
            }
            data.splice(at..at, ins);
        }
        4 => {
            // Insert random bytes.
            let at = pos(rng);
            let n = len_hint(rng, 64);
            let ins: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            data.splice(at..at, ins);
        }
        5 | 6 if !target.dict.is_empty() => {
            let at = pos(rng);
            let tok = pick(rng, &target.dict).clone();
            data.splice(at..at, tok);
        }
        7 => {
            let at = pos(rng);
            let tok = pick(rng, JSON_TOKENS).as_bytes().to_vec();
            data.splice(at..at, tok);
        }
        8 => {
            let at = pos(rng);
            let mut buf = [0u8; 4];
            let c = pick(rng, WILD_CHARS)
                .encode_utf8(&mut buf)
                .as_bytes()
                .to_vec();
            data.splice(at..at, c);
        }
        9 => {
            let at = pos(rng);
            let bad = pick(rng, INVALID_UTF8).to_vec();
            data.splice(at..at, bad);
        }
        10 if len > 0 => {
            let n = rng.random_range(0..len);
            data.truncate(n);
        }
        11 if !target.corpus.is_empty() => {
            // Splice with another corpus entry.
            let other = pick(rng, &target.corpus);
            let a = rng.random_range(0..=len);
            let b = rng.random_range(0..=other.len());
            data.truncate(a);
            data.extend_from_slice(&other[b..]);
        }
        12 => {
            let at = pos(rng);
            let n = huge_number(rng).into_bytes();
            data.splice(at..at, n);
        }
        13 => {
            // Replace a quoted string's content.
            let quotes: Vec<usize> = data
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'"')
                .map(|(i, _)| i)
                .collect();
            if quotes.len() >= 2 {
                let k = rng.random_range(0..quotes.len() - 1);
                let (a, b) = (quotes[k] + 1, quotes[k + 1]);
                let with = if rng.random_bool(0.5) && !target.dict.is_empty() {
                    pick(rng, &target.dict).clone()
                } else {
                    let s = wild_string(rng, &target.dict, 40);
                    let esc = serde_json::to_string(&s).unwrap_or_default();
                    esc.as_bytes()[1..esc.len().saturating_sub(1).max(1)].to_vec()
                };
                data.splice(a..b, with);
            }
        }
        14 => {
            // Replace a value after a ':' with random JSON.
            let colons: Vec<usize> = data
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b':')
                .map(|(i, _)| i + 1)
                .collect();
            if !colons.is_empty() {
                let at = *pick(rng, &colons);
                let v = random_json(rng, 3, &target.dict).into_bytes();
                data.splice(at..at, v.into_iter().chain(*b","));
            }
        }
        _ if len > 1 => {
            // Swap two bytes.
            let a = rng.random_range(0..len);
            let b = rng.random_range(0..len);
            data.swap(a, b);
        }
        _ => data.push(rng.random()),
    }
}

fn generate(rng: &mut StdRng, target: &Target) -> Vec<u8> {
    let roll = rng.random_range(0..100);
    let mut out = match (roll, target.generator) {
        (0..=5, _) => {
            let n = len_hint(rng, target.max_len);
            (0..n).map(|_| rng.random()).collect()
        }
        (6..=10, _) => wild_string(rng, &target.dict, target.max_len).into_bytes(),
        (11..=14, _) => random_json(rng, 4, &target.dict).into_bytes(),
        (15..=19, _) => pick(rng, &target.corpus).clone(),
        (20..=25, _) => deep_nesting(rng, &target.corpus, target.max_len),
        (26..=40, Some(g)) => g(rng, &target.corpus),
        (n, generator) => {
            // A mutated corpus entry, random JSON or structured input.
            let mut d = match generator {
                Some(g) if n >= 90 => g(rng, &target.corpus),
                _ if n < 45 => random_json(rng, 4, &target.dict).into_bytes(),
                _ => pick(rng, &target.corpus).clone(),
            };
            // 1 to 8 mutations, fewer more often.
            let mut k = 1;
            while k < 8 && rng.random_bool(0.5) {
                k += 1;
            }
            for _ in 0..k {
                mutate_once(rng, &mut d, target);
            }
            d
        }
    };
    out.truncate(target.max_len);
    out
}

// --------------------------------------------------------------- corpus

/// Valid inputs taken from a conformance suite, resolved as the runner
/// resolves them (templates, `${vars}`, `$token` signed with
/// [`checks::JWT_SECRET`]).
#[derive(Default, Debug)]
pub struct SuiteCorpus {
    /// Frames sent with `frame` (compact JSON).
    pub frames: Vec<String>,
    /// Frames sent with `text`.
    pub texts: Vec<String>,
    /// `claims` of `connect` steps.
    pub claims: Vec<Value>,
    /// Tokens: from `connect` steps and `$token` values.
    pub tokens: Vec<String>,
    /// JSON bodies of `http` steps.
    pub bodies: Vec<String>,
    /// The raw text of every suite file.
    pub files: Vec<String>,
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The corpus of `conformance/<suite>`, loaded once.
pub fn suite_corpus(suite: &str) -> &'static SuiteCorpus {
    static ALL: OnceLock<Mutex<HashMap<String, &'static SuiteCorpus>>> = OnceLock::new();
    let all = ALL.get_or_init(Default::default);
    let mut guard = all.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = guard.get(suite) {
        return c;
    }
    let c: &'static SuiteCorpus = Box::leak(Box::new(load_suite(suite)));
    guard.insert(suite.to_string(), c);
    c
}

fn load_suite(suite: &str) -> SuiteCorpus {
    use rollcall::conformance::resolve::{self, Env, Mode, Vars};
    use rollcall::conformance::suite;

    let dir = root().join("conformance").join(suite);
    let mut out = SuiteCorpus::default();
    for entry in std::fs::read_dir(&dir).expect("conformance suite directory") {
        let p = entry.expect("directory entry").path();
        if p.extension().is_some_and(|x| x == "json") {
            out.files
                .push(std::fs::read_to_string(&p).expect("suite file is readable"));
        }
    }
    out.files.sort();
    let files = suite::load(&dir).unwrap_or_else(|e| panic!("suite {suite} loads: {e}"));
    for f in &files {
        let mut vars = Vars::new();
        vars.insert("run".into(), json!("fz1"));
        resolve_vars(&mut vars, &f.vars, &f.templates);
        for case in &f.cases {
            let mut v = vars.clone();
            resolve_vars(&mut v, &case.vars, &f.templates);
            walk(&case.steps, &mut v, &f.templates, &mut out);
        }
    }

    fn resolve_vars(
        vars: &mut Vars,
        map: &Map<String, Value>,
        templates: &std::collections::BTreeMap<String, suite::Template>,
    ) {
        // Variables may refer to each other: a few passes.
        for _ in 0..3 {
            let resolved: Vec<(String, Value)> = {
                let env = Env::new(vars, templates, checks::JWT_SECRET);
                map.iter()
                    .filter_map(|(k, v)| {
                        resolve::resolve(v, &env, Mode::Send)
                            .ok()
                            .map(|r| (k.clone(), r))
                    })
                    .collect()
            };
            vars.extend(resolved);
        }
    }

    fn walk(
        steps: &[suite::Step],
        vars: &mut Vars,
        templates: &std::collections::BTreeMap<String, suite::Template>,
        out: &mut SuiteCorpus,
    ) {
        use suite::Step;
        for step in steps {
            match step {
                Step::Send(s) => {
                    let env = Env::new(vars, templates, checks::JWT_SECRET);
                    if let Some(frame) = &s.frame {
                        let v = resolve::resolve(frame, &env, Mode::Send)
                            .unwrap_or_else(|_| frame.clone());
                        out.frames.push(v.to_string());
                    }
                    if let Some(t) = &s.text {
                        out.texts
                            .push(resolve::interpolate_str(t, &env).unwrap_or_else(|_| t.clone()));
                    }
                }
                Step::Connect(c) => {
                    let env = Env::new(vars, templates, checks::JWT_SECRET);
                    if let Some(claims) = &c.claims
                        && let Ok(v) = resolve::resolve(claims, &env, Mode::Send)
                    {
                        if let Value::Object(map) = &v
                            && let Ok(t) = resolve::mint_token(
                                map,
                                checks::JWT_SECRET,
                                "HS256",
                                Some("JWT".into()),
                                false,
                                Some("connect"),
                            )
                        {
                            out.tokens.push(t);
                        }
                        out.claims.push(v);
                    }
                    if let Some(token) = &c.token
                        && let Ok(Value::String(t)) = resolve::resolve(token, &env, Mode::Send)
                    {
                        out.tokens.push(t);
                    }
                }
                Step::Set(s) => {
                    let resolved: Vec<(String, Value)> = {
                        let env = Env::new(vars, templates, checks::JWT_SECRET);
                        s.set
                            .iter()
                            .filter_map(|(k, v)| {
                                resolve::resolve(v, &env, Mode::Send)
                                    .ok()
                                    .map(|r| (k.clone(), r))
                            })
                            .collect()
                    };
                    for (_, v) in &resolved {
                        if let Value::String(t) = v
                            && t.starts_with("eyJ")
                        {
                            out.tokens.push(t.clone());
                        }
                    }
                    vars.extend(resolved);
                }
                Step::Http(h) => {
                    let env = Env::new(vars, templates, checks::JWT_SECRET);
                    if let Some(body) = &h.body
                        && let Ok(v) = resolve::resolve(body, &env, Mode::Send)
                    {
                        out.bodies.push(v.to_string());
                    }
                }
                Step::Repeat(r) => {
                    vars.insert(r.var.clone(), json!(r.from));
                    walk(&r.steps, vars, templates, out);
                }
                _ => {}
            }
        }
    }

    out
}

/// Strings as corpus entries.
pub fn bytes_of<I, S>(items: I) -> Vec<Vec<u8>>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    items
        .into_iter()
        .map(|s| s.as_ref().as_bytes().to_vec())
        .collect()
}
