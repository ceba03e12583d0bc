//! `rollcall config print`: every setting of `serve` as it would take
//! effect, in TOML, each with where its value came from (the command line,
//! the environment, the `--config` file or the built-in default). Secrets
//! are masked and passwords in URLs hidden, so the output can be pasted
//! into an issue.

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

use super::FileSettings;

/// Arguments whose values are secrets.
fn is_secret(id: &str) -> bool {
    id.contains("secret") || id.contains("password") || id == "api_key"
}

/// A value as TOML: numbers and booleans bare, everything else quoted.
fn toml_value(value: &str) -> String {
    let bare = value == "true"
        || value == "false"
        || (value.parse::<f64>().is_ok() && !value.starts_with('+'));
    match bare {
        true => value.to_string(),
        false => toml::Value::String(value.to_string()).to_string(),
    }
}

/// The report for `command` (serve's, with the environment and `file`
/// applied) as `matches` parsed it.
pub fn effective(command: &Command, matches: &ArgMatches, file: &FileSettings) -> String {
    let mut out =
        String::from("# rollcall serve: effective settings (source after #; secrets masked)\n");
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version" | "config") {
            continue;
        }
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "command line".to_string(),
            Some(ValueSource::EnvVariable) => format!("env ROLLCALL_{}", id.to_uppercase()),
            Some(ValueSource::DefaultValue) if file.sets(id) => "config file".to_string(),
            Some(ValueSource::DefaultValue) => "default".to_string(),
            _ => "not set".to_string(),
        };
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|raw| {
                raw.map(|v| {
                    let v = v.to_string_lossy();
                    match is_secret(id) {
                        true => "***".to_string(),
                        false => crate::http_client::redact_password(&v),
                    }
                })
                .collect()
            })
            .unwrap_or_default();
        let line = match (
            values.len(),
            matches!(arg.get_action(), clap::ArgAction::Append),
        ) {
            (0, _) if source == "not set" => {
                out.push_str(&format!("# {long} (not set)\n"));
                continue;
            }
            (0, _) => format!("{long} = []"),
            (1, false) => format!("{long} = {}", toml_value(&values[0])),
            _ => format!(
                "{long} = [{}]",
                values
                    .iter()
                    .map(|v| toml_value(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        out.push_str(&format!("{line}  # {source}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_toml_and_secrets_masked() {
        assert_eq!(toml_value("4000"), "4000");
        assert_eq!(toml_value("true"), "true");
        assert_eq!(toml_value("127.0.0.1:4000"), "\"127.0.0.1:4000\"");
        assert!(is_secret("jwt_secret") && is_secret("api_key") && is_secret("webhook_secret"));
        assert!(!is_secret("listen"));
    }
}
