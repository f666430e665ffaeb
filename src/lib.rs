//! mwaa-dr: disaster recovery for Apache Airflow and Amazon MWAA.
//!
//! The binary is a thin shell over [`run`]: parse, load `.env`, resolve the [`config::Config`],
//! run the command, map the [`error::Error`] to an exit code.

pub mod airflow;
pub mod aws;
pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod deploy;
pub mod error;
pub mod failover;
pub mod failpoint;
pub mod health;
pub mod legacy;
pub mod model;
pub mod ops;
pub mod output;
pub mod progress;
pub mod store;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, OutputFormat};
use crate::config::{Config, Layers};
use crate::error::{Error, Result, exit};

/// The `.env` file read by default.
pub const DEFAULT_ENV_FILE: &str = ".env";

/// Runs mwaa-dr with `args` (program name first) and returns the process exit code.
pub fn main_with_args(args: Vec<OsString>) -> i32 {
    let format = output_format_hint(&args);
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind;
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = err.print();
                return err.exit_code();
            }
            let message = err.render().to_string();
            output::emit_error(
                format,
                &Error::Usage {
                    message: message.trim_end().trim_start_matches("error: ").to_string(),
                },
            );
            return exit::USAGE;
        }
    };
    let format = cli.global.output;
    match prepare(&cli) {
        Ok(config) => {
            init_logging(&cli, &config);
            match run_blocking(cli, config) {
                Ok(()) => exit::OK,
                Err(err) => {
                    output::emit_error(format, &err);
                    err.exit_code()
                }
            }
        }
        Err(err) => {
            output::emit_error(format, &err);
            err.exit_code()
        }
    }
}

/// Reads the environment and the `.env` file and resolves the configuration.
pub fn prepare(cli: &Cli) -> Result<Config> {
    let mut layers = Layers::from_process_env();
    if !cli.global.no_dotenv {
        let (path, explicit) = match &cli.global.env_file {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(DEFAULT_ENV_FILE), false),
        };
        layers.load_env_file(&path, explicit)?;
    }
    Config::from_cli(cli, layers)
}

fn run_blocking(cli: Cli, config: Config) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::failed("start", "async runtime", e))?;
    runtime.block_on(run_until_interrupted(cli, config))
}

/// How long a run may take, after SIGINT or SIGTERM, to roll back, remove what it wrote
/// halfway and release its locks. A second signal ends it at once.
pub const INTERRUPT_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// Runs the command until it ends. SIGINT or SIGTERM cancels its token: the operation stops
/// at its next safe point, rolls back, removes partial objects and releases its locks, then
/// returns "interrupted". Only if it has not done so within [`INTERRUPT_GRACE`] (or a second
/// signal comes) is it dropped where it stands; its transaction is then rolled back by
/// PostgreSQL and its lock goes stale.
pub async fn run_until_interrupted(cli: Cli, config: Config) -> Result<()> {
    let cancel = CancellationToken::new();
    let work = run(cli, config, cancel.clone());
    tokio::pin!(work);
    tokio::select! {
        result = &mut work => return result,
        () = interrupted() => {}
    }
    tracing::warn!(
        "interrupted: stopping at the next safe point (up to {} s; signal again to stop now)",
        INTERRUPT_GRACE.as_secs()
    );
    cancel.cancel();
    tokio::select! {
        result = tokio::time::timeout(INTERRUPT_GRACE, &mut work) => match result {
            // Finished (or failed) before it saw the signal: its own result stands.
            Ok(Err(e)) if e.kind() != error::ErrorKind::Interrupted => Err(e),
            Ok(Ok(())) => Ok(()),
            _ => Err(Error::Interrupted),
        },
        () = interrupted() => Err(Error::Interrupted),
    }
}

async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Dispatches to the subcommand. `cancel` is cancelled when the run is asked to stop.
pub async fn run(cli: Cli, config: Config, cancel: CancellationToken) -> Result<()> {
    match &cli.command {
        Command::Config => commands::config::run(&config),
        Command::Backup(args) => commands::backup::run(&config, args, &cancel).await,
        Command::Restore(args) => commands::restore::run(&config, args, &cancel).await,
        Command::Cleanup(args) => commands::cleanup::run(&config, args, &cancel).await,
        Command::List => commands::list::run(&config).await,
        Command::Verify(args) => commands::verify::run(&config, args, &cancel).await,
        Command::Prune(args) => commands::prune::run(&config, args, &cancel).await,
        Command::HealthCheck(_) => commands::health_check::run(&config, &cancel).await,
        Command::Failover(args) => commands::failover::run(&config, args, &cancel).await,
        Command::Dags(cli::DagsCommand::Render(args)) => commands::dags::render(&config, args),
        Command::Deploy(args) => commands::deploy::deploy(&config, args).await,
        Command::Undeploy(args) => commands::deploy::undeploy(&config, args).await,
    }
}

/// The log filter: MWAA_DR_LOG when set, else from -v / -q. Colours only on a terminal:
/// cron mail, CI logs and pipes get plain text.
fn init_logging(cli: &Cli, config: &Config) {
    use std::io::IsTerminal;
    // sqlx warns about every statement slower than a second, and a backup's COPY of a large
    // table always is; its own errors still show. -vvv or MWAA_DR_LOG show everything.
    let default = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn,sqlx=error",
        (false, 1) => "info,sqlx=error",
        (false, 2) => "debug,sqlx=error",
        (false, _) => "trace",
    };
    let filter = config
        .log_filter
        .as_deref()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::LogWriter::stderr())
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// Whether errors should be JSON, decided before the arguments are known to parse.
fn output_format_hint(args: &[OsString]) -> OutputFormat {
    let args: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
    let json = args
        .windows(2)
        .any(|w| w[0] == "--output" && w[1] == "json")
        || args.contains(&"--output=json")
        || std::env::var("MWAA_DR_OUTPUT").is_ok_and(|v| v == "json");
    if json {
        OutputFormat::Json
    } else {
        OutputFormat::Text
    }
}

#[cfg(test)]
mod layering {
    //! The library is layered: a module names only the modules of the layers below its own
    //! (STYLE.md "Layers"). This reads every `crate::x` path in the sources, so a new upward
    //! import (and with it a cycle) fails here, not in review.

    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Bottom first. A module may use those of the layers before its own.
    const LAYERS: &[&[&str]] = &[
        &["model", "progress"],
        &["error"],
        &["failpoint"],
        &["airflow"],
        // The S3 store is built on the shared AWS SDK configuration, and the store keeps the
        // MWAA environment definitions, so the AWS adapters sit below the store.
        &["legacy", "aws"],
        &["store"],
        &["db"],
        &["health"],
        &["ops"],
        &["failover"],
        &["deploy"],
        &["cli"],
        &["output", "config"],
        &["commands"],
    ];

    /// Upward edges still to be removed, each with its reason; nothing else may be added.
    const PENDING: &[(&str, &str)] = &[];

    fn rank(module: &str) -> Option<usize> {
        LAYERS.iter().position(|layer| layer.contains(&module))
    }

    fn sources(path: &Path, out: &mut String) {
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .expect("read src")
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for entry in entries {
                sources(&entry, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(path).expect("read source"));
        }
    }

    /// The top-level modules each top-level module names as `crate::x`.
    fn imports() -> BTreeMap<String, BTreeSet<String>> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut graph = BTreeMap::new();
        for entry in std::fs::read_dir(&src).expect("read src").flatten() {
            let path = entry.path();
            let Some(name) = path.file_stem().and_then(|n| n.to_str()) else {
                continue;
            };
            if matches!(name, "lib" | "main") {
                continue;
            }
            let mut text = String::new();
            sources(&path, &mut text);
            let used: BTreeSet<String> = text
                .match_indices("crate::")
                .map(|(i, m)| {
                    text[i + m.len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect::<String>()
                })
                .filter(|used| !used.is_empty() && used != name)
                .collect();
            graph.insert(name.to_string(), used);
        }
        graph
    }

    /// The imports that point to the same or a higher layer, PENDING aside.
    fn upward(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
        let mut upward = Vec::new();
        for (module, used) in graph {
            let Some(own) = rank(module) else {
                upward.push(format!("src/{module} is in no layer"));
                continue;
            };
            for dep in used {
                let Some(theirs) = rank(dep) else { continue };
                if theirs >= own && !PENDING.contains(&(module.as_str(), dep.as_str())) {
                    upward.push(format!("{module} -> {dep}"));
                }
            }
        }
        upward
    }

    #[test]
    fn modules_import_only_lower_layers() {
        let graph = imports();
        assert!(graph.contains_key("ops") && graph.contains_key("store"));
        let upward = upward(&graph);
        assert!(upward.is_empty(), "imports against the layers: {upward:?}");
        for (module, dep) in PENDING {
            assert!(
                graph.get(*module).is_some_and(|u| u.contains(*dep)),
                "{module} no longer uses {dep}: remove it from PENDING"
            );
        }
    }

    #[test]
    fn the_layer_check_refuses_the_cycles_it_replaced() {
        let edge = |from: &str, to: &str| (from.to_string(), BTreeSet::from([to.to_string()]));
        for (from, to) in [
            ("store", "config"),
            ("airflow", "config"),
            ("store", "db"),
            ("config", "commands"),
        ] {
            let graph = BTreeMap::from([edge(from, to)]);
            assert_eq!(upward(&graph), [format!("{from} -> {to}")]);
        }
        let graph = BTreeMap::from([edge("db", "store")]);
        assert!(upward(&graph).is_empty());
    }
}
