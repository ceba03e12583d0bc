//! Layering: clap parses the flags and the `ROLLCALL_*` variables; the
//! TOML file's values become the arguments' default values, so they sit
//! between the built-in defaults and the environment, and pass through
//! the same value parsers as a flag would.

use std::path::{Path, PathBuf};

use clap::{Arg, Args, Command, FromArgMatches};

use super::Config;
use crate::policy::{ForwardRuleConfig, RuleConfig};

/// The TOML key of the `[[channel-rules]]` tables (not a flag).
const CHANNEL_RULES: &str = "channel-rules";
/// The TOML key of the `[[forward-rules]]` tables (not a flag).
const FORWARD_RULES: &str = "forward-rules";

/// A configuration that cannot be used; the message names the file and
/// the key, and says what to write instead.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {} is not valid TOML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error(
        "config file {}: unknown key `{key}`; keys are the long flags of `rollcall serve --help` \
         (e.g. `max-member-bytes = 5000`), at the top level or in their section \
         (e.g. `[sgc]` `require-token = true`)",
        path.display()
    )]
    UnknownKey { path: PathBuf, key: String },
    #[error("config file {}: {key} = {value}: {message}", path.display())]
    InvalidValue {
        path: PathBuf,
        key: String,
        value: String,
        message: String,
    },
    #[error("config file {}: `{key}` is given twice", path.display())]
    Duplicate { path: PathBuf, key: String },
    #[error("{0}")]
    Arguments(String),
}

/// The settings of one TOML file: default values for `serve`'s arguments
/// (by argument id) and the channel rules.
#[derive(Clone, Debug, Default)]
pub struct FileSettings {
    values: Vec<(String, Vec<String>)>,
    /// The `[[channel-rules]]` tables.
    pub channel_rules: Vec<RuleConfig>,
    /// The `[[forward-rules]]` tables.
    pub forward_rules: Vec<ForwardRuleConfig>,
}

impl FileSettings {
    /// Reads and checks a TOML file against the settings' arguments.
    pub fn read(path: &Path) -> Result<FileSettings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
            path: path.into(),
            source,
        })?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.into(),
            message: e.message().to_string(),
        })?;
        let command = settings_command();
        let mut settings = FileSettings::default();
        for (key, value) in table {
            let tables_error = |e: toml::de::Error| ConfigError::InvalidValue {
                path: path.into(),
                key: key.clone(),
                value: "[[…]]".into(),
                message: e.message().to_string(),
            };
            if key == CHANNEL_RULES {
                settings.channel_rules = value.try_into().map_err(tables_error)?;
                continue;
            }
            if key == FORWARD_RULES {
                settings.forward_rules = value.try_into().map_err(tables_error)?;
                continue;
            }
            match (value, section_args(&command, &key)) {
                (toml::Value::Table(section), Some(members)) => {
                    for (name, value) in section {
                        let arg = members.iter().copied().find(|arg| {
                            arg.get_long()
                                .is_some_and(|long| long == name || long == format!("{key}-{name}"))
                        });
                        settings.add(path, arg, &format!("{key}.{name}"), value)?;
                    }
                }
                (value, _) => {
                    let arg = command
                        .get_arguments()
                        .find(|arg| arg.get_long() == Some(key.as_str()));
                    settings.add(path, arg, &key, value)?;
                }
            }
        }
        Ok(settings)
    }

    /// Checks one value with the argument's own parser and keeps it.
    fn add(
        &mut self,
        path: &Path,
        arg: Option<&Arg>,
        key: &str,
        value: toml::Value,
    ) -> Result<(), ConfigError> {
        let arg = arg.ok_or_else(|| ConfigError::UnknownKey {
            path: path.into(),
            key: key.into(),
        })?;
        let invalid = |message: String| ConfigError::InvalidValue {
            path: path.into(),
            key: key.into(),
            value: shown_value(arg, &value),
            message,
        };
        let values = match &value {
            toml::Value::Array(items) => items.iter().map(scalar).collect(),
            other => scalar(other).map(|v| vec![v]),
        }
        .map_err(invalid)?;
        let takes_many = arg.get_num_args().is_some_and(|n| n.max_values() > 1)
            || arg.get_value_delimiter().is_some();
        if values.len() != 1 && !takes_many {
            return Err(invalid("give one value, not a list".into()));
        }
        for item in &values {
            check_value(arg, item).map_err(invalid)?;
        }
        let id = arg.get_id().as_str().to_string();
        if self.values.iter().any(|(known, _)| *known == id) {
            return Err(ConfigError::Duplicate {
                path: path.into(),
                key: key.into(),
            });
        }
        self.values.push((id, values));
        Ok(())
    }

    /// Whether the file sets the argument `id`.
    pub fn sets(&self, id: &str) -> bool {
        self.values.iter().any(|(i, _)| i == id)
    }

    /// `command` with this file's values as its arguments' defaults.
    pub fn apply(&self, mut command: Command) -> Command {
        for (id, values) in &self.values {
            let values = values.clone();
            command = command.mut_arg(id, move |arg| arg.default_values(values));
        }
        command
    }
}

/// Parses `value` as the flag would be parsed, with the argument's own
/// value parser (the error says why it does not fit).
fn check_value(arg: &Arg, value: &str) -> Result<(), String> {
    let Some(long) = arg.get_long() else {
        return Ok(());
    };
    Command::new("check")
        .no_binary_name(true)
        .arg(arg.clone())
        .try_get_matches_from([format!("--{long}={value}")])
        .map(|_| ())
        .map_err(|e| clap_reason(&e))
}

/// The arguments of the group `[section]` names, if it is one.
fn section_args<'a>(command: &'a Command, section: &str) -> Option<Vec<&'a Arg>> {
    let group = command
        .get_groups()
        .find(|g| g.get_id().as_str() == section)?;
    let ids: Vec<_> = group.get_args().collect();
    Some(
        command
            .get_arguments()
            .filter(|arg| ids.contains(&arg.get_id()))
            .collect(),
    )
}

/// A TOML scalar as the text a flag would carry.
fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(_) | toml::Value::Table(_) | toml::Value::Array(_) => {
            Err("use a string, number or boolean (or a list of them)".into())
        }
    }
}

/// The value as an error may show it: never the value of a setting that
/// can hold a secret.
fn shown_value(arg: &Arg, value: &toml::Value) -> String {
    if holds_secret(arg) {
        "(value hidden: it may hold a secret)".into()
    } else {
        value.to_string()
    }
}

/// Settings whose value may be or contain a secret (keys, passwords in URLs).
fn holds_secret(arg: &Arg) -> bool {
    let id = arg.get_id().as_str();
    ["secret", "key", "url", "bus"]
        .iter()
        .any(|word| id.contains(word))
}

/// The reason part of a clap value error, without its "error:" frame.
fn clap_reason(error: &clap::Error) -> String {
    let text = error.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// The settings' arguments alone, as a command (no binary name).
fn settings_command() -> Command {
    Config::augment_args(Command::new("rollcall serve").no_binary_name(true))
}

/// Gives every argument with a long flag its `ROLLCALL_<ID>` environment
/// variable, and hides the variables' values in `--help` (they may be
/// secrets).
pub fn with_env_vars(command: Command) -> Command {
    command.mut_args(|arg| {
        let env = format!("ROLLCALL_{}", arg.get_id().as_str().to_uppercase());
        match arg.get_long() {
            Some("help" | "version") | None => arg,
            Some(_) => arg.env(env).hide_env_values(true),
        }
    })
}

/// The settings' built-in defaults (no environment, no flags).
pub fn defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(Command::new("defaults").no_binary_name(true));
    let parsed = command
        .try_get_matches_from(std::iter::empty::<String>())
        .and_then(|matches| T::from_arg_matches(&matches));
    match parsed {
        Ok(settings) => settings,
        // Only a default value that does not parse, which the unit tests catch.
        Err(e) => panic!("the built-in settings defaults do not parse: {e}"),
    }
}

/// The file over the defaults, without the environment or flags.
pub(super) fn from_file(path: &Path) -> Result<Config, ConfigError> {
    let file = FileSettings::read(path)?;
    let matches = file
        .apply(settings_command())
        .try_get_matches_from(std::iter::empty::<String>())
        .map_err(|e| ConfigError::Arguments(e.to_string()))?;
    let mut config =
        Config::from_arg_matches(&matches).map_err(|e| ConfigError::Arguments(e.to_string()))?;
    config.channels.channel_rules = file.channel_rules;
    config.channels.forward_rules = file.forward_rules;
    Ok(config)
}
