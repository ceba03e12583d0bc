//! The `rollcall` command line: config precedence and `rollcall token`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// The banner: every line up to the one that shows how to mint a token.
fn banner(cmd: &mut Command) -> Vec<String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rollcall");
    let stdout = child.stdout.take().expect("stdout");
    // If the banner never completes, kill the server so the read below
    // ends (at EOF) and the assertions report what was printed.
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(10));
        let _ = Command::new("kill").args(["-9", &pid]).status();
    });
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        let last = line.contains("rollcall token");
        lines.push(line);
        if last {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn no_command_serves_and_reads_env_and_the_config_file() {
    let dir = std::env::temp_dir().join(format!("rollcall-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rollcall.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:1\"\napi-key = \"from-file\"\n").unwrap();
    // The environment overrides the file; no flags at all.
    let lines = banner(
        Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .env("ROLLCALL_CONFIG", &file)
            .env("ROLLCALL_LISTEN", "127.0.0.1:0")
            .env("ROLLCALL_JWT_SECRET", "from-env"),
    );
    assert!(lines[0].starts_with("rollcall "), "{lines:?}");
    assert!(
        !lines[0].ends_with(":1"),
        "env must beat the file: {lines:?}"
    );
    let text = lines.join("\n");
    assert!(!text.contains("JWT secret"), "secret was given: {text}");
    assert!(!text.contains("API key"), "the file's key was used: {text}");
    assert!(text.contains("$ROLLCALL_JWT_SECRET"), "{text}");
    // The default channel policy, and how to open a namespace.
    assert!(
        text.contains("Channels    no channel rules: a channel is reachable only with a grant"),
        "{text}"
    );
    assert!(text.contains("--open-channels"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_banner_lists_the_rules_and_only_the_front_ends_served() {
    let lines = banner(Command::new(env!("CARGO_BIN_EXE_rollcall")).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--jwt-secret",
        "s",
        "--api-key",
        "k",
        "--open-channels",
        "lobby,room.*",
        "--authenticated-channels",
        "team.*",
        "--channel-check-url",
        "http://127.0.0.1:9/check?key=very-secret",
        "--frontends",
        "hotsock,sc",
    ]));
    let text = lines.join("\n");
    assert!(
        text.contains("lobby: anyone may subscribe, subscribers publish"),
        "{text}"
    );
    assert!(text.contains("room.*: anyone may subscribe"), "{text}");
    assert!(
        text.contains("team.*: authenticated connections may subscribe"),
        "{text}"
    );
    assert!(
        text.contains("asked of the channel check http://127.0.0.1:9/check"),
        "{text}"
    );
    assert!(
        !text.contains("very-secret"),
        "the check URL's query is not shown: {text}"
    );
    assert!(text.contains("/hotsock"), "{text}");
    assert!(text.contains("/socketcluster/"), "{text}");
    assert!(!text.contains("/sgc"), "sgc is not served: {text}");
    assert!(!text.contains("/chat"), "Socket.IO is not served: {text}");
}

#[test]
fn unknown_front_ends_and_replaced_flags_are_clear_errors() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?} must not start");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(&["--frontends", "hotsock,mqtt"]);
    assert!(err.contains("\"mqtt\" is not a front end"), "{err}");
    let err = run(&["--sgc-channels", "room.*"]);
    assert!(err.contains("--open-channels"), "{err}");
}

#[test]
fn a_bad_config_value_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["serve", "--listen", "127.0.0.1:0", "--idle-timeout", "soon"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("idle-timeout"), "{err}");
}

#[test]
fn token_mints_a_verifiable_token() {
    let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args([
            "token",
            "--jwt-secret",
            "s3cret",
            "--uid",
            "alice",
            "--umd",
            r#"{"name":"Alice"}"#,
            "--channel",
            "presence.*",
            "--ttl",
            "1h",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let verifier = rollcall::auth::JwtVerifier::new(&rollcall::auth::AuthConfig {
        jwt_secret: Some("s3cret".into()),
        ..Default::default()
    })
    .unwrap();
    let claims = verifier.verify_hotsock(&token).expect("valid token");
    assert_eq!(claims.uid.as_deref(), Some("alice"));
    assert!(claims.scope.connect);
    assert!(claims.channels.can_subscribe("presence.room"));
    assert!(!claims.channels.can_subscribe("other"));
    let exp = claims.exp;
    let now = rollcall::time::unix_now();
    assert!((now + 3500..=now + 3700).contains(&exp), "exp {exp}");
    // Without a secret it says where to get one.
    let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["token", "--uid", "alice"])
        .env_remove("ROLLCALL_JWT_SECRET")
        .env_remove("ROLLCALL_CONFIG")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--jwt-secret"));
}

#[test]
fn flags_beat_the_environment_which_beats_the_file_which_beats_the_defaults() {
    let dir = std::env::temp_dir().join(format!("rollcall-layers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rollcall.toml");
    std::fs::write(
        &file,
        r#"
        open-channels = ["file-open"]
        [listener]
        listen = "127.0.0.1:1"
        [channels]
        authenticated-channels = ["file-auth"]
        channel-check-url = "http://127.0.0.1:9/file-check"
        [sgc]
        require-token = true
        "#,
    )
    .unwrap();
    let lines = banner(
        Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .args(["serve", "--config"])
            .arg(&file)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--authenticated-channels",
                "flag-auth",
            ])
            .env("ROLLCALL_JWT_SECRET", "s")
            .env("ROLLCALL_OPEN_CHANNELS", "env-open")
            .env("ROLLCALL_AUTHENTICATED_CHANNELS", "env-auth"),
    );
    let text = lines.join("\n");
    assert!(!lines[0].ends_with(":1"), "the flag beats the file: {text}");
    assert!(
        text.contains("env-open: anyone"),
        "env beats the file: {text}"
    );
    assert!(!text.contains("file-open"), "{text}");
    assert!(
        text.contains("flag-auth: authenticated"),
        "the flag beats env: {text}"
    );
    assert!(
        !text.contains("env-auth") && !text.contains("file-auth"),
        "{text}"
    );
    assert!(
        text.contains("http://127.0.0.1:9/file-check"),
        "the file beats the default: {text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_bad_config_file_names_the_file_and_the_key() {
    let dir = std::env::temp_dir().join(format!("rollcall-badfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rollcall.toml");
    let run = |text: &str| {
        std::fs::write(&file, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&file)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(78), "{text}: a configuration error");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run("[sgc]\nack-timeout = \"soon\"\n");
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("sgc.ack-timeout = \"soon\""), "{err}");
    let err = run("[sgc]\nack-timeout = \"0s\"\n");
    assert!(
        err.contains("sgc-ack-timeout must be longer than 0s"),
        "{err}"
    );
    let err = run("max-members = 5\n");
    assert!(err.contains("unknown key `max-members`"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn help_never_shows_the_value_of_an_environment_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["serve", "--help"])
        .env("ROLLCALL_JWT_SECRET", "env-secret-value")
        .env("ROLLCALL_BUS", "redis://:env-password@127.0.0.1:1")
        .output()
        .expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("ROLLCALL_JWT_SECRET"), "{help}");
    assert!(
        help.contains("[default: 60s]"),
        "defaults come from the settings: {help}"
    );
    assert!(!help.contains("env-secret-value"), "{help}");
    assert!(!help.contains("env-password"), "{help}");
}

/// No `--help` shows the value of a secret's environment variable: the
/// API key, the JWT secret, the webhook secret, and URLs that may carry a
/// password (the bus, webhook receivers, OAuth introspection, the channel
/// check, the RPC backend).
#[test]
fn no_help_shows_a_secret_from_the_environment() {
    let secrets = [
        ("ROLLCALL_API_KEY", "s3cr3t-x"),
        ("ROLLCALL_JWT_SECRET", "s3cr3t-y"),
        ("ROLLCALL_WEBHOOK_SECRET", "s3cr3t-w"),
        ("ROLLCALL_BUS", "redis://:s3cr3t-z@127.0.0.1:1"),
        ("ROLLCALL_WEBHOOK_URL", "https://hook:s3cr3t-h@127.0.0.1:1/"),
        (
            "ROLLCALL_OAUTH_INTROSPECTION_URL",
            "https://client:s3cr3t-o@127.0.0.1:1/introspect",
        ),
        (
            "ROLLCALL_CHANNEL_CHECK_URL",
            "https://check:s3cr3t-c@127.0.0.1:1/",
        ),
        ("ROLLCALL_RPC_URL", "https://rpc:s3cr3t-r@127.0.0.1:1/"),
        ("ROLLCALL_CONFIG", "/s3cr3t-path/rollcall.toml"),
    ];
    for args in [
        &["serve", "--help"][..],
        &["help", "serve"],
        &["token", "--help"],
        &["help", "token"],
        &["conformance", "--help"],
        &["--help"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .args(args)
            .envs(secrets)
            .output()
            .expect("run");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {help}");
        assert!(!help.contains("s3cr3t"), "{args:?} shows a secret:\n{help}");
        if args.contains(&"token") {
            // The variable is named, its value is not.
            assert!(help.contains("[env: ROLLCALL_JWT_SECRET]"), "{help}");
        }
    }
}

/// The banner shows the bus without its password.
#[test]
fn the_banner_shows_no_bus_password() {
    let lines = banner(
        Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .args(["serve", "--listen", "127.0.0.1:0", "--jwt-secret", "s"])
            .args(["--api-key", "k", "--bus", "redis://:s3cr3t-z@127.0.0.1:1"]),
    );
    let text = lines.join("\n");
    assert!(
        text.contains("bus redis://:***@127.0.0.1:1"),
        "the banner names the bus: {text}"
    );
    assert!(!text.contains("s3cr3t"), "{text}");
}

/// A supervisor can tell a configuration error (78, do not restart) from
/// an address in use (69) and an unusable data directory (73).
#[test]
fn startup_failures_exit_with_the_sysexits_code_of_their_kind() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .args(["serve", "--jwt-secret", "s", "--api-key", "k"])
            .args(args)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(&["--listen", "127.0.0.1:0", "--max-connections", "0"]);
    assert_eq!(code, Some(78), "{err}");
    let (code, err) = run(&["--listen", "127.0.0.1:0", "--frontends", "mqtt"]);
    assert_eq!(code, Some(78), "{err}");
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = held.local_addr().expect("address").to_string();
    let (code, err) = run(&["--listen", &addr]);
    assert_eq!(code, Some(69), "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(err.contains("--listen"), "the error says what to do: {err}");
    // A data directory that is a file cannot hold the privacy store.
    let file = std::env::temp_dir().join(format!("rollcall-datadir-{}", std::process::id()));
    std::fs::write(&file, "not a directory").expect("write");
    let (code, err) = run(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(73), "{err}");
    std::fs::remove_file(&file).ok();
}

/// Runs `rollcall args` with `env`; (success, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_check_finds_unknown_keys_bad_values_and_inconsistent_settings() {
    let dir = std::env::temp_dir().join(format!("rollcall-config-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let good = file(
        "good.toml",
        "listen = \"127.0.0.1:4100\"\n[cluster]\nbus = \"postgres://rc:pw@127.0.0.1/db\"\n",
    );
    let (ok, stdout, stderr) = run(&["config", "check", &good], &[]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("valid"), "{stdout}");
    for (name, text, says) in [
        ("unknown.toml", "bogus = 1\n", "unknown key `bogus`"),
        (
            "value.toml",
            "max-member-bytes = \"lots\"\n",
            "max-member-bytes",
        ),
        (
            "timing.toml",
            "heartbeat-interval = \"1s\"\nnode-timeout = \"1s\"\n",
            "node-timeout",
        ),
        (
            "sc.toml",
            "[sc]\nping-interval = 5000\nping-timeout = 1000\n",
            "sc",
        ),
        (
            "origins.toml",
            "allowed-origins = [\"#regex:(\"]\n",
            "--allowed-origins",
        ),
    ] {
        let (ok, _, stderr) = run(&["config", "check", &file(name, text)], &[]);
        assert!(!ok, "{name} passed");
        assert!(stderr.contains(says), "{name}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_print_shows_every_setting_with_its_source_and_no_secret() {
    let dir = std::env::temp_dir().join(format!("rollcall-config-print-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("rc.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:4100\"\n[cluster]\nbus = \"redis://:bus-pw-1@127.0.0.1:6379\"\n",
    )
    .expect("write");
    let (ok, stdout, stderr) = run(
        &[
            "config",
            "print",
            "--config",
            &path.display().to_string(),
            "--jwt-secret",
            "jwt-s3cret",
            "--open-channels",
            "a.*,b",
        ],
        &[("ROLLCALL_API_KEY", "api-s3cret")],
    );
    assert!(ok, "{stderr}");
    for line in [
        "listen = \"127.0.0.1:4100\"  # config file",
        "bus = \"redis://:***@127.0.0.1:6379\"  # config file",
        "jwt-secret = \"***\"  # command line",
        "api-key = \"***\"  # env ROLLCALL_API_KEY",
        "open-channels = [\"a.*\", \"b\"]  # command line",
        "max-member-bytes = 100000  # default",
        "# node-id (not set)",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line:?} missing from\n{stdout}"
        );
    }
    for secret in ["jwt-s3cret", "api-s3cret", "bus-pw-1"] {
        assert!(!stdout.contains(secret), "{secret} shown");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
