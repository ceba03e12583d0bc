//! The `rollcall` command: `serve`, `token` and `conformance`.

use std::path::PathBuf;
use std::process::ExitCode;

use std::ffi::OsString;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use rollcall::config::{Config, FileSettings, LogFormat};
use rollcall::server::StartError;

#[derive(Parser)]
#[command(
    name = "rollcall",
    version,
    about = "A presence server with pluggable wire-protocol front ends"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default when no command is given).
    Serve(Box<ServeArgs>),
    /// Print a development token signed with the configured secret.
    Token(TokenArgs),
    /// Run a scripted conformance suite against a server.
    Conformance(ConformanceArgs),
    /// Check a config file, or print the effective configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a TOML config file: every key known, every value valid, the
    /// settings consistent (as `serve` would check them, without starting).
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Print every setting `serve` would use with these flags (the same as
    /// serve's), the environment and --config, with where each value came
    /// from; secrets masked.
    #[command(disable_help_flag = false)]
    Print {
        /// `serve`'s flags, e.g. --config rollcall.toml --listen 0.0.0.0:4000.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        flags: Vec<OsString>,
    },
}

/// Flags of `serve`: the config file, and every setting (declared in
/// `rollcall::config` and the front ends). Each flag also reads
/// `ROLLCALL_<NAME>` and overrides the TOML file given with --config.
#[derive(Args, Default)]
struct ServeArgs {
    /// TOML config file (keys as the long flags, e.g. `max-member-bytes = 100000`, at the top
    /// level or in their section, e.g. `[sgc]` `require-token = true`).
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Config,
}

#[derive(Args)]
struct TokenArgs {
    /// User id (`uid`; also `sub` and `username`).
    #[arg(long)]
    uid: Option<String>,
    /// User metadata, JSON (`umd`).
    #[arg(long)]
    umd: Option<String>,
    /// Channel pattern to allow subscribing to (repeatable), e.g. 'presence.*'.
    #[arg(long = "channel")]
    channels: Vec<String>,
    /// Also allow sending client messages of any event on those channels.
    #[arg(long)]
    messages: bool,
    /// Lifetime, e.g. 90s, 15m, 1h, 2d.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Extra claims as a JSON object, merged last.
    #[arg(long)]
    claims: Option<String>,
    /// Secret to sign with (or ROLLCALL_JWT_SECRET, or jwt-secret in --config).
    #[arg(long, env = "ROLLCALL_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// TOML config file to read jwt-secret from.
    #[arg(long, env = "ROLLCALL_CONFIG", hide_env_values = true)]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct ConformanceArgs {
    /// Suite directory or file, e.g. conformance/hotsock.
    #[arg(long)]
    suite: PathBuf,
    /// Server base URL, e.g. ws://127.0.0.1:4000.
    #[arg(long)]
    url: String,
    /// The server's JWT secret, to mint the suite's tokens.
    #[arg(long, env = "ROLLCALL_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
    /// The server's HTTP API key, for HTTP steps.
    #[arg(long, env = "ROLLCALL_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Only run cases whose name contains this text.
    #[arg(long)]
    filter: Option<String>,
}

/// The command line, with `serve`'s environment variables and, when a
/// file is given, its values as `serve`'s defaults.
fn cli_command(file: Option<&FileSettings>) -> clap::Command {
    Cli::command().mut_subcommand("serve", |serve| {
        let serve = rollcall::config::with_env_vars(serve);
        match file {
            Some(file) => file.apply(serve),
            None => serve,
        }
    })
}

/// Parses `argv`: flags over the environment over the `--config` file
/// over the defaults. No command means `serve`.
fn parse_cli(argv: Vec<OsString>) -> Result<Cli, StartError> {
    let matches = cli_command(None).get_matches_from(&argv);
    let Some(("serve", serve)) = matches.subcommand() else {
        if matches.subcommand().is_none() {
            return parse_cli(vec![OsString::from("rollcall"), OsString::from("serve")]);
        }
        return Cli::from_arg_matches(&matches).map_err(|e| StartError::Settings(e.to_string()));
    };
    let file = match serve.get_one::<PathBuf>("config") {
        Some(path) => FileSettings::read(path).map_err(|e| StartError::Settings(e.to_string()))?,
        None => FileSettings::default(),
    };
    let matches = cli_command(Some(&file)).get_matches_from(&argv);
    let mut cli =
        Cli::from_arg_matches(&matches).map_err(|e| StartError::Settings(e.to_string()))?;
    if let Some(Command::Serve(args)) = &mut cli.command {
        args.settings.channels.channel_rules = file.channel_rules;
        args.settings.channels.forward_rules = file.forward_rules;
    }
    Ok(cli)
}

/// `rollcall config check FILE`.
fn config_check(file: &std::path::Path) -> Result<bool, String> {
    let config = Config::from_file(file).map_err(|e| e.to_string())?;
    let resolved = rollcall::server::resolve(config);
    rollcall::server::check(&resolved.config)
        .map_err(|e| format!("config file {}: {e}", file.display()))?;
    println!("{}: valid", file.display());
    Ok(true)
}

/// `rollcall config print [serve's flags]`.
fn config_print(flags: Vec<OsString>) -> Result<bool, StartError> {
    let argv: Vec<OsString> = [OsString::from("rollcall"), OsString::from("serve")]
        .into_iter()
        .chain(flags)
        .collect();
    // Parsed as serve would parse them (the file first, for its path).
    let cli = parse_cli(argv.clone())?;
    let Some(Command::Serve(args)) = &cli.command else {
        return Err(StartError::Settings(
            "config print takes serve's flags".into(),
        ));
    };
    let file = match &args.config {
        Some(path) => FileSettings::read(path).map_err(|e| StartError::Settings(e.to_string()))?,
        None => FileSettings::default(),
    };
    let command = cli_command(Some(&file));
    let matches = command
        .clone()
        .try_get_matches_from(&argv)
        .map_err(|e| StartError::Settings(e.to_string()))?;
    let (Some(serve), Some(("serve", serve_matches))) =
        (command.find_subcommand("serve"), matches.subcommand())
    else {
        return Err(StartError::Settings(
            "config print takes serve's flags".into(),
        ));
    };
    print!(
        "{}",
        rollcall::config::report::effective(serve, serve_matches, &file)
    );
    Ok(true)
}

/// Prints where every endpoint is. Written in one go, ignoring errors: a
/// closed stdout must not take the server down.
fn banner(
    resolved: &rollcall::server::Resolved,
    addr: std::net::SocketAddr,
    policy: &rollcall::policy::ChannelPolicy,
) {
    use std::fmt::Write as _;
    use std::io::Write as _;
    let cfg = &resolved.config;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rollcall {} listening on {addr}",
        env!("CARGO_PKG_VERSION")
    );
    for front_end in rollcall::frontends::enabled(cfg).unwrap_or_default() {
        let _ = writeln!(out, "  {}", (front_end.endpoint)(addr));
    }
    let _ = writeln!(
        out,
        "  HTTP API    http://{addr}/api/  (Authorization: Bearer <api key>)"
    );
    let _ = writeln!(
        out,
        "  Health      http://{addr}/healthz  http://{addr}/readyz"
    );
    let _ = writeln!(
        out,
        "  Cluster     bus {} as node {}",
        rollcall::cluster::BusSpec::describe(&cfg.cluster.bus),
        cfg.cluster.node_id.as_deref().unwrap_or("?")
    );
    let _ = writeln!(out, "  OpenAPI     http://{addr}/api/openapi.json");
    // The policy the server runs with, not a second one built for show.
    for (i, line) in policy.describe().iter().enumerate() {
        let label = if i == 0 { "Channels" } else { "" };
        let _ = writeln!(out, "  {label:<11} {line}");
    }
    let _ = writeln!(
        out,
        "  Metrics     http://{addr}/metrics  dashboard http://{addr}/dashboard"
    );
    if resolved.generated_api_key {
        let _ = writeln!(
            out,
            "  API key     {} (generated; set --api-key to choose one)",
            cfg.auth.api_key.as_deref().unwrap_or("")
        );
    }
    if let Some(secret) = &cfg.auth.jwt_secret {
        if resolved.generated_secret {
            let _ = writeln!(
                out,
                "  JWT secret  {secret} (generated; set --jwt-secret to choose one)"
            );
        }
        let shown = if resolved.generated_secret {
            secret.as_str()
        } else {
            "$ROLLCALL_JWT_SECRET"
        };
        let _ = writeln!(out, "Mint a token:");
        let _ = writeln!(
            out,
            "  rollcall token --jwt-secret {shown} --uid alice --umd '{{\"name\":\"Alice\"}}' --channel 'presence.*' --messages"
        );
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

async fn serve(args: ServeArgs) -> Result<(), StartError> {
    let resolved = rollcall::server::resolve(args.settings);
    let server = rollcall::server::start(&resolved.config).await?;
    banner(&resolved, server.local_addr(), server.presence().policy());
    reload_keys_on_sighup(server.app_handle());
    wait_for_signal().await;
    tracing::info!("shutting down (a second SIGTERM or Ctrl-C skips the drain)");
    let drain = resolved.config.drain();
    // A second signal during the drain stops at once; the drain future is
    // dropped and the server stops as fast as it can.
    let app = server.app_handle();
    tokio::select! {
        () = server.drain_and_shutdown(drain) => {}
        () = wait_for_signal() => {
            tracing::info!("second signal: closing every connection now");
            rollcall::server::shutdown_now(&app).await;
        }
    }
    Ok(())
}

/// SIGHUP reads the JWT key files again (key rotation without a restart).
fn reload_keys_on_sighup(app: rollcall::app::App) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            match app.verifier.reload() {
                Ok(keys) => tracing::info!(%keys, "SIGHUP: reloaded the JWT keys"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: could not reload the JWT keys; the previous keys stay in use")
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = app;
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn token(args: TokenArgs) -> Result<(), String> {
    let secret = match (args.jwt_secret, &args.config) {
        (Some(s), _) => s,
        (None, Some(path)) => Config::from_file(path)
            .map_err(|e| e.to_string())?
            .auth
            .jwt_secret
            .ok_or_else(|| format!("{} has no jwt-secret", path.display()))?,
        (None, None) => {
            return Err("no secret to sign with: pass --jwt-secret (the one `rollcall serve` printed or was started with), set ROLLCALL_JWT_SECRET, or --config".into());
        }
    };
    let umd = args
        .umd
        .map(|s| serde_json::from_str(&s).map_err(|e| format!("--umd is not valid JSON: {e}")))
        .transpose()?;
    let extra_claims = match args.claims {
        Some(s) => match serde_json::from_str(&s) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => return Err("--claims must be a JSON object".into()),
            Err(e) => return Err(format!("--claims is not valid JSON: {e}")),
        },
        None => Default::default(),
    };
    let request = rollcall::auth::TokenRequest {
        uid: args.uid,
        umd,
        channels: args.channels,
        ttl: rollcall::auth::parse_duration(&args.ttl).map_err(|e| format!("--ttl: {e}"))?,
        allow_messages: args.messages,
        extra_claims,
    };
    let claims = rollcall::auth::dev_token_claims(&request);
    let token = rollcall::auth::mint_hs256(&secret, &claims).map_err(|e| e.to_string())?;
    println!("{token}");
    Ok(())
}

async fn conformance(args: ConformanceArgs) -> Result<bool, String> {
    let summary = rollcall::conformance::run(&rollcall::conformance::RunOptions {
        suite: args.suite,
        url: args.url,
        jwt_secret: args.jwt_secret,
        api_key: args.api_key,
        filter: args.filter,
    })
    .await?;
    Ok(summary.failed == 0)
}

/// Sets up the log on stderr: RUST_LOG's filter (default `info`), as text
/// (coloured only when stderr is a terminal and NO_COLOR is not set) or as
/// one JSON object a line.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_ansi(false).init(),
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(colour).init()
        }
    }
}

fn main() -> ExitCode {
    // The command line first, so that the log is set up as it says; until
    // then, errors go to stderr as plain text.
    let cli = match parse_cli(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let log_format = match &cli.command {
        Some(Command::Serve(args)) => args.settings.log.log_format,
        _ => LogFormat::Text,
    };
    init_logging(log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command = cli
        .command
        .unwrap_or_else(|| Command::Serve(Box::default()));
    // Exit status: 0 done, 1 failed (a conformance case, a token), or the
    // sysexits.h code of the kind of startup failure (StartError::exit_code).
    let result = match command {
        Command::Serve(args) => runtime
            .block_on(serve(*args))
            .map(|_| true)
            .map_err(|e| (e.to_string(), e.exit_code())),
        Command::Token(args) => token(args).map(|_| true).map_err(|e| (e, 1)),
        Command::Conformance(args) => runtime.block_on(conformance(args)).map_err(|e| (e, 1)),
        Command::Config(ConfigCommand::Check { file }) => config_check(&file).map_err(|e| (e, 1)),
        Command::Config(ConfigCommand::Print { flags }) => {
            config_print(flags).map_err(|e| (e.to_string(), e.exit_code()))
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err((message, code)) => {
            // A JSON log stays all JSON, the reason the server stopped included.
            match log_format {
                LogFormat::Json => tracing::error!("{message}"),
                LogFormat::Text => eprintln!("error: {message}"),
            }
            ExitCode::from(code)
        }
    }
}
