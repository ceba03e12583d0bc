use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// Writes `text` to a fresh file and reads it as a config file.
fn from_toml(text: &str) -> Result<Config, ConfigError> {
    let path = write_temp(text);
    let result = Config::from_file(&path);
    let _ = std::fs::remove_file(&path);
    result
}

fn write_temp(text: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path =
        std::env::temp_dir().join(format!("rollcall-config-{}-{n}.toml", std::process::id()));
    std::fs::write(&path, text).expect("temp file written");
    path
}

#[test]
fn defaults_parse_and_match_the_core_defaults() {
    let config = Config::default();
    assert_eq!(config.listener.listen.port(), 4000);
    assert_eq!(
        format!("{:?}", config.presence_limits()),
        format!("{:?}", Limits::default())
    );
    assert_eq!(config.limits.idle_timeout, Duration::from_secs(60));
    assert_eq!(config.cluster.node_timeout, Duration::from_millis(2500));
    assert!(config.services.allow_user_toggle);
}

#[test]
fn toml_overrides_defaults_at_the_top_level_and_in_sections() {
    let cfg = from_toml(
        r#"
        listen = "0.0.0.0:9000"
        jwt-secret = "s"
        max-member-bytes = 5000
        webhook-url = ["http://127.0.0.1:1/a", "http://127.0.0.1:1/b"]

        [limits]
        idle-timeout = "90s"

        [cluster]
        node-timeout = "3s"
        "#,
    )
    .unwrap();
    assert_eq!(cfg.listener.listen.port(), 9000);
    assert_eq!(cfg.auth.jwt_secret.as_deref(), Some("s"));
    assert_eq!(cfg.limits.max_member_bytes, 5000);
    assert_eq!(cfg.limits.idle_timeout, Duration::from_secs(90));
    assert_eq!(cfg.cluster.node_timeout, Duration::from_secs(3));
    assert_eq!(cfg.services.webhook_url.len(), 2);
    assert_eq!(
        cfg.limits.max_frame_bytes,
        Config::default().limits.max_frame_bytes
    );
}

#[test]
fn channel_rules_tables_are_read() {
    let cfg = from_toml(
        r#"
        [[channel-rules]]
        pattern = "lobby"
        subscribe = "anyone"
        "#,
    )
    .unwrap();
    assert_eq!(cfg.channels.channel_rules.len(), 1);
    assert_eq!(cfg.channels.channel_rules[0].subscribe, "anyone");
    assert_eq!(cfg.channels.channel_rules[0].publish, "subscribers");
}

#[test]
fn forward_rules_tables_are_read_and_checked() {
    let cfg = from_toml(
        r#"
        [[forward-rules]]
        channels = "game.*"
        events = "move.*"
        backend-only = true
        "#,
    )
    .unwrap();
    assert_eq!(cfg.channels.forward_rules.len(), 1);
    assert!(cfg.channels.forward_rules[0].backend_only);
    assert!(cfg.policy().is_ok());
    let err = from_toml("[[forward-rules]]\nchannels = \"a\"\nevent = \"x\"")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("forward-rules") && err.contains("event"),
        "{err}"
    );
}

#[test]
fn unknown_keys_name_the_key_and_the_file() {
    for (text, key) in [
        ("bogus = 1", "`bogus`"),
        ("[limits]\nbogus = 1", "`limits.bogus`"),
        ("[nowhere]\nlisten = \"127.0.0.1:1\"", "`nowhere`"),
        // A key of another group is not in this section.
        ("[cluster]\nlisten = \"127.0.0.1:1\"", "`cluster.listen`"),
    ] {
        let err = from_toml(text).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
        assert!(err.contains("rollcall-config-"), "{text}: {err}");
        assert!(err.contains("rollcall serve --help"), "{text}: {err}");
    }
}

#[test]
fn bad_values_name_the_key_and_the_file_and_say_why() {
    let err = from_toml("[limits]\nidle-timeout = \"soon\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("limits.idle-timeout = \"soon\""), "{err}");
    assert!(err.contains("invalid duration"), "{err}");
    assert!(err.contains("rollcall-config-"), "{err}");
    let err = from_toml("max-member-bytes = -1").unwrap_err().to_string();
    assert!(err.contains("max-member-bytes = -1"), "{err}");
    let err = from_toml("listen = [\"a\", \"b\"]")
        .unwrap_err()
        .to_string();
    assert!(err.contains("one value"), "{err}");
    let err = from_toml("max-member-bytes = 1\n[limits]\nmax-member-bytes = 2")
        .unwrap_err()
        .to_string();
    assert!(err.contains("given twice"), "{err}");
}

#[test]
fn the_write_delay_is_10ms_by_default_can_be_off_and_is_at_most_a_second() {
    assert_eq!(
        Config::default().limits.write_delay,
        Duration::from_millis(10)
    );
    assert_eq!(
        Config::default().transport().write_delay,
        TransportConfig::default().write_delay
    );
    let cfg = from_toml("write-delay = \"0s\"").unwrap();
    assert_eq!(cfg.limits.write_delay, Duration::ZERO);
    assert_eq!(cfg.transport().write_delay, Duration::ZERO);
    let cfg = from_toml("write-delay = \"25ms\"").unwrap();
    assert_eq!(cfg.transport().write_delay, Duration::from_millis(25));
    let err = from_toml("write-delay = \"2s\"").unwrap_err().to_string();
    assert!(err.contains("write-delay = \"2s\""), "{err}");
    assert!(err.contains("at most 1s"), "{err}");
}

#[test]
fn errors_never_show_a_secret_value() {
    let err = from_toml("jwt-secret = 12.5e300\napi-key = [\"x\", \"y\"]")
        .unwrap_err()
        .to_string();
    assert!(!err.contains("x\""), "{err}");
    let err = from_toml("bus = { password = \"hunter2\" }")
        .unwrap_err()
        .to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("hidden"), "{err}");
}

#[test]
fn an_unreadable_or_invalid_file_says_which() {
    let err = Config::from_file(Path::new("/nonexistent/rollcall.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Unreadable { .. }));
    assert!(err.to_string().contains("/nonexistent/rollcall.toml"));
    let err = from_toml("listen = ").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
}

#[test]
fn tls_ca_file_reaches_every_outgoing_client() {
    let cfg = from_toml(r#"tls-ca-file = "/etc/rollcall/ca.pem""#).unwrap();
    let path = Some(PathBuf::from("/etc/rollcall/ca.pem"));
    assert_eq!(cfg.cluster().unwrap().tls_ca_file, path);
    let services = cfg.services().unwrap();
    assert_eq!(services.tls_ca_file, path);
    assert_eq!(services.webhooks.tls_ca_file, path);
    let err = cfg.check_tls().unwrap_err();
    assert!(err.contains("no such file"), "{err}");
    assert!(Config::default().check_tls().is_ok());
}

#[test]
fn every_front_end_setting_is_read_from_its_section() {
    let mut text = String::new();
    let command = Config::augment_args(clap::Command::new("t"));
    let mut checked = 0;
    for group in ["hotsock", "socketio", "sc", "sgc"] {
        let Some(group) = command.get_groups().find(|g| g.get_id().as_str() == group) else {
            continue;
        };
        text.push_str(&format!("[{}]\n", group.get_id()));
        for id in group.get_args() {
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == id)
                .expect("a group's argument exists");
            if arg.is_hide_set() {
                continue;
            }
            let long = arg.get_long().expect("every setting has a long flag");
            let key = long
                .strip_prefix(&format!("{}-", group.get_id()))
                .unwrap_or(long);
            let default = arg
                .get_default_values()
                .first()
                .map(|v| v.to_string_lossy().into_owned());
            // The default, or a value of the right type for the others.
            let value = default.unwrap_or_else(|| match long {
                "oauth-introspection-url" => "http://127.0.0.1:9/introspect".into(),
                _ => "20000".into(),
            });
            text.push_str(&format!("{key} = \"{value}\"\n"));
            checked += 1;
        }
    }
    from_toml(&text).unwrap_or_else(|e| panic!("{text}\n{e}"));
    assert!(checked > 0 || crate::frontends::COMPILED.is_empty());
}

#[test]
fn websocket_compression_is_off_by_default_and_set_in_the_file() {
    assert!(!Config::default().limits.websocket_compression);
    assert!(!Config::default().transport().compression);
    let cfg = from_toml("websocket-compression = true").unwrap();
    assert!(cfg.transport().compression);
    let cfg = from_toml("[limits]\nwebsocket-compression = false").unwrap();
    assert!(!cfg.transport().compression);
}
