//! Bounded-time property ("fuzz") tests for every decoder that reads
//! untrusted input. Each test feeds one decoder generated inputs for about
//! two seconds (or a case limit) and fails if it panics, does not return
//! promptly, or breaks an invariant (round trips, agreement with serde,
//! documented rules). The checks are in `fuzz_support/checks.rs` (shared
//! with the cargo-fuzz targets in `fuzz/`), the harness in
//! `fuzz_support/mod.rs`.
//!
//! ```text
//! cargo test --all-features --test it fuzz_decoders::                      # about 20 s
//! ROLLCALL_FUZZ_SECONDS=600 cargo test --all-features --test it fuzz_decoders::fuzz_sgc
//! ROLLCALL_FUZZ_SEED=0x1234 cargo test --all-features --test it fuzz_decoders::   # replay
//! ```
//!
//! A failure prints the panic, a shrunk input (also saved under
//! `target/tmp/fuzz_decoders/`) and the seed that reproduces it. Crashes
//! found by these tests are kept as regression cases at the end of this
//! file.

use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use crate::fuzz_support;
use crate::fuzz_support::checks::{self, b64url, b64url_decode};
use crate::fuzz_support::{
    JSON_TOKENS, Target, WILD_CHARS, bytes_of, pick, random_json, run, suite_corpus, wild_string,
};

fn dict(words: &[&str]) -> Vec<Vec<u8>> {
    bytes_of(words.iter().chain(JSON_TOKENS))
}

fn js(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

#[cfg(any(feature = "hotsock", feature = "socketio", feature = "sc"))]
fn channel_like(rng: &mut StdRng) -> String {
    match rng.random_range(0..6) {
        0 => wild_string(rng, &[], 40),
        1 => "x".repeat(*pick(rng, &[255, 256, 257])),
        2 => "é".repeat(*pick(rng, &[128, 256, 257])),
        _ => pick(
            rng,
            &[
                "presence.room",
                "presence.live-chat",
                "room.123",
                "presence>room",
                "user:alice",
                "a b",
                "a*",
                "#x",
                "evil\u{202e}txt",
                "",
            ],
        )
        .to_string(),
    }
}

// ---------------------------------------------------------------- hotsock

#[cfg(feature = "hotsock")]
#[test]
fn fuzz_hotsock_frames() {
    let suite = suite_corpus("hotsock");
    let mut corpus = bytes_of(suite.frames.iter().chain(&suite.texts));
    corpus.extend(bytes_of([
        r#"{"event":"hotsock.subscribe","channel":"presence.chat"}"#,
        r#"{"event":"hotsock.subscribe","channel":"c","data":{"token":"eyJ.a.b"}}"#,
        r#"{"event":"hotsock.unsubscribe","channel":"presence.chat"}"#,
        r#"{"event":"hotsock.ping"}"#,
        r#"{"event":"hotsock.pong"}"#,
        r#"{"event":"hotsock.heartbeat"}"#,
        r#"{"event":"hotsock.umdUpdate","channel":"presence.chat","data":{"token":"eyJ.a.b"}}"#,
        r#"{"event":"hotsock.umdUpdate","data":{"token":"t"}}"#,
        r#"{"channel":"room.1","event":"chat","data":"Hello!"}"#,
        r#"{"channel":"room.1","event":"is-typing"}"#,
    ]));
    run(Target {
        name: "hotsock_frames",
        check: checks::hotsock_frame,
        corpus,
        dict: dict(&[
            "hotsock.subscribe",
            "hotsock.unsubscribe",
            "hotsock.ping",
            "hotsock.pong",
            "hotsock.heartbeat",
            "hotsock.umdUpdate",
            "hotsock.bogus",
            "\"event\":",
            "\"channel\":",
            "\"data\":",
            "\"token\":",
            "presence.",
            "#",
            "*",
        ]),
        max_len: 140_000,
        generator: Some(|rng, _| {
            let event = pick(
                rng,
                &[
                    "hotsock.subscribe",
                    "hotsock.unsubscribe",
                    "hotsock.umdUpdate",
                    "hotsock.ping",
                    "chat",
                    "hotsock.x",
                    "#publish",
                    "",
                ],
            )
            .to_string();
            let event = if rng.random_bool(0.2) {
                wild_string(rng, &[], 140)
            } else {
                event
            };
            let data = match rng.random_range(0..5) {
                0 => format!(r#"{{"token":{}}}"#, js(&wild_string(rng, &[], 64))),
                1 => {
                    // Around the 32 KiB data limit.
                    let n = rng.random_range(32 * 1024 - 4..32 * 1024 + 2);
                    js(&"x".repeat(n))
                }
                _ => random_json(rng, 4, &[]),
            };
            let mut parts = vec![format!(r#""event":{}"#, js(&event))];
            if rng.random_bool(0.9) {
                parts.push(format!(r#""channel":{}"#, js(&channel_like(rng))));
            }
            if rng.random_bool(0.7) {
                parts.push(format!(r#""data":{data}"#));
            }
            if rng.random_bool(0.5) {
                parts.reverse();
            }
            format!("{{{}}}", parts.join(",")).into_bytes()
        }),
        accepts: |d| rollcall::hotsock::wire::decode(&checks::text(d)).is_ok(),
    });
}

// --------------------------------------------------------------- socketio

/// `42/chat,[…]` texts of the Socket.IO suite, as their JSON part.
#[cfg(feature = "socketio")]
fn socketio_event_json() -> Vec<String> {
    suite_corpus("socketio")
        .texts
        .iter()
        .filter_map(|t| t.strip_prefix("42/chat,").map(str::to_string))
        .collect()
}

#[cfg(feature = "socketio")]
fn socketio_accepts(d: &[u8]) -> bool {
    use rollcall::socketio::wire::{decode_channel, decode_presence, decode_send_message};
    let Ok(v) = serde_json::from_slice::<Value>(d) else {
        return false;
    };
    let p = match &v {
        Value::Array(items) if items.len() == 2 => &items[1],
        _ => &v,
    };
    decode_channel(p).is_ok()
        || decode_send_message(p.clone()).is_ok()
        || decode_presence(p).is_ok()
}

/// The text frames of rollcall's own Engine.IO (`adapters/socketio/engine.rs`).
#[cfg(feature = "socketio")]
#[test]
fn fuzz_socketio_engine_packets() {
    let mut corpus = bytes_of(suite_corpus("socketio").texts.clone());
    corpus.extend(bytes_of([
        "2",
        "2probe",
        "3",
        "1",
        "40",
        "40/chat,",
        "40/chat,{\"token\":\"t\",\"tokenType\":\"jwt\"}",
        "40/chat?tokenType=jwt&token=a.b.c",
        "40/chat?tokenType=jwt&token=a.b.c,",
        "41/chat,",
        "42/chat,[\"SEND_MESSAGE\",{\"topicId\":\"t\"}]",
        "42/chat,17[\"whoami\",null]",
        "42[\"SUBSCRIBE_CHANNEL\",{\"channel\":{\"_id\":\"t\"}}]",
        "43/chat,1[]",
        "451-/chat,[\"E\",{\"_placeholder\":true,\"num\":0}]",
    ]));
    run(Target {
        name: "socketio_engine_packets",
        check: checks::socketio_engine_packet,
        corpus,
        dict: dict(&[
            "40", "41", "42", "43", "45", "/chat", "/chat,", "?", ",", "[", "]", "2probe",
        ]),
        max_len: 4_096,
        generator: None,
        accepts: |d| {
            std::str::from_utf8(d).is_ok_and(|t| rollcall::socketio::engine::parse(t).is_ok())
        },
    });
}

#[cfg(feature = "socketio")]
#[test]
fn fuzz_socketio_payloads() {
    let mut corpus = bytes_of(socketio_event_json());
    corpus.extend(bytes_of([
        r#"["SUBSCRIBE_CHANNEL",{"channel":{"type":"topic","_id":"presence.room1"}}]"#,
        r#"["UNSUBSCRIBE_CHANNEL",{"channel":{"type":"topic","_id":"presence.room1"}}]"#,
        r#"["SEND_MESSAGE",{"category":"chat","content":{"bodyText":"hi"},"topicId":"presence.room1","loopbackMetadata":"m1"}]"#,
        r#"["SEND_PRESENCE_EVENT",{"category":"app.event.presence.request.parties","topicId":"presence.room1"}]"#,
        r#"{"category":"app.event.presence.party.online","content":{"desktop":false,"idle":false,"offline":false,"role":"member"},"topicId":"presence.room1"}"#,
        r#"{"channel":{"_id":"t1","password":"x"}}"#,
        r#"{"category":"chat","content":{"bodyText":"hi","data":[]},"topicId":"t1","sender":{"_id":"mallory"},"_id":"forged","loopbackMetadata":{"k":1}}"#,
    ]));
    run(Target {
        name: "socketio_payloads",
        check: checks::socketio_payload,
        corpus,
        dict: dict(&[
            "SUBSCRIBE_CHANNEL",
            "UNSUBSCRIBE_CHANNEL",
            "SEND_MESSAGE",
            "SEND_PRESENCE_EVENT",
            "\"channel\":",
            "\"_id\":",
            "\"type\":",
            "\"topicId\":",
            "\"category\":",
            "\"content\":",
            "\"loopbackMetadata\":",
            "app.event.presence.party.online",
            "party.leaves",
            "request.parties",
            "app.event.presence.",
        ]),
        max_len: 140_000,
        generator: Some(|rng, _| {
            let keys = [
                "channel",
                "_id",
                "type",
                "topicId",
                "category",
                "content",
                "loopbackMetadata",
                "sender",
                "created",
            ];
            let words = bytes_of([
                "presence.room1",
                "party.online",
                "app.event.presence.party.leaves",
                "request.parties",
                "chat",
                "topic",
            ]);
            let mut fields = Vec::new();
            for k in keys {
                if rng.random_bool(0.4) {
                    let v = match (k, rng.random_range(0..3)) {
                        ("channel", 0) => {
                            format!(r#"{{"_id":{},"type":"topic"}}"#, js(&channel_like(rng)))
                        }
                        ("topicId", 0) | ("_id", 0) => js(&channel_like(rng)),
                        _ => random_json(rng, 3, &words),
                    };
                    fields.push(format!("{}:{v}", js(k)));
                }
            }
            let payload = format!("{{{}}}", fields.join(","));
            let event = pick(
                rng,
                &[
                    "SUBSCRIBE_CHANNEL",
                    "SEND_MESSAGE",
                    "SEND_PRESENCE_EVENT",
                    "x",
                ],
            );
            if rng.random_bool(0.5) {
                format!("[{},{payload}]", js(event)).into_bytes()
            } else {
                payload.into_bytes()
            }
        }),
        accepts: socketio_accepts,
    });
}

#[cfg(feature = "socketio")]
fn eio3_packets() -> Vec<String> {
    let mut p = suite_corpus("socketio").texts.clone();
    p.extend(
        [
            "40/chat?tokenType=jwt&token=eyJ.a.b",
            "40/chat?tokenType=jwt&token=eyJ.a.b,",
            "40/chat?token=t&tokenType=oauth,{\"a\":\"?\"}",
            "40/chat,{\"token\":\"a?b\"}",
            "40",
            "2",
            "42/chat,[\"x?\"]",
            "40/?",
            "40/a?b?c,d,e",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    p
}

#[cfg(feature = "socketio")]
fn polling_payload(rng: &mut StdRng, packets: &[String]) -> Vec<u8> {
    let mut out = String::new();
    for _ in 0..rng.random_range(1..5) {
        let p = match rng.random_range(0..6) {
            0 => format!(
                "40/{}?{},",
                wild_string(rng, &[], 8),
                wild_string(rng, &[], 20)
            ),
            1 => wild_string(rng, &[], 30),
            _ => pick(rng, packets).clone(),
        };
        let units = p.encode_utf16().count();
        let len = match rng.random_range(0..12) {
            0 => units + 1,
            1 => units.saturating_sub(1),
            2 => {
                out.push_str(&format!("+{units}:{p}"));
                continue;
            }
            _ => units,
        };
        out.push_str(&format!("{len}:{p}"));
    }
    out.into_bytes()
}

#[cfg(feature = "socketio")]
#[test]
fn fuzz_socketio_polling_payloads() {
    let packets = eio3_packets();
    let mut corpus: Vec<Vec<u8>> = packets
        .iter()
        .map(|p| format!("{}:{p}", p.encode_utf16().count()).into_bytes())
        .collect();
    corpus.push(
        "9:42[\"é😀\"]25:40/chat?tokenType=jwt&t=1"
            .as_bytes()
            .to_vec(),
    );
    corpus.push(b"1:226:40/chat?tokenType=jwt&t=1,".to_vec());
    run(Target {
        name: "socketio_polling_payloads",
        check: checks::socketio_polling,
        corpus,
        dict: dict(&[
            "40/",
            "40/chat?",
            "?",
            ",",
            ":",
            "😀",
            "1:",
            "99999999999999999999:",
        ]),
        max_len: 40_000,
        generator: Some(|rng, _| {
            static PACKETS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
            polling_payload(rng, PACKETS.get_or_init(eio3_packets))
        }),
        accepts: |d| {
            use rollcall::socketio::{engine::Version, polling::decode};
            decode(Version::V3, &checks::text(d)).is_some()
        },
    });
}

#[cfg(feature = "socketio")]
#[test]
fn fuzz_socketio_auth() {
    let tokens = &suite_corpus("socketio").tokens;
    assert!(!tokens.is_empty(), "no tokens in the socketio suite");
    let mut corpus: Vec<Vec<u8>> = tokens
        .iter()
        .flat_map(|t| {
            [
                format!("tokenType=jwt&token={t}&EIO=3&transport=websocket\n"),
                format!(
                    "EIO=4&transport=websocket\n{{\"token\":{},\"tokenType\":\"jwt\"}}",
                    js(t)
                ),
                format!("token={t}&tokenType=oauth\n{{\"tokenType\":\"bearer\"}}"),
            ]
        })
        .map(String::into_bytes)
        .collect();
    corpus.extend(bytes_of([
        "tokenType=jwt&token=a%2Eb%2ec+d&x=%zz%4\n{\"sub\":\"alice\",\"name\":\"Alice\"}",
        "\n{\"anonymous_id\":\"a1\",\"picture\":\"p\"}",
        "token=%E9%C3%A9%ff\n{\"user_id\":42}",
    ]));
    run(Target {
        name: "socketio_auth",
        check: checks::socketio_auth,
        corpus,
        dict: dict(&[
            "token=",
            "tokenType=",
            "&",
            "%",
            "%2",
            "%zz",
            "%C3%A9",
            "%FF",
            "%+1",
            "+",
            "oauth",
            "OAuth2",
            "bearer",
            "jwt",
            "\"token\":",
            "\"tokenType\":",
            "\"sub\":",
            "\"uid\":",
            "\"anonymous_id\":",
        ]),
        max_len: 70_000,
        generator: None,
        accepts: |d| {
            let (q, a) = checks::split2(d);
            let auth = serde_json::from_slice::<Value>(a).ok();
            rollcall::socketio::auth::credentials(Some(&checks::text(q)), auth.as_ref()).is_ok()
        },
    });
}

// --------------------------------------------------------- socketcluster

#[cfg(feature = "sc")]
fn sc_corpus() -> Vec<Vec<u8>> {
    let suite = suite_corpus("sc");
    let mut corpus = bytes_of(suite.frames.iter().chain(&suite.texts));
    corpus.extend(bytes_of([
        "#1",
        "#2",
        "",
        r##"{"event":"#handshake","data":{"authToken":null},"cid":1}"##,
        r##"{"event":"#subscribe","data":{"channel":"sample"},"cid":4}"##,
        r##"{"event":"#subscribe","data":"sample","cid":"4"}"##,
        r##"{"event":"#unsubscribe","data":"sample"}"##,
        r##"{"event":"#publish","data":{"channel":"sample","data":"hi"},"cid":9}"##,
        r##"{"event":"#publish","data":{"channel":"presence>socket/s-1","data":{"type":"pong","channel":"sample","username":"alice","timeout":2600}}}"##,
        r##"{"event":"#authenticate","data":"eyJ…","cid":5}"##,
        r##"{"event":"#removeAuthToken"}"##,
        r##"{"event":"#disconnect","data":{"code":1000}}"##,
        r##"{"rid":4}"##,
        r##"{"rid":2,"error":{"message":"…","name":"BrokerError"}}"##,
        r##"[{"event":"#subscribe","data":{"channel":"a"},"cid":2},{"event":"#subscribe","data":{"channel":"b"},"cid":3}]"##,
    ]));
    corpus
}

#[cfg(feature = "sc")]
const SC_WORDS: &[&str] = &[
    "#handshake",
    "#subscribe",
    "#unsubscribe",
    "#publish",
    "#authenticate",
    "#removeAuthToken",
    "#disconnect",
    "\"event\":",
    "\"cid\":",
    "\"rid\":",
    "\"data\":",
    "\"channel\":",
    "\"authToken\":",
    "\"code\":",
    "presence>",
    "presence>socket/",
    "#1",
    "#2",
];

#[cfg(feature = "sc")]
fn sc_packet(rng: &mut StdRng) -> String {
    let event = if rng.random_bool(0.8) {
        pick(rng, &SC_WORDS[..7]).to_string()
    } else {
        wild_string(rng, &[], 20)
    };
    let data = match rng.random_range(0..4) {
        0 => format!(r#"{{"channel":{}}}"#, js(&channel_like(rng))),
        1 => format!(
            r#"{{"channel":{},"data":{}}}"#,
            js(&channel_like(rng)),
            random_json(rng, 3, &[])
        ),
        2 => format!(r#"{{"code":{}}}"#, random_json(rng, 0, &[])),
        _ => random_json(rng, 3, &[]),
    };
    let cid = pick(
        rng,
        &[
            "1",
            "18446744073709551616",
            "-1.5e300",
            "\"7\"",
            "\"a\\\"b\"",
            "[1, 2]",
            "{\"a\" : 1}",
            "null",
            "true",
        ],
    );
    let mut parts = vec![format!(r#""event":{}"#, js(&event))];
    if rng.random_bool(0.8) {
        parts.push(format!(r#""data":{data}"#));
    }
    if rng.random_bool(0.7) {
        parts.push(format!(r#""cid":{cid}"#));
    }
    if rng.random_bool(0.1) {
        parts.push(format!(r#""rid":{cid}"#));
    }
    if rng.random_bool(0.3) {
        parts.reverse();
    }
    format!("{{{}}}", parts.join(","))
}

#[cfg(feature = "sc")]
fn sc_accepts(d: &[u8]) -> bool {
    use rollcall::sc::wire::{Frame, Packet, decode};
    matches!(decode(&checks::text(d)), Frame::Packets(p) if p.iter().any(|p| matches!(p, Packet::Event { .. })))
}

#[cfg(feature = "sc")]
#[test]
fn fuzz_sc_frames() {
    let corpus = sc_corpus();
    run(Target {
        name: "sc_frames",
        check: checks::sc_frame,
        corpus,
        dict: dict(SC_WORDS),
        max_len: 140_000,
        generator: Some(|rng, _| {
            if rng.random_bool(0.5) {
                sc_packet(rng).into_bytes()
            } else {
                let n = rng.random_range(0..6);
                let items: Vec<String> = (0..n).map(|_| sc_packet(rng)).collect();
                format!("[{}]", items.join(",")).into_bytes()
            }
        }),
        accepts: sc_accepts,
    });
}

#[cfg(feature = "sc")]
#[test]
fn fuzz_sc_requests() {
    // "event \n data" from the packets of the corpus.
    let mut corpus = Vec::new();
    for c in sc_corpus() {
        if let rollcall::sc::wire::Frame::Packets(ps) =
            rollcall::sc::wire::decode(&String::from_utf8_lossy(&c))
        {
            for p in ps {
                if let rollcall::sc::wire::Packet::Event { event, data, .. } = p {
                    let d = data.map(|d| d.get().to_string()).unwrap_or_default();
                    corpus.push(format!("{event}\n{d}").into_bytes());
                }
            }
        }
    }
    run(Target {
        name: "sc_requests",
        check: checks::sc_request,
        corpus,
        dict: dict(SC_WORDS),
        max_len: 140_000,
        generator: None,
        accepts: |d| {
            let (e, data) = checks::split2(d);
            let raw =
                serde_json::value::RawValue::from_string(checks::text(data).into_owned()).ok();
            !matches!(
                rollcall::sc::wire::Request::parse(&checks::text(e), raw.as_deref()),
                Err(_) | Ok(rollcall::sc::wire::Request::Other { .. })
            )
        },
    });
}

// -------------------------------------------------------------------- sgc

#[cfg(feature = "sgc")]
fn sgc_corpus() -> Vec<Vec<u8>> {
    let suite = suite_corpus("sgc");
    let mut corpus = bytes_of(suite.frames.iter().chain(&suite.texts));
    corpus.extend(bytes_of([
        r#"{"jsonrpc":"2.0","method":"sgc@presence@member@new","member":{"id":"S1","name":"alice","info":"…"}}"#,
        r#"{"jsonrpc":"2.0","method":"sgc@presence@member@remove","member":{"id":"S1","name":"","info":""}}"#,
        r#"{"jsonrpc":"2.0","method":"sgc@presence@channel@member@new","member":{"id":"S1"},"channel":{"name":"room-42"}}"#,
        r#"{"jsonrpc":"2.0","method":"sgc@presence@channel@member@remove","member":{"id":"S1"},"channel":{"name":"room-42"}}"#,
        r#"{"jsonrpc":"2.0","method":"sgc@presence@publish@msg","message":{"text":"hello"},"channel":{"name":"room-42"},"member":{"id":"S1"}}"#,
        r#"{"jsonrpc":"2.0","method":"sgc@presence@publish@msg","message":{"text":{"x":1, "y":[true]}},"channel":{"name":"room-42"}}"#,
        r#"{"jsonrpc":"2.0","method":"sgc@presence@get@members","channel":{"name":""},"member":{"id":"S1"}}"#,
        r#"{"jsonrpc":"2.0","method":"sgc@presence@channel@invitation","channel":{"name":"room-42"},"member":{"id":"S1"},"members":[{"id":"S2","name":"","info":""}]}"#,
        r#"{"jsonrpc":"2.0","method":"sgc@presence@channel@invitation@response","channel":{"name":"room-42"},"member":{"id":"S2"},"members":[{"id":"S1"}],"message":{"text":"decline"},"error":{"code":1,"text":"Invitation refused"}}"#,
        r#"{"jsonrpc":"2.0","method":"sgc@presence@acknowledgment","id":"0A1B"}"#,
        "{\"jsonrpc\":\"2.0\",\"method\":\"sgc@presence@member@new\",\"member\":{\"id\":\"3F25\",\"name\":\"alice\",\"info\":\"email=alice@example.com\r\n\"}}",
        r#"{"jsonrpc":"2.0","method":"sgc@presence@publish@msg","message":{"text":"say "hi" now"},"channel":"room","x":[1,2,],}"#,
        r#"{"jsonrpc":"2.0","method":"sgc@b64:c2djQHByZXNlbmNlQG1lbWJlckBuZXc=","member":{"id":"","name":"sgc@b64:Wm/DqyAiWiI=","info":"sgc@b64:bGluZTENCmxpbmUy"}}"#,
        r#"{"p":"C:\data\x","q":"\u12","r":"\ud800x"}"#,
    ]));
    corpus
}

#[cfg(feature = "sgc")]
const SGC_WORDS: &[&str] = &[
    "sgc@presence@member@new",
    "sgc@presence@member@remove",
    "sgc@presence@channel@member@new",
    "sgc@presence@channel@member@remove",
    "sgc@presence@publish@msg",
    "sgc@presence@get@members",
    "sgc@presence@channel@invitation",
    "sgc@presence@channel@invitation@response",
    "sgc@presence@acknowledgment",
    "sgc@b64:",
    "sgc@b64:Wm/DqyAiWiI=",
    "\"jsonrpc\":\"2.0\",",
    "\"method\":",
    "\"member\":",
    "\"members\":",
    "\"channel\":",
    "\"message\":",
    "\"error\":",
    "\"id\":",
    "\"name\":",
    "\"info\":",
    "\"text\":",
    "\"code\":",
    ",}",
    ",]",
    "\" now",
];

/// An sgc frame the way sgc's own writer may produce it: base64 strings,
/// raw control characters, unescaped quotes, unquoted JSON, trailing
/// commas.
#[cfg(feature = "sgc")]
fn sgc_gen(rng: &mut StdRng, _: &[Vec<u8>]) -> Vec<u8> {
    fn sgc_string(rng: &mut StdRng) -> String {
        let raw = match rng.random_range(0..5) {
            0 => wild_string(rng, &[], 30),
            1 => random_json(rng, 2, &[]),
            _ => pick(
                rng,
                &["alice", "room-42", "", "hello", "decline", "accept", "1"],
            )
            .to_string(),
        };
        match rng.random_range(0..6) {
            0 => format!("\"sgc@b64:{}\"", checks::b64_std(raw.as_bytes())),
            1 => format!("\"{raw}\""), // unescaped, as sgc writes
            2 if raw.starts_with('{') || raw.starts_with('[') => raw,
            _ => js(&raw),
        }
    }
    let method = if rng.random_bool(0.85) {
        pick(rng, &SGC_WORDS[..9]).to_string()
    } else {
        wild_string(rng, &[], 30)
    };
    let method = if rng.random_bool(0.2) {
        format!("\"sgc@b64:{}\"", checks::b64_std(method.as_bytes()))
    } else {
        js(&method)
    };
    let mut parts = vec![
        r#""jsonrpc":"2.0""#.to_string(),
        format!(r#""method":{method}"#),
    ];
    let member = |rng: &mut StdRng| {
        format!(
            r#"{{"id":{},"name":{},"info":{}}}"#,
            sgc_string(rng),
            sgc_string(rng),
            sgc_string(rng)
        )
    };
    if rng.random_bool(0.7) {
        let m = member(rng);
        parts.push(format!(r#""member":{m}"#));
    }
    if rng.random_bool(0.6) {
        let c = sgc_string(rng);
        parts.push(if rng.random_bool(0.8) {
            format!(r#""channel":{{"name":{c}}}"#)
        } else {
            format!(r#""channel":{c}"#)
        });
    }
    if rng.random_bool(0.4) {
        let t = sgc_string(rng);
        parts.push(format!(r#""message":{{"text":{t}}}"#));
    }
    if rng.random_bool(0.3) {
        let n = rng.random_range(0..4);
        let ms: Vec<String> = (0..n).map(|_| member(rng)).collect();
        parts.push(format!(r#""members":[{}]"#, ms.join(",")));
    }
    if rng.random_bool(0.3) {
        let code = pick(
            rng,
            &["1", "\"2\"", "-9223372036854775808", "1e3", "\" 7 \""],
        );
        let t = sgc_string(rng);
        parts.push(format!(r#""error":{{"code":{code},"text":{t}}}"#));
    }
    if rng.random_bool(0.3) {
        let id = sgc_string(rng);
        parts.push(format!(r#""id":{id}"#));
    }
    if rng.random_bool(0.2) {
        parts.reverse();
    }
    let trailing = if rng.random_bool(0.2) { "," } else { "" };
    format!("{{{}{trailing}}}", parts.join(",")).into_bytes()
}

#[cfg(feature = "sgc")]
#[test]
fn fuzz_sgc_frames() {
    let corpus = sgc_corpus();
    run(Target {
        name: "sgc_frames",
        check: checks::sgc_frame,
        corpus,
        dict: dict(SGC_WORDS),
        max_len: 140_000,
        generator: Some(sgc_gen),
        accepts: |d| rollcall::sgc::wire::decode(&checks::text(d)).is_ok(),
    });
}

#[cfg(feature = "sgc")]
#[test]
fn fuzz_sgc_lenient_reader() {
    run(Target {
        name: "sgc_lenient_reader",
        check: checks::sgc_lenient,
        corpus: sgc_corpus(),
        dict: dict(SGC_WORDS),
        max_len: 140_000,
        generator: Some(|rng, corpus| {
            if rng.random_bool(0.5) {
                sgc_gen(rng, corpus)
            } else {
                random_json(rng, 6, &[]).into_bytes()
            }
        }),
        accepts: |d| rollcall::sgc::lenient::parse(&checks::text(d)).is_ok(),
    });
}

#[cfg(feature = "sgc")]
#[test]
fn fuzz_sgc_base64() {
    let mut corpus = bytes_of([
        "sgc@b64:Wm/DqyAiWiI=",
        "sgc@b64:bGluZTENCmxpbmUy",
        "sgc@b64:c2djQHByZXNlbmNlQG1lbWJlckBuZXc",
        "sgc@b64: cm9v\r\nbS5iNjQ=",
        "Zoë \"Z\"",
        "{\"x\":1}",
        " [1, 2] ",
        "",
    ]);
    corpus.push(vec![0x80, 0x9f, 0xff, 0x41]);
    corpus.extend(bytes_of(suite_corpus("sgc").texts.iter().take(20)));
    run(Target {
        name: "sgc_base64",
        check: checks::sgc_base64,
        corpus,
        dict: dict(&["sgc@b64:", "=", "==", "+", "/", "-", "_", "\r\n"]),
        max_len: 8_000,
        generator: Some(|rng, _| {
            let n = rng.random_range(0..64);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            let mut s = format!("sgc@b64:{}", checks::b64_std(&bytes));
            if rng.random_bool(0.3) {
                s = s.trim_end_matches('=').to_string();
            }
            s.into_bytes()
        }),
        accepts: |d| rollcall::sgc::wire::decode_b64(&checks::text(d)).is_some(),
    });
}

// -------------------------------------------------------------------- JWT

/// Claims for corpus tokens: those of every suite's connect steps.
fn corpus_claims() -> Vec<Value> {
    let mut claims: Vec<Value> = ["hotsock", "sc", "sgc", "socketio"]
        .iter()
        .flat_map(|s| suite_corpus(s).claims.iter().cloned())
        .collect();
    claims.extend([
        json!({"uid": "Jim", "umd": {"name": "Jim"}, "channels": {"presence.*": {"subscribe": true, "messages": {"*": {"publish": true, "echo": true, "store": 60}}}}}),
        json!({"uid": "a", "channels": {"#regex:^org\\.[0-9]+$": {"subscribe": true}, "chat.lobby": {"subscribe": true, "alias": "lobby", "autoSubscribe": true}}}),
        json!({"scope": "subscribe umd", "connectionId": "c1", "umdUpdate": true, "umdPropagate": true}),
        json!({"singleUse": true, "jti": "j1", "keepAlive": true, "heartbeatTimeout": 30}),
        json!({"sub": "alice", "name": "Alice", "picture": "p"}),
    ]);
    claims
}

fn with_exp(mut claims: Value) -> Value {
    if let Value::Object(map) = &mut claims {
        map.entry("exp").or_insert(json!(checks_now() + 3600));
        map.entry("scope").or_insert(json!("connect"));
    }
    claims
}

fn checks_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn jwt_accepts(d: &[u8]) -> bool {
    let verifier = checks::jwt_verifier();
    match d.split_first() {
        Some((0, token)) => verifier.verify(&checks::text(token)).is_ok(),
        Some((1, rest)) => {
            let (h, p) = checks::split2(rest);
            let input = format!("{}.{}", b64url(h), b64url(p));
            let token = format!("{input}.{}", checks::hs_signature(h, &input));
            verifier.verify(&token).is_ok()
        }
        _ => false,
    }
}

#[test]
fn fuzz_jwt_tokens() {
    use rollcall::auth::{mint_hs256, mint_pem};

    let mut tokens: Vec<String> = ["hotsock", "sc", "sgc", "socketio"]
        .iter()
        .flat_map(|s| suite_corpus(s).tokens.iter().cloned())
        .collect();
    let testdata = fuzz_support::root().join("src/auth/testdata");
    let key = |f: &str| std::fs::read(testdata.join(f)).expect("test key");
    for (i, c) in corpus_claims().into_iter().enumerate().take(60) {
        let c = with_exp(c);
        tokens.push(mint_hs256(checks::JWT_SECRET, &c).expect("mint HS256"));
        if i < 6 {
            for (alg, file) in [
                ("RS256", "rsa_private.pem"),
                ("PS384", "rsa_private.pem"),
                ("ES256", "ec256_private.pem"),
                ("ES384", "ec384_private.pem"),
                ("EdDSA", "ed25519_private.pem"),
            ] {
                tokens.push(mint_pem(alg, &key(file), &c).expect("mint with a PEM key"));
            }
        }
    }
    // Mode 0: the token text; mode 1: header \n payload, signed.
    let mut corpus: Vec<Vec<u8>> = tokens
        .iter()
        .map(|t| [&[0u8][..], t.as_bytes()].concat())
        .collect();
    for t in &tokens {
        let parts: Vec<&str> = t.split('.').collect();
        if let [h, p, _] = parts[..]
            && let (Some(h), Some(p)) = (b64url_decode(h), b64url_decode(p))
        {
            corpus.push([&[1u8][..], &h, b"\n", &p].concat());
        }
    }
    run(Target {
        name: "jwt_tokens",
        check: checks::jwt_token,
        corpus,
        dict: dict(&[
            ".",
            "=",
            "+",
            "/",
            "eyJ",
            "\"alg\":",
            "\"typ\":",
            "\"crit\":",
            "\"exp\":",
            "\"nbf\":",
            "\"iss\":",
            "\"aud\":",
            "\"channels\":",
            "\"uid\":",
            "\"umd\":",
            "\"scope\":",
            "HS256",
            "HS384",
            "HS512",
            "RS256",
            "ES384",
            "EdDSA",
            "none",
            "JWT",
            "#regex:",
        ]),
        max_len: 70_000,
        generator: Some(|rng, _| {
            let header = pick(
                rng,
                &[
                    r#"{"alg":"HS256","typ":"JWT"}"#,
                    r#"{"alg":"HS512"}"#,
                    r#"{"alg":"HS384","typ":"jwt"}"#,
                    r#"{"alg":"none"}"#,
                    r#"{"alg":"RS256","kid":5}"#,
                    r#"{"alg":"ES256","typ":"JWT"}"#,
                    r#"{"alg":"EdDSA"}"#,
                    r#"{"alg":"HS256","crit":["b64"]}"#,
                    r#"{"alg":["HS256"]}"#,
                    r#"{"alg":"HS256","typ":7}"#,
                    r#"{"typ":"JWT"}"#,
                    r#"[]"#,
                ],
            )
            .to_string();
            static CLAIMS: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
            let claims = CLAIMS.get_or_init(corpus_claims);
            let mut c = with_exp(pick(rng, claims).clone());
            if let Value::Object(m) = &mut c {
                match rng.random_range(0..8) {
                    0 => {
                        m.insert("exp".into(), json!(checks_now() - 10));
                    }
                    1 => {
                        m.insert("nbf".into(), json!(checks_now() + 1000));
                    }
                    2 => {
                        m.insert("exp".into(), json!(rng.random::<u64>()));
                    }
                    3 => {
                        m.insert("exp".into(), json!("soon"));
                    }
                    4 => {
                        m.insert("exp".into(), json!(1e300));
                    }
                    5 => {
                        m.insert("aud".into(), json!(["x", 1]));
                    }
                    _ => {}
                }
            }
            if rng.random_bool(0.5) {
                [
                    &[1u8][..],
                    header.as_bytes(),
                    b"\n",
                    c.to_string().as_bytes(),
                ]
                .concat()
            } else {
                let junk = wild_string(rng, &[], 8);
                let token = format!(
                    "{}.{}.{}{junk}",
                    b64url(header.as_bytes()),
                    b64url(c.to_string().as_bytes()),
                    b64url(&rng.random::<[u8; 32]>())
                );
                [&[0u8][..], token.as_bytes()].concat()
            }
        }),
        accepts: jwt_accepts,
    });
}

fn claims_gen(rng: &mut StdRng, _: &[Vec<u8>]) -> Vec<u8> {
    fn key(rng: &mut StdRng) -> String {
        match rng.random_range(0..6) {
            0 => format!("#regex:{}", regex_fragment(rng)),
            1 => format!("{}*{}", wild_string(rng, &[], 6), wild_string(rng, &[], 6)),
            2 => wild_string(rng, &[], 12),
            _ => pick(
                rng,
                &["presence.*", "chat.lobby", "*", "#other", "", "a*b*c"],
            )
            .to_string(),
        }
    }
    let mut channels = serde_json::Map::new();
    for _ in 0..rng.random_range(0..5) {
        let mut d = serde_json::Map::new();
        for k in [
            "subscribe",
            "alias",
            "autoSubscribe",
            "getInfo",
            "historyStart",
            "omitFromSubCount",
            "umdUpdate",
        ] {
            if rng.random_bool(0.3) {
                let v = match k {
                    "alias" => json!(pick(rng, &["lobby", "", "x"])),
                    "historyStart" => {
                        serde_json::from_str(&random_json(rng, 0, &[])).unwrap_or(Value::Null)
                    }
                    _ if rng.random_bool(0.8) => json!(rng.random_bool(0.5)),
                    _ => json!("yes"),
                };
                d.insert(k.into(), v);
            }
        }
        if rng.random_bool(0.4) {
            let mut msgs = serde_json::Map::new();
            for _ in 0..rng.random_range(0..3) {
                msgs.insert(
                    key(rng),
                    json!({"publish": rng.random_bool(0.5), "broadcast": rng.random_bool(0.5),
                           "store": *pick(rng, &[-2i64, -1, 0, 60, 3_155_695_200, 3_155_695_201])}),
                );
            }
            d.insert("messages".into(), Value::Object(msgs));
        }
        if rng.random_bool(0.2) {
            d.insert("storage".into(), json!({ key(rng): {"observe": true} }));
        }
        channels.insert(key(rng), Value::Object(d));
    }
    let mut c = json!({"exp": checks_now() + 60, "scope": pick(rng, &["connect", "subscribe umd", "conect", ""]), "channels": channels});
    if rng.random_bool(0.5) {
        c["uid"] = json!("u".repeat(*pick(rng, &[1, 128, 129])));
    }
    if rng.random_bool(0.3) {
        c["umd"] = json!({"pad": "x".repeat(*pick(rng, &[10, 1000, 1020]))});
    }
    if rng.random_bool(0.3) {
        c["heartbeatTimeout"] = json!(*pick(rng, &[4.0, 5.0, 600.0, 601.0, 5.5]));
    }
    if rng.random_bool(0.2) {
        c["singleUse"] = json!(true);
    }
    c.to_string().into_bytes()
}

fn regex_fragment(rng: &mut StdRng) -> String {
    const PARTS: &[&str] = &[
        "^",
        "$",
        ".",
        "*",
        "+",
        "?",
        "(",
        ")",
        "[a-z]",
        "[^x]",
        "\\d",
        "\\w",
        "\\.",
        "|",
        "{2,5}",
        "{1000}",
        "{1000}{1000}",
        "(?i)",
        "(?:",
        "a",
        "org",
        "[",
        "]",
        "\\",
        "\\p{L}",
        "\\b",
        ".*.*.*",
        "(a+)+",
        "é",
        "\\x{10FFFF}",
    ];
    (0..rng.random_range(1..8))
        .map(|_| *pick(rng, PARTS))
        .collect()
}

#[test]
fn fuzz_hotsock_claims_and_channel_rules() {
    let corpus: Vec<Vec<u8>> = corpus_claims()
        .into_iter()
        .map(|c| with_exp(c).to_string().into_bytes())
        .collect();
    run(Target {
        name: "hotsock_claims_and_channel_rules",
        check: checks::claims,
        corpus,
        dict: dict(&[
            "\"exp\":",
            "\"scope\":",
            "\"uid\":",
            "\"umd\":",
            "\"channels\":",
            "\"heartbeatTimeout\":",
            "\"jti\":",
            "\"singleUse\":",
            "\"subscribe\":",
            "\"alias\":",
            "\"autoSubscribe\":",
            "\"messages\":",
            "\"storage\":",
            "\"historyStart\":",
            "\"store\":",
            "#regex:",
            "#regex:(",
            "#regex:a{1000}{1000}",
            "*",
            "connect",
            "subscribe",
            "umd",
        ]),
        max_len: 70_000,
        generator: Some(claims_gen),
        accepts: |d| rollcall::auth::HotsockClaims::from_json_str(&checks::text(d)).is_ok(),
    });
}

#[test]
fn fuzz_channel_patterns() {
    let mut keys: Vec<String> = Vec::new();
    for c in corpus_claims() {
        if let Some(Value::Object(ch)) = c.get("channels") {
            keys.extend(ch.keys().cloned());
        }
    }
    keys.extend(
        [
            "presence.*",
            "*.admin",
            "a*b*c",
            "**x",
            "ab*ba",
            "ü*ö",
            "#regex:^org\\.[0-9]+$",
            "#regex:admin",
            "#regex:(a+)+$",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let corpus: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| format!("{k}\n{}", k.replace('*', "xy")).into_bytes())
        .collect();
    run(Target {
        name: "channel_patterns",
        check: checks::patterns,
        corpus,
        dict: dict(&["*", "#regex:", "#", ".", "\n", "(", ")", "{1000}"]),
        max_len: 20_000,
        generator: Some(|rng, _| {
            let key = match rng.random_range(0..3) {
                0 => format!("#regex:{}", regex_fragment(rng)),
                _ => {
                    let n = rng.random_range(0..6);
                    (0..n)
                        .map(|_| {
                            if rng.random_bool(0.4) {
                                "*".to_string()
                            } else {
                                wild_string(rng, &[], 4).replace('\n', "")
                            }
                        })
                        .collect()
                }
            };
            // A name that matches the glob about half of the time.
            let name = if rng.random_bool(0.5) {
                key.split('*')
                    .map(str::to_string)
                    .collect::<Vec<_>>()
                    .join(&wild_string(rng, &[], 3))
            } else {
                wild_string(rng, &[], 20)
            };
            format!("{key}\n{name}").into_bytes()
        }),
        accepts: |d| {
            let (k, n) = checks::split2(d);
            rollcall::auth::Pattern::parse(&checks::text(k))
                .is_ok_and(|p| p.matches(&checks::text(n)))
        },
    });
}

// ---------------------------------------------------------------- cluster

fn cluster_gen(rng: &mut StdRng, _: &[Vec<u8>]) -> Vec<u8> {
    let s = |rng: &mut StdRng| wild_string(rng, &[], 12);
    let op = |rng: &mut StdRng| -> Value {
        match rng.random_range(0..6) {
            0 => {
                json!({"op": "put", "ch": s(rng), "pid": pick(rng, &["8f3a0c1200000004", "lease:x", "ffffffffffffffff", "+000000000000001"]), "uid": s(rng),
                        "info": serde_json::from_str::<Value>(&random_json(rng, 3, &[])).unwrap_or(Value::Null)})
            }
            1 => json!({"op": "del", "ch": s(rng), "pid": s(rng), "uid": s(rng)}),
            2 => json!({"op": "subs", "ch": s(rng), "n": rng.random::<u32>()}),
            3 => json!({"op": "msg", "id": s(rng), "ch": s(rng), "event": s(rng),
                        "data": if rng.random_bool(0.7) { random_json(rng, 3, &[]) } else { s(rng) },
                        "sender": {"conn": "8f3a0c1200000004", "uid": s(rng), "info": {"a": [1, 2.5, null]}, "echo": rng.random_bool(0.5)}}),
            4 => {
                json!({"op": "direct", "to": pick(rng, &[json!("all"), json!({"user": "jim"}), json!({"present": "content:42"})]).clone(),
                        "id": s(rng), "event": s(rng), "data": random_json(rng, 2, &[])})
            }
            _ => {
                json!({"op": "privacy", "uid": s(rng), "visible": pick(rng, &[json!(true), json!(null), json!(false)]).clone()})
            }
        }
    };
    let mut frame = match rng.random_range(0..5) {
        0 => {
            let ops: Vec<Value> = (0..rng.random_range(0..5)).map(|_| op(rng)).collect();
            json!({"t": "ops", "seq": rng.random::<u64>(), "ops": ops})
        }
        1 => json!({"t": "hb", "seq": 7, "sent": rng.random::<u64>(), "conns": 12}),
        2 => json!({"t": "sync", "target": pick(rng, &[json!(null), json!("a")]).clone()}),
        3 => {
            json!({"t": "state", "seq": 7, "presences": [{"ch": s(rng), "pid": "lease:y", "uid": "u", "info": null}], "subs": {"news": 3}})
        }
        _ => json!({"t": "bye"}),
    };
    frame["node"] = json!(s(rng));
    frame["epoch"] = json!(rng.random::<u64>());
    frame.to_string().into_bytes()
}

#[test]
fn fuzz_cluster_frames() {
    let corpus = bytes_of([
        r#"{"node":"a","epoch":1718000000123456,"t":"ops","seq":7,"ops":[{"op":"put","ch":"presence.room","pid":"8f3a0c1200000004","uid":"jim","info":{"name":"Jim"}},{"op":"del","ch":"presence.room","pid":"8f3a0c1200000003","uid":"ann"},{"op":"subs","ch":"news","n":3},{"op":"msg","id":"01J0","ch":"presence.room","event":"chat","data":"{\"text\":\"hi\"}","sender":{"conn":"8f3a0c1200000004","uid":"jim","info":{"name":"Jim"},"echo":false}}]}"#,
        r#"{"node":"a","epoch":1718000000123456,"t":"hb","seq":7,"sent":1718000004000,"conns":12}"#,
        r#"{"node":"b","epoch":1718000000999999,"t":"sync","target":"a"}"#,
        r#"{"node":"b","epoch":2,"t":"sync","target":null}"#,
        r#"{"node":"a","epoch":1,"t":"state","seq":7,"presences":[{"ch":"presence.room","pid":"8f3a0c1200000004","uid":"jim","info":{"name":"Jim"}}],"subs":{"news":3}}"#,
        r#"{"node":"a","epoch":1718000000123456,"t":"bye"}"#,
        r#"{"node":"a","epoch":1,"t":"ops","seq":2,"ops":[{"op":"direct","to":{"user":"jim"},"id":"01J0","event":"note","data":"{\"a\":1}"},{"op":"direct","to":"all","id":"01J1","event":"e"},{"op":"direct","to":{"present":"content:42"},"id":"01J2","event":"e"},{"op":"privacy","uid":"jim","visible":false},{"op":"put","ch":"\u0000conns","pid":"8f3a0c1200000004","uid":"jim","info":null}]}"#,
        r#"{"node":"a","epoch":1,"t":"hb","seq":7,"sent":1,"conns":12,"subs":{"news":3}}"#,
    ]);
    run(Target {
        name: "cluster_frames",
        check: checks::cluster_frame,
        corpus,
        dict: dict(&[
            "\"node\":",
            "\"epoch\":",
            "\"t\":",
            "\"ops\"",
            "\"hb\"",
            "\"sync\"",
            "\"state\"",
            "\"bye\"",
            "\"op\":",
            "\"put\"",
            "\"del\"",
            "\"subs\"",
            "\"msg\"",
            "\"direct\"",
            "\"privacy\"",
            "\"pid\":",
            "lease:",
            "\\u0000conns",
        ]),
        max_len: 140_000,
        generator: Some(cluster_gen),
        accepts: |d| rollcall::cluster::wire::Frame::decode(d).is_ok(),
    });
}

// ------------------------------------------------------------ conformance

#[test]
fn fuzz_conformance_suite_files() {
    let corpus: Vec<Vec<u8>> = ["hotsock", "sc", "sgc", "socketio"]
        .iter()
        .flat_map(|s| suite_corpus(s).files.iter().map(|f| f.as_bytes().to_vec()))
        .collect();
    run(Target {
        name: "conformance_suite_files",
        check: checks::conformance_suite,
        corpus,
        dict: dict(&[
            "\"cases\":",
            "\"steps\":",
            "\"name\":",
            "\"connect\":",
            "\"send\":",
            "\"expect\":",
            "\"expect_none\":",
            "\"expect_close\":",
            "\"http\":",
            "\"close\":",
            "\"sleep_ms\":",
            "\"set\":",
            "\"mute\":",
            "\"unmute\":",
            "\"repeat\":",
            "\"frame\":",
            "\"frames\":",
            "\"unordered\":",
            "\"optional\":",
            "\"seek\":",
            "\"requires\":",
            "\"templates\":",
            "\"defaults\":",
            "${",
            "$template",
        ]),
        max_len: 100_000,
        generator: Some(|rng, _| {
            // A small file of random steps, nested repeats included.
            fn steps(rng: &mut StdRng, depth: usize) -> Value {
                let n = rng.random_range(0..4);
                Value::Array(
                    (0..n)
                        .map(|_| match rng.random_range(0..9) {
                            0 => json!({"connect": "a", "claims": {}, "token": "t"}),
                            1 => json!({"send": "a", "frame": {}, "text": "x"}),
                            2 => json!({"send": ["a", "b"], "size": 10}),
                            3 => json!({"expect": "a", "frames": [1], "unordered": true, "optional": true}),
                            4 => json!({"mute": "a", "unmute": "a"}),
                            5 if depth > 0 => json!({"repeat": 2, "steps": steps(rng, depth - 1)}),
                            6 => json!({"http": "GET", "body": {}, "text": "x"}),
                            7 => json!({"sleep_ms": -1}),
                            _ => serde_json::from_str(&random_json(rng, 2, &[])).unwrap_or(Value::Null),
                        })
                        .collect(),
                )
            }
            let cases: Vec<Value> = (0..rng.random_range(0..4))
                .map(|i| json!({"name": format!("c{}", i % 2), "requires": pick(rng, &[json!([]), json!(["api_key"]), json!(["gpu"])]).clone(), "steps": steps(rng, 3)}))
                .collect();
            json!({"description": "d", "defaults": {"timeout_ms": 1}, "cases": cases})
                .to_string()
                .into_bytes()
        }),
        accepts: |d| {
            let path = std::path::Path::new("x.json");
            rollcall::conformance::suite::parse_file(path, "x.json", &checks::text(d)).is_ok()
        },
    });
}

// ------------------------------------------------------------------ names

#[test]
fn fuzz_names_and_json_depth() {
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    for s in ["hotsock", "sc", "sgc", "socketio"] {
        let c = suite_corpus(s);
        corpus.extend(bytes_of(c.frames.iter().take(40)));
        for f in &c.frames {
            if let Ok(v) = serde_json::from_str::<Value>(f) {
                for k in ["channel", "event", "uid", "topicId"] {
                    if let Some(Value::String(n)) = v.get(k) {
                        corpus.push(n.as_bytes().to_vec());
                    }
                }
            }
        }
    }
    corpus.extend(bytes_of([
        "presence.room-1",
        "presence>room",
        "user:alice",
        "space/42_a.b",
        "alice@example.com",
        "Zoë Ω",
        "app.event.presence",
        r#"{"a":[1,2,{"b":"[[[[["}]}"#,
        r#""\"[[""#,
    ]));
    run(Target {
        name: "names_and_json_depth",
        check: checks::names,
        corpus,
        dict: dict(&[
            "#", "*", ",", "hotsock.", " ", "\u{202e}", "\u{2066}", "\u{85}",
        ]),
        max_len: 40_000,
        generator: Some(|rng, _| {
            match rng.random_range(0..3) {
                // Names right at the length limits.
                0 => {
                    let c = *pick(rng, &['a', 'é', '中', '😀', '.']);
                    let n = *pick(rng, &[127, 128, 129, 255, 256, 257]);
                    let mut s: String = std::iter::repeat_n(c, n).collect();
                    if rng.random_bool(0.3) {
                        let at = rng.random_range(0..n);
                        let at = s.char_indices().nth(at).map_or(s.len(), |(i, _)| i);
                        s.insert(at, *pick(rng, WILD_CHARS));
                    }
                    s.into_bytes()
                }
                // Message data at the size and depth limits.
                1 => {
                    let d = *pick(rng, &[31, 32, 33]);
                    let pad = *pick(rng, &[0, 32 * 1024 - 2 * 33 - 2, 32 * 1024]);
                    format!("{}\"{}\"{}", "[".repeat(d), "x".repeat(pad), "]".repeat(d))
                        .into_bytes()
                }
                _ => random_json(rng, 8, &[]).into_bytes(),
            }
        }),
        accepts: |d| rollcall::names::check_channel(&checks::text(d)).is_ok(),
    });
}

// ------------------------------------------------------- fixed hostile inputs

/// Every check on a fixed list of hostile inputs (independent of the
/// seed): deep nesting up to 100,000 levels, huge numbers, invalid UTF-8,
/// Unicode controls, empty and whitespace-only input.
#[test]
fn every_check_survives_fixed_hostile_inputs() {
    let mut inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        b" ".to_vec(),
        b"\n".to_vec(),
        b"\xef\xbb\xbf{}".to_vec(),
        b"\xff\xfe\x00".to_vec(),
        b"\xed\xa0\x80".to_vec(),
        b"{\"a\":\"\\ud800\"}".to_vec(),
        format!("1{}", "0".repeat(100_000)).into_bytes(),
        b"[1e999999999, -0, 18446744073709551616, 1E+2147483648]".to_vec(),
        "\u{202e}\u{2066}\u{0}\u{85}\u{feff}".as_bytes().to_vec(),
    ];
    for n in [32, 33, 128, 129, 100_000] {
        inputs.push("[".repeat(n).into_bytes());
        inputs.push(format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes());
        inputs.push("{\"a\":".repeat(n).into_bytes());
        inputs.push(format!("{}0{}", "{\"a\":".repeat(n), "}".repeat(n)).into_bytes());
    }
    for prefix in [
        &b"\x00"[..],
        b"\x01",
        b"\x01{\"alg\":\"HS256\"}\n",
        b"#regex:",
        b"40/chat?",
    ] {
        for n in [129, 100_000] {
            inputs.push([prefix, "[".repeat(n).as_bytes()].concat());
        }
    }
    type Check = (&'static str, fn(&[u8]));
    let mut all: Vec<Check> = vec![
        ("names", checks::names),
        ("jwt_token", checks::jwt_token),
        ("claims", checks::claims),
        ("patterns", checks::patterns),
        ("cluster_frame", checks::cluster_frame),
        ("conformance_suite", checks::conformance_suite),
    ];
    #[cfg(feature = "hotsock")]
    all.push(("hotsock_frame", checks::hotsock_frame));
    #[cfg(feature = "socketio")]
    all.extend([
        ("socketio_payload", checks::socketio_payload as fn(&[u8])),
        ("socketio_polling", checks::socketio_polling),
        ("socketio_auth", checks::socketio_auth),
    ]);
    #[cfg(feature = "sc")]
    all.extend([
        ("sc_frame", checks::sc_frame as fn(&[u8])),
        ("sc_request", checks::sc_request),
    ]);
    #[cfg(feature = "sgc")]
    all.extend([
        ("sgc_frame", checks::sgc_frame as fn(&[u8])),
        ("sgc_lenient", checks::sgc_lenient),
        ("sgc_base64", checks::sgc_base64),
    ]);
    for (name, check) in all {
        for input in &inputs {
            let t = std::time::Instant::now();
            check(input);
            assert!(
                t.elapsed() < fuzz_support::SLOW_CASE,
                "{name} took {:?} on {}",
                t.elapsed(),
                fuzz_support::preview(input)
            );
        }
    }
}

// ------------------------------------------------------------ regressions
//
// Minimal inputs of crashes and broken invariants the fuzz tests found.
// Each is checked directly (no randomness), so it keeps failing until the
// decoder is fixed.
//
// None so far: no decoder has panicked, hung or broken an invariant (the
// failures seen while writing these tests were mistakes in the checks).
