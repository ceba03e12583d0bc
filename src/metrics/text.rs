//! The Prometheus text exposition format, version 0.0.4, written by hand:
//! `# HELP` and `# TYPE` once per family, then its samples
//! `name{label="value"} number`, one per line.

use std::fmt::Write;

/// The `Content-Type` of a scrape answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A sample's value: integers stay exact (an f64 would round counters
/// above 2^53).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    /// A whole number.
    Int(u64),
    /// A real number (seconds, ratios).
    Float(f64),
}

impl From<u64> for Number {
    fn from(n: u64) -> Self {
        Number::Int(n)
    }
}

impl From<usize> for Number {
    fn from(n: usize) -> Self {
        Number::Int(n as u64)
    }
}

impl From<bool> for Number {
    fn from(b: bool) -> Self {
        Number::Int(u64::from(b))
    }
}

impl From<f64> for Number {
    fn from(x: f64) -> Self {
        Number::Float(x)
    }
}

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// A scrape answer being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty answer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a counter family (`name` ends in `_total`).
    pub fn counter(&mut self, name: &'static str, help: &str) -> Family<'_> {
        debug_assert!(
            name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        self.family(name, Kind::Counter, help)
    }

    /// Starts a gauge family.
    pub fn gauge(&mut self, name: &'static str, help: &str) -> Family<'_> {
        self.family(name, Kind::Gauge, help)
    }

    fn family(&mut self, name: &'static str, kind: Kind, help: &str) -> Family<'_> {
        debug_assert!(valid_name(name, true), "bad metric name {name}");
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape(help, false));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        Family {
            out: &mut self.out,
            name,
        }
    }

    /// The text to send.
    pub fn finish(self) -> String {
        self.out
    }
}

/// The samples of one family, written right after its HELP and TYPE lines.
#[derive(Debug)]
pub struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    /// One sample without labels.
    pub fn value(&mut self, value: impl Into<Number>) -> &mut Self {
        self.sample(&[], value)
    }

    /// One sample with these labels (names are fixed identifiers; values
    /// are escaped).
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Into<Number>) -> &mut Self {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                debug_assert!(valid_name(label, false), "bad label name {label}");
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape(v, true));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        match value.into() {
            Number::Int(n) => {
                let _ = write!(self.out, "{n}");
            }
            Number::Float(x) if x.is_nan() => self.out.push_str("NaN"),
            Number::Float(x) if x.is_infinite() => {
                self.out.push_str(if x > 0.0 { "+Inf" } else { "-Inf" });
            }
            // Rust prints f64 without an exponent; Prometheus parses either.
            Number::Float(x) => {
                let _ = write!(self.out, "{x}");
            }
        }
        self.out.push('\n');
        self
    }
}

/// Escapes a HELP text (`\` and newline) or a label value (also `"`).
fn escape(text: &str, label_value: bool) -> std::borrow::Cow<'_, str> {
    let special = |c: char| c == '\\' || c == '\n' || (label_value && c == '"');
    if !text.contains(special) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if label_value => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out.into()
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*` for metric names, without `:` for labels.
fn valid_name(name: &str, colon: bool) -> bool {
    let ok = |c: char, first: bool| {
        c.is_ascii_alphabetic() || c == '_' || (colon && c == ':') || (!first && c.is_ascii_digit())
    };
    let mut chars = name.chars();
    chars.next().is_some_and(|c| ok(c, true)) && chars.all(|c| ok(c, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaping() {
        let mut out = Exposition::new();
        out.counter("x_total", "Things.\nMore \\ \"quoted\"")
            .sample(&[("p", "a\"b\\c\nd")], 3u64)
            .sample(&[("p", "plain"), ("q", "2")], 0u64);
        out.gauge("g", "A gauge.").value(0.25).value(f64::NAN);
        out.gauge("h", "Flag.").value(true);
        assert_eq!(
            out.finish(),
            "# HELP x_total Things.\\nMore \\\\ \"quoted\"\n\
             # TYPE x_total counter\n\
             x_total{p=\"a\\\"b\\\\c\\nd\"} 3\n\
             x_total{p=\"plain\",q=\"2\"} 0\n\
             # HELP g A gauge.\n\
             # TYPE g gauge\n\
             g 0.25\n\
             g NaN\n\
             # HELP h Flag.\n\
             # TYPE h gauge\n\
             h 1\n"
        );
    }

    #[test]
    fn names() {
        assert!(valid_name("rollcall_bus_up", true));
        assert!(valid_name("a:b", true));
        assert!(!valid_name("a:b", false));
        assert!(!valid_name("1a", true));
        assert!(!valid_name("", true));
        assert!(!valid_name("a-b", true));
    }

    #[test]
    fn big_counters_stay_exact() {
        let mut out = Exposition::new();
        out.counter("n_total", "N.").value(u64::MAX);
        assert!(out.finish().ends_with("n_total 18446744073709551615\n"));
    }
}
