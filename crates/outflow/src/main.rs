//! The `outflow` command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use outflow::certs;
use outflow::relay;
use outflow::tail;
use outflow::verify;
use outflow::{estimate, inspect};

/// Change-data-capture relay for MariaDB and MySQL across expensive links.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode binlog files offline: one JSON line per row change.
    Inspect {
        /// Binlog files, read in the order given.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Decode every value but print only counts and throughput.
        #[arg(long)]
        stats: bool,
    },
    /// Stream live row changes from a source server as JSON lines (like `inspect`).
    Tail(Box<tail::TailArgs>),
    /// Generate a CA, a server and a client certificate for the relay link (quick set-ups).
    Certs(certs::CertsArgs),
    /// Run the source side: binlog -> spool -> QUIC to the sink, resuming from saved state.
    Source(Box<relay::RelayArgs>),
    /// Run the far side: QUIC from the source side -> apply to the target, exactly once.
    Sink(Box<relay::RelayArgs>),
    /// Run both sides in one process, joined by a loopback QUIC connection.
    Run(Box<relay::RelayArgs>),
    /// Compare tables between a source and a target server; exit 1 when they differ.
    Verify(verify::VerifyArgs),
    /// Run the wire codec offline over binlog files: bytes on the wire, ratio, cost.
    Estimate(estimate::EstimateArgs),
}

/// The runtime of the long-running commands.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Log lines go to stderr, beside the progress lines (stdout carries `inspect`/`tail`
/// output). `OUTFLOW_LOG` takes tracing's filter syntax; the default shows outflow's own
/// info, warnings and errors and only the dependencies' warnings.
fn init_logging() {
    const DEFAULT: &str = "warn,outflow=info,outflow_codec=info,outflow_replication=info,\
                           outflow_sink=info,outflow_source=info,outflow_spool=info,\
                           outflow_transport=info";
    let filter = tracing_subscriber::EnvFilter::try_from_env("OUTFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn main() -> anyhow::Result<()> {
    init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Estimate(args) => estimate::run(&args),
        Command::Verify(args) => std::process::exit(verify::main(&args)),
        Command::Certs(args) => certs::run(&args),
        Command::Inspect { files, stats } => inspect::run(&files, stats),
        Command::Tail(args) => tail::run(&args),
        Command::Source(args) => runtime()?.block_on(relay::run_source(args.settings()?)),
        Command::Sink(args) => runtime()?.block_on(relay::run_sink(args.settings()?)),
        Command::Run(args) => runtime()?.block_on(relay::run_both(args.settings()?)),
    }
}

#[cfg(test)]
mod tests {
    /// clap checks its own rules (unique ids, valid defaults) only when asked.
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
