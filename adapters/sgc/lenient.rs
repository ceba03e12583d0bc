//! A lenient JSON reader for frames written by sgc's own JSON writer.
//!
//! sgcWebSockets writes JSON without escaping (spec §3.4): a Delphi client
//! with member info sends raw CR LF bytes inside a string, a `"` inside a
//! text goes out unescaped, and a string that begins with `{` or `[` goes
//! out unquoted, as raw JSON. Strict parsers (serde_json) reject the first
//! two; this reader accepts them:
//!
//! - raw control characters inside strings are kept as they are;
//! - a `"` inside a string ends it only if the next non-blank character is
//!   `,`, `}`, `]`, `:` or the end of the input; otherwise it is part of
//!   the text (`{"text":"say "hi" now"}` reads as `say "hi" now`);
//! - valid escapes (`\n`, `\"`, `\u00e9`, …) are decoded; an invalid one
//!   (`C:\data`) is kept literally;
//! - trailing commas before `}` or `]` are ignored;
//! - any value can be read as text ([`Value::text`]): an object or array
//!   found where a string is expected becomes its JSON text, exactly as it
//!   appeared in the frame, which is how sgc's own reader treats it.
//!
//! Anything else (an unterminated object, a bare word, nesting deeper than
//! [`MAX_DEPTH`]) is an error, and the caller drops the frame.

use std::borrow::Cow;
use std::fmt;

/// Deepest nesting of objects and arrays accepted.
pub const MAX_DEPTH: usize = 32;

/// A parsed JSON value. Objects and arrays keep their source text.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number, as written.
    Number(&'a str),
    /// A string, unescaped.
    String(Cow<'a, str>),
    /// An array and its source text.
    Array(Vec<Value<'a>>, &'a str),
    /// An object (keys in order, duplicates kept) and its source text.
    Object(Vec<(Cow<'a, str>, Value<'a>)>, &'a str),
}

impl<'a> Value<'a> {
    /// The value of `key` in an object (the first one if repeated), or
    /// None for a missing key or a value that is not an object.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Object(fields, _) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value read as text: a string as is, a number as written,
    /// `true`/`false`, `""` for null, and an object or array as its JSON
    /// source text.
    pub fn text(&self) -> Cow<'a, str> {
        match self {
            Value::Null => Cow::Borrowed(""),
            Value::Bool(true) => Cow::Borrowed("true"),
            Value::Bool(false) => Cow::Borrowed("false"),
            Value::Number(n) => Cow::Borrowed(n),
            Value::String(s) => s.clone(),
            Value::Array(_, raw) | Value::Object(_, raw) => Cow::Borrowed(raw),
        }
    }
}

/// Why a frame could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset where reading failed.
    pub at: usize,
    /// What was wrong there.
    pub what: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

impl std::error::Error for ParseError {}

/// Parses one JSON value (surrounding whitespace and a UTF-8 byte order
/// mark allowed).
pub fn parse(input: &str) -> Result<Value<'_>, ParseError> {
    let start = if input.starts_with('\u{feff}') { 3 } else { 0 };
    let mut p = Parser {
        src: input,
        bytes: input.as_bytes(),
        pos: start,
        depth: 0,
    };
    p.skip_ws();
    let v = p.value()?;
    p.skip_ws();
    if p.pos != p.bytes.len() {
        return Err(p.err("unexpected text after the JSON value"));
    }
    Ok(v)
}

struct Parser<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, what: &'static str) -> ParseError {
        ParseError { at: self.pos, what }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.peek() {
            self.pos += 1;
        }
    }

    fn value(&mut self) -> Result<Value<'a>, ParseError> {
        match self.peek() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(_) => Err(self.err("expected a JSON value")),
            None => Err(self.err("unexpected end of input")),
        }
    }

    fn literal(&mut self, word: &'static str, v: Value<'a>) -> Result<Value<'a>, ParseError> {
        if self.src[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(v)
        } else {
            Err(self.err("expected a JSON value"))
        }
    }

    fn number(&mut self) -> Result<Value<'a>, ParseError> {
        let start = self.pos;
        while let Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        let text = &self.src[start..self.pos];
        if !text.bytes().any(|b| b.is_ascii_digit()) {
            return Err(self.err("invalid number"));
        }
        Ok(Value::Number(text))
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        Ok(())
    }

    fn object(&mut self) -> Result<Value<'a>, ParseError> {
        self.enter()?;
        let start = self.pos;
        self.pos += 1;
        let mut fields = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b'}') => break,
                Some(b'"') => {}
                Some(_) => return Err(self.err("expected a quoted key or '}'")),
                None => return Err(self.err("unterminated object")),
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':' after a key"));
            }
            self.pos += 1;
            self.skip_ws();
            let v = self.value()?;
            fields.push((key, v));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => break,
                Some(_) => return Err(self.err("expected ',' or '}'")),
                None => return Err(self.err("unterminated object")),
            }
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(Value::Object(fields, &self.src[start..self.pos]))
    }

    fn array(&mut self) -> Result<Value<'a>, ParseError> {
        self.enter()?;
        let start = self.pos;
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b']') => break,
                None => return Err(self.err("unterminated array")),
                Some(_) => {}
            }
            items.push(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => break,
                Some(_) => return Err(self.err("expected ',' or ']'")),
                None => return Err(self.err("unterminated array")),
            }
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(Value::Array(items, &self.src[start..self.pos]))
    }

    /// True if the `"` at `self.pos` closes the string being read.
    fn quote_closes(&self) -> bool {
        let mut i = self.pos + 1;
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.bytes.get(i) {
            i += 1;
        }
        matches!(self.bytes.get(i), None | Some(b',' | b'}' | b']' | b':'))
    }

    fn string(&mut self) -> Result<Cow<'a, str>, ParseError> {
        self.pos += 1;
        let start = self.pos;
        let mut owned: Option<String> = None;
        loop {
            let Some(b) = self.peek() else {
                return Err(self.err("unterminated string"));
            };
            match b {
                b'"' if self.quote_closes() => {
                    let s = match owned {
                        Some(s) => Cow::Owned(s),
                        None => Cow::Borrowed(&self.src[start..self.pos]),
                    };
                    self.pos += 1;
                    return Ok(s);
                }
                b'\\' => {
                    let buf = owned.get_or_insert_with(|| self.src[start..self.pos].to_string());
                    match decode_escape(&self.src[self.pos..]) {
                        Some((c, len)) => {
                            buf.push_str(&c);
                            self.pos += len;
                        }
                        None => {
                            buf.push('\\');
                            self.pos += 1;
                        }
                    }
                }
                _ => {
                    // Copy one whole character (the input is valid UTF-8).
                    let ch_len = self.src[self.pos..]
                        .chars()
                        .next()
                        .map_or(1, char::len_utf8);
                    if let Some(buf) = owned.as_mut() {
                        buf.push_str(&self.src[self.pos..self.pos + ch_len]);
                    }
                    self.pos += ch_len;
                }
            }
        }
    }
}

/// Decodes the escape at the start of `s` (which begins with `\`): the
/// text it stands for and its length, or None if it is not a valid escape.
fn decode_escape(s: &str) -> Option<(Cow<'static, str>, usize)> {
    let b = s.as_bytes();
    let simple = match b.get(1)? {
        b'"' => "\"",
        b'\\' => "\\",
        b'/' => "/",
        b'b' => "\u{8}",
        b'f' => "\u{c}",
        b'n' => "\n",
        b'r' => "\r",
        b't' => "\t",
        b'u' => {
            let hi = hex4(s.get(2..6)?)?;
            if (0xD800..0xDC00).contains(&hi) {
                // A surrogate pair: \uD83D\uDE00.
                if s.get(6..8)? != "\\u" {
                    return None;
                }
                let lo = hex4(s.get(8..12)?)?;
                if !(0xDC00..0xE000).contains(&lo) {
                    return None;
                }
                let c = char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?;
                return Some((Cow::Owned(c.to_string()), 12));
            }
            let c = char::from_u32(hi)?;
            return Some((Cow::Owned(c.to_string()), 6));
        }
        _ => return None,
    };
    Some((Cow::Borrowed(simple), 2))
}

fn hex4(s: &str) -> Option<u32> {
    if s.len() == 4 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(frame: &str, path: &[&str]) -> String {
        let v = parse(frame).unwrap_or_else(|e| panic!("{frame}: {e}"));
        let mut cur = &v;
        for key in path {
            cur = cur
                .get(key)
                .unwrap_or_else(|| panic!("no {key} in {frame}"));
        }
        cur.text().into_owned()
    }

    #[test]
    fn reads_standard_json() {
        let f = r#"{"jsonrpc":"2.0","method":"sgc@presence@session","message":{"text":"3F2504E04F8911D39A0C0305E82C3301"}}"#;
        assert_eq!(text_of(f, &["method"]), "sgc@presence@session");
        assert_eq!(
            text_of(f, &["message", "text"]),
            "3F2504E04F8911D39A0C0305E82C3301"
        );
        assert_eq!(
            text_of(r#"{"a":"x\"y\\z\u00e9\ud83d\ude00"}"#, &["a"]),
            "x\"y\\zé😀"
        );
        assert_eq!(text_of(r#"{"code":11}"#, &["code"]), "11");
        assert_eq!(text_of(r#"{"a":null,"b":true}"#, &["a"]), "");
        assert_eq!(text_of(r#"{"a":null,"b":true}"#, &["b"]), "true");
        assert_eq!(text_of("\u{feff} {\"a\":[1, 2]} ", &["a"]), "[1, 2]");
    }

    #[test]
    fn accepts_raw_control_characters_in_strings() {
        // The spec's §4.2 example, with the CR LF written raw by Delphi.
        let f = "{\"jsonrpc\":\"2.0\",\"method\":\"sgc@presence@member@new\",\"member\":{\"id\":\"3F25\",\"name\":\"alice\",\"info\":\"email=alice@example.com\r\n\"}}";
        assert_eq!(
            text_of(f, &["member", "info"]),
            "email=alice@example.com\r\n"
        );
        assert_eq!(text_of("{\"t\":\"a\tb\u{1}\"}", &["t"]), "a\tb\u{1}");
    }

    #[test]
    fn objects_where_strings_are_expected_become_their_text() {
        // §3.4: Publish('{"x":1}') goes out unquoted.
        let f = r#"{"jsonrpc":"2.0","method":"sgc@presence@publish@msg","message":{"text":{"x":1, "y":[true]}},"channel":{"name":"room-42"}}"#;
        assert_eq!(text_of(f, &["message", "text"]), r#"{"x":1, "y":[true]}"#);
        assert_eq!(
            text_of(r#"{"m":{"text":[1,{"a":"}"}]}}"#, &["m", "text"]),
            r#"[1,{"a":"}"}]"#
        );
    }

    #[test]
    fn unescaped_quotes_inside_strings_are_kept() {
        assert_eq!(
            text_of(r#"{"text":"say "hi" now","x":1}"#, &["text"]),
            r#"say "hi" now"#
        );
        assert_eq!(text_of(r#"{"text":"5" tall"}"#, &["text"]), r#"5" tall"#);
        assert_eq!(text_of(r#"{"text":"""}"#, &["text"]), "\"");
    }

    #[test]
    fn invalid_escapes_are_kept_literally() {
        assert_eq!(text_of(r#"{"p":"C:\data\x"}"#, &["p"]), r"C:\data\x");
        assert_eq!(text_of(r#"{"p":"\u12"}"#, &["p"]), r"\u12");
        assert_eq!(text_of(r#"{"p":"\ud800x"}"#, &["p"]), r"\ud800x");
    }

    #[test]
    fn trailing_commas_are_ignored() {
        assert_eq!(text_of(r#"{"a":[1,2,],"b":"c",}"#, &["b"]), "c");
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            "",
            "{",
            "{\"a\":",
            "{\"a\":\"x",
            "{a:1}",
            "hello",
            "{\"a\":1} trailing",
            "{\"a\":tru}",
            "{\"a\":-}",
            "[1 2]",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(&deep).map_err(|e| e.what), Err("nesting too deep"));
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
    }
}
