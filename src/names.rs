//! The names and payloads every front end and the HTTP API share: one
//! check each, applied by the core, so a name one front end accepts every
//! other front end and the API can address, and no protocol's envelope
//! lets a client send what another protocol refuses.

/// Longest channel name, in characters.
pub const MAX_CHANNEL_CHARS: usize = 256;
/// Longest client event name, in characters.
pub const MAX_EVENT_CHARS: usize = 128;
/// Longest user id, in characters.
pub const MAX_USER_ID_CHARS: usize = 128;
/// Largest client message data, in bytes (the JSON as sent on).
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Deepest nesting of arrays and objects in client message data.
pub const MAX_JSON_DEPTH: usize = 32;

/// Characters no name may contain: controls (C0, DEL, C1) and the Unicode
/// bidirectional controls, which make a name display as another.
fn forbidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}')
        || ('\u{202A}'..='\u{202E}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

fn describe(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

/// A channel name a client may use: 1-256 characters, none of `*` `,` `#`
/// (patterns, lists and server channels use them), whitespace, control or
/// bidirectional-control characters.
pub fn check_channel(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the channel name is empty".into());
    }
    if name.chars().count() > MAX_CHANNEL_CHARS {
        return Err(format!(
            "the channel name is longer than {MAX_CHANNEL_CHARS} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '*' | ',' | '#') || c.is_whitespace() || forbidden(*c))
    {
        let shown = if forbidden(c) || c.is_whitespace() {
            describe(c)
        } else {
            format!("{c:?}")
        };
        return Err(format!(
            "the channel name contains {shown}; channel names may not contain '*', ',', '#', whitespace, control or bidirectional-control characters"
        ));
    }
    Ok(())
}

/// A client event name: 1-128 characters, no `*`, no control or
/// bidirectional-control characters, and not one of the names servers
/// reserve (`#…`, `hotsock.…`), so no front end's client can make another
/// front end's client see a server event.
pub fn check_event(event: &str) -> Result<(), String> {
    if event.is_empty() {
        return Err("the event name is empty".into());
    }
    if event.chars().count() > MAX_EVENT_CHARS {
        return Err(format!(
            "the event name is longer than {MAX_EVENT_CHARS} characters"
        ));
    }
    if event.starts_with('#') || event.starts_with("hotsock.") {
        return Err(format!(
            "the event name {event:?} is reserved for the server (names starting with '#' or 'hotsock.')"
        ));
    }
    if let Some(c) = event.chars().find(|c| *c == '*' || forbidden(*c)) {
        return Err(format!(
            "the event name contains {}; event names may not contain '*', control or bidirectional-control characters",
            describe(c)
        ));
    }
    Ok(())
}

/// A user id from a token: 1-128 characters, no control or
/// bidirectional-control characters (the HTTP API must be able to name it).
pub fn check_user_id(uid: &str) -> Result<(), String> {
    if uid.is_empty() {
        return Err("the user id is empty".into());
    }
    if uid.chars().count() > MAX_USER_ID_CHARS {
        return Err(format!(
            "the user id is longer than {MAX_USER_ID_CHARS} characters"
        ));
    }
    if let Some(c) = uid.chars().find(|c| forbidden(*c)) {
        return Err(format!(
            "the user id contains {}; user ids may not contain control or bidirectional-control characters",
            describe(c)
        ));
    }
    Ok(())
}

/// Client message data (JSON text): at most [`MAX_MESSAGE_BYTES`] and
/// [`MAX_JSON_DEPTH`] levels of nesting.
pub fn check_message_data(json: &str) -> Result<(), String> {
    if json.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "the message data is {} bytes, more than the {MAX_MESSAGE_BYTES} allowed; send less",
            json.len()
        ));
    }
    if json_depth(json) > MAX_JSON_DEPTH {
        return Err(format!(
            "the message data nests deeper than {MAX_JSON_DEPTH} levels; flatten it"
        ));
    }
    Ok(())
}

/// The deepest nesting of `[` and `{` outside strings (the text is valid
/// JSON: it was parsed before).
pub fn json_depth(json: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in json.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        assert!(check_channel("presence.room-1").is_ok());
        assert!(check_channel("presence>room").is_ok());
        assert!(check_channel("user:alice").is_ok());
        assert!(check_channel("space/42_a.b").is_ok());
        assert!(check_channel(&"é".repeat(256)).is_ok());
        for bad in [
            "",
            "a b",
            "a\tb",
            "a*",
            "a,b",
            "#x",
            "a\u{0}b",
            "a\u{1b}b",
            "ab\u{202e}",
            "a\u{2066}",
        ] {
            assert!(check_channel(bad).is_err(), "{bad:?} was accepted");
        }
        let err = check_channel(&"x".repeat(257)).unwrap_err();
        assert!(err.contains("256"), "{err}");
        let err = check_channel("evil\u{202e}txt").unwrap_err();
        assert!(err.contains("U+202E"), "{err}");
    }

    #[test]
    fn event_names() {
        assert!(check_event("chat").is_ok());
        assert!(check_event("app.event.presence").is_ok());
        for bad in [
            "",
            "#publish",
            "hotsock.memberRemoved",
            "a*",
            "a\u{0}",
            "a\u{202e}",
        ] {
            assert!(check_event(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(check_event(&"e".repeat(129)).is_err());
    }

    #[test]
    fn user_ids() {
        assert!(check_user_id("alice@example.com").is_ok());
        assert!(check_user_id("Zoë Ω").is_ok());
        for bad in ["", "a\u{0}", "a\u{1b}[31m", "a\u{202e}"] {
            assert!(check_user_id(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(check_user_id(&"u".repeat(129)).is_err());
    }

    #[test]
    fn message_data_size_and_depth() {
        assert!(check_message_data(r#"{"a":[1,2,{"b":"[[[[["}]}"#).is_ok());
        assert_eq!(json_depth(r#"{"a":[1,2,{"b":"[[[[["}]}"#), 3);
        assert_eq!(json_depth(r#""\"[[""#), 0);
        let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        assert!(check_message_data(&deep).unwrap_err().contains("32"));
        let ok = format!("{}{}", "[".repeat(32), "]".repeat(32));
        assert!(check_message_data(&ok).is_ok());
        let big = format!("\"{}\"", "x".repeat(MAX_MESSAGE_BYTES));
        assert!(check_message_data(&big).unwrap_err().contains("bytes"));
    }
}
