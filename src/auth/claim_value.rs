//! Small helpers for reading typed values out of claim objects with error
//! messages that name the claim path.

use serde_json::{Map, Value};

use super::AuthError;

/// The value of `name`, treating `null` as absent.
pub(super) fn present<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

pub(super) fn field_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

pub(super) fn opt_bool(
    obj: &Map<String, Value>,
    name: &str,
    path: &str,
) -> Result<Option<bool>, AuthError> {
    match present(obj, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(AuthError::invalid_claims(format!(
            "{} must be a boolean, got {}",
            field_path(path, name),
            describe(other)
        ))),
    }
}

pub(super) fn opt_string(
    obj: &Map<String, Value>,
    name: &str,
    path: &str,
) -> Result<Option<String>, AuthError> {
    match present(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(AuthError::invalid_claims(format!(
            "{} must be a string, got {}",
            field_path(path, name),
            describe(other)
        ))),
    }
}

pub(super) fn opt_object<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
    path: &str,
) -> Result<impl Iterator<Item = (&'a str, &'a Value)>, AuthError> {
    let inner = match present(obj, name) {
        None => None,
        Some(Value::Object(o)) => Some(o),
        Some(other) => {
            return Err(AuthError::invalid_claims(format!(
                "{} must be an object, got {}",
                field_path(path, name),
                describe(other)
            )));
        }
    };
    Ok(inner
        .into_iter()
        .flat_map(|o| o.iter().map(|(k, v)| (k.as_str(), v))))
}

pub(super) fn whole_number(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= 1e15)
            .map(|f| f as u64)
    })
}

/// A JSON string literal for a claim path, e.g. `"presence.*"`.
pub(super) fn quote(key: &str) -> String {
    Value::String(key.to_owned()).to_string()
}

/// A short description of a value for error messages, e.g. `a string ("yes")`.
pub(super) fn describe(v: &Value) -> String {
    let (kind, show) = match v {
        Value::Null => ("null", false),
        Value::Bool(_) => ("a boolean", true),
        Value::Number(_) => ("a number", true),
        Value::String(_) => ("a string", true),
        Value::Array(_) => ("an array", false),
        Value::Object(_) => ("an object", false),
    };
    let text = v.to_string();
    if show && text.chars().count() <= 40 {
        format!("{kind} ({text})")
    } else {
        kind.to_owned()
    }
}
