//! The `kcache` command line: arguments, and [`run`], which executes one command against
//! a node, plus `kcache bench` and the key distributions it draws from ([`workload`]).
//! A crate of its own so the client library, and every service that links it, carries
//! no clap, indicatif or hdrhistogram; a library as well as a binary so tests can drive
//! it in-process with their own stdin and output buffers. `src/main.rs` only parses and
//! exits.
#![forbid(unsafe_code)]

mod args;
pub mod bench;
mod format;
pub mod workload;

use std::io::{self, Read, Write};

use bytes::Bytes;

pub use args::{Cli, Command, Connect, IncrArgs, SetArgs, parse_timeout, parse_ttl};

use kcache_client::{Client, Error, Ttl};

/// The command worked.
pub const EXIT_OK: u8 = 0;
/// The key was not found or a conditional write did not store: an answer, not a failure,
/// but scripts need to tell it apart from success.
pub const EXIT_MISS: u8 = 1;
/// Bad arguments, address or input (clap's own code for usage errors).
pub const EXIT_USAGE: u8 = 2;
/// The node refused the request; retrying it unchanged will not help.
pub const EXIT_REJECTED: u8 = 3;
/// The node could not be reached or did not answer in time; retrying later may help.
pub const EXIT_UNAVAILABLE: u8 = 4;

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  not found, or not stored because a condition did not hold
  2  usage error (bad arguments, address or input)
  3  rejected by the server (the message says why)
  4  unavailable, timed out or could not connect";

/// The exit code that tells a script what kind of failure `error` is.
pub fn exit_code(error: &Error) -> u8 {
    match error {
        Error::InvalidAddress { .. } | Error::Credentials(_) => EXIT_USAGE,
        Error::Rejected { .. } | Error::Failed { .. } | Error::Protocol(_) => EXIT_REJECTED,
        Error::Unavailable { .. } | Error::Timeout(_) => EXIT_UNAVAILABLE,
    }
}

/// Why a command could not finish.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Client(#[from] Error),
    #[error("bench: {0}")]
    Bench(#[from] bench::BenchError),
    #[error("reading the value from stdin: {0}")]
    Stdin(io::Error),
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Client(e) | Failure::Bench(bench::BenchError::Client(e)) => exit_code(e),
            Failure::Bench(bench::BenchError::Usage(_)) => EXIT_USAGE,
            Failure::Bench(_) => EXIT_UNAVAILABLE,
            Failure::Stdin(_) | Failure::Output(_) => EXIT_USAGE,
        }
    }
}

/// Runs one command and returns the process exit code. Answers go to `out`; errors and
/// misses go to `err` as `error: CODE: message` / `(not found)`.
pub async fn run(cli: Cli, stdin: impl Read, out: &mut impl Write, err: &mut impl Write) -> u8 {
    let addr = cli.addr.clone();
    let result = match execute(cli, stdin, out, err).await {
        Ok(code) => out.flush().map(|()| code).map_err(Failure::Output),
        Err(failure) => Err(failure),
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            let code = failure.exit_code();
            // Naming the node saves a round of "which address did it use?".
            let node = if code == EXIT_UNAVAILABLE && !matches!(failure, Failure::Bench(_)) {
                format!(" (node {addr})")
            } else {
                String::new()
            };
            // If stderr itself is broken there is nowhere left to report to.
            let _ = writeln!(err, "error: {failure}{node}");
            code
        }
    }
}

async fn execute(
    cli: Cli,
    stdin: impl Read,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<u8, Failure> {
    let connect = cli.connect()?;
    if let Command::Bench(args) = cli.command {
        bench::run(*args, &cli.addr, &connect, out).await?;
        return Ok(EXIT_OK);
    }
    let client = connect.builder(&cli.addr).connect().await?;
    match cli.command {
        Command::Get { key, verbose } => get(&client, key, verbose, out, err).await,
        Command::Set(args) => set(&client, args, stdin, out).await,
        Command::Del { key, cas } => del(&client, key, cas, out).await,
        Command::Ttl { key, set: None } => ttl(&client, key, out, err).await,
        Command::Ttl { key, set: Some(t) } => touch(&client, key, t, out, err).await,
        Command::Incr(args) => {
            let (delta, ttl) = (args.delta(), args.ttl.unwrap_or_default());
            let (value, _version) = client.incr(args.key, delta, args.initial, ttl).await?;
            writeln!(out, "{value}")?;
            Ok(EXIT_OK)
        }
        Command::Stats => {
            write!(out, "{}", format::stats_table(&client.stats().await?))?;
            Ok(EXIT_OK)
        }
        Command::Topology => {
            write!(out, "{}", format::topology_text(&client.topology().await?))?;
            Ok(EXIT_OK)
        }
        Command::Bench(_) => unreachable!("handled before connecting"),
    }
}

async fn get(
    client: &Client,
    key: String,
    verbose: bool,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<u8, Failure> {
    let Some(value) = client.get(key).await? else {
        writeln!(err, "(not found)")?;
        return Ok(EXIT_MISS);
    };
    out.write_all(&value.value)?;
    out.write_all(b"\n")?;
    if verbose {
        let ttl = value.ttl.map_or_else(|| "none".to_owned(), format::seconds);
        writeln!(out, "version: {}\nttl: {ttl}", value.version)?;
    }
    Ok(EXIT_OK)
}

async fn set(
    client: &Client,
    args: SetArgs,
    mut stdin: impl Read,
    out: &mut impl Write,
) -> Result<u8, Failure> {
    let options = args.options();
    let value = if args.value == "-" {
        let mut buf = Vec::new();
        stdin.read_to_end(&mut buf).map_err(Failure::Stdin)?;
        Bytes::from(buf)
    } else {
        Bytes::from(args.value)
    };
    let outcome = client.set(args.key, value, options).await?;
    if outcome.stored {
        writeln!(out, "OK version={}", outcome.version)?;
        Ok(EXIT_OK)
    } else {
        writeln!(out, "NOT STORED (current version {})", outcome.version)?;
        Ok(EXIT_MISS)
    }
}

async fn del(
    client: &Client,
    key: String,
    cas: Option<u64>,
    out: &mut impl Write,
) -> Result<u8, Failure> {
    if client.delete(key, cas).await? {
        writeln!(out, "deleted")?;
        return Ok(EXIT_OK);
    }
    // With --cas the key may exist under another version, so "not found" would mislead.
    let why = if cas.is_some() {
        "not deleted (absent, or the version differs)"
    } else {
        "not found"
    };
    writeln!(out, "{why}")?;
    Ok(EXIT_MISS)
}

async fn ttl(
    client: &Client,
    key: String,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<u8, Failure> {
    match client.get(key).await? {
        Some(value) => {
            let ttl = value
                .ttl
                .map_or_else(|| "no expiry".to_owned(), format::seconds);
            writeln!(out, "{ttl}")?;
            Ok(EXIT_OK)
        }
        None => {
            writeln!(err, "(not found)")?;
            Ok(EXIT_MISS)
        }
    }
}

async fn touch(
    client: &Client,
    key: String,
    ttl: Ttl,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<u8, Failure> {
    if client.touch(key, ttl).await? {
        writeln!(out, "OK")?;
        Ok(EXIT_OK)
    } else {
        writeln!(err, "(not found)")?;
        Ok(EXIT_MISS)
    }
}

#[cfg(test)]
mod tests;
