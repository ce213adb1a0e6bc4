use std::time::{Duration, Instant};

use clap::Parser;

use tonic::Status;

use kcache_client::INITIAL_BACKOFF;

use super::*;
use kcache_client::{Condition, SetOptions};

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("kcache").chain(args.iter().copied()))
}

fn incr_delta(args: &[&str]) -> i64 {
    match parse(args).expect("valid incr").command {
        Command::Incr(incr) => incr.delta(),
        other => panic!("parsed as {other:?}"),
    }
}

fn set_options(args: &[&str]) -> SetOptions {
    match parse(args).expect("valid set").command {
        Command::Set(set) => set.options(),
        other => panic!("parsed as {other:?}"),
    }
}

/// Runs a command with empty stdin and returns (exit code, stdout, stderr).
async fn run_args(args: &[&str]) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run(
        parse(args).expect("valid args"),
        io::empty(),
        &mut out,
        &mut err,
    )
    .await;
    let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8 output");
    (code, text(out), text(err))
}

#[test]
fn ttl_accepts_durations_and_never() {
    assert_eq!(parse_ttl("never"), Ok(Ttl::Never));
    assert_eq!(parse_ttl("1m 30s"), Ok(Ttl::After(Duration::from_secs(90))));
    assert_eq!(
        parse_ttl("250ms"),
        Ok(Ttl::After(Duration::from_millis(250)))
    );
}

#[test]
fn zero_ttl_is_refused_with_a_pointer_to_never() {
    let message = parse_ttl("0s").expect_err("zero TTL");
    assert!(message.contains("never"), "{message}");
    assert!(parse_ttl("soon").is_err());
}

#[test]
fn zero_timeout_is_a_usage_error() {
    let err = parse(&["--timeout", "0s", "stats"]).expect_err("zero timeout");
    assert_eq!(err.exit_code(), i32::from(EXIT_USAGE));
}

#[test]
fn negative_deltas_work_positionally_after_dashes_and_as_a_flag() {
    assert_eq!(incr_delta(&["incr", "k", "-5"]), -5);
    assert_eq!(incr_delta(&["incr", "k", "--", "-5"]), -5);
    assert_eq!(incr_delta(&["incr", "k", "--by", "-5"]), -5);
    assert_eq!(incr_delta(&["incr", "k", "--initial", "-10", "3"]), 3);
}

#[test]
fn incr_defaults_to_one_and_refuses_two_deltas() {
    assert_eq!(incr_delta(&["incr", "k"]), 1);
    assert!(parse(&["incr", "k", "2", "--by", "3"]).is_err());
}

#[test]
fn set_flags_map_to_conditions_and_ttl() {
    assert_eq!(set_options(&["set", "k", "v"]), SetOptions::default());
    let nx = set_options(&["set", "k", "v", "--nx", "--ttl", "never"]);
    assert_eq!(nx.condition, Condition::IfAbsent);
    assert_eq!(nx.ttl, Ttl::Never);
    assert_eq!(
        set_options(&["set", "k", "v", "--xx"]).condition,
        Condition::IfPresent
    );
    assert_eq!(
        set_options(&["set", "k", "v", "--cas", "7"]).condition,
        Condition::IfVersion(7)
    );
}

#[test]
fn set_conditions_are_mutually_exclusive() {
    for flags in [["--nx", "--xx"], ["--nx", "--cas=1"], ["--xx", "--cas=1"]] {
        let args = ["set", "k", "v", flags[0], flags[1]];
        let err = parse(&args).expect_err("conflicting conditions");
        assert_eq!(err.exit_code(), i32::from(EXIT_USAGE), "{flags:?}");
    }
}

#[test]
fn set_accepts_a_negative_number_as_the_value() {
    match parse(&["set", "k", "-5"]).expect("valid set").command {
        Command::Set(set) => assert_eq!(set.value, "-5"),
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn global_flags_may_follow_the_subcommand() {
    let cli = parse(&["get", "k", "--addr", "node:7100", "--timeout", "500ms"]).expect("valid");
    assert_eq!(cli.addr, "node:7100");
    assert_eq!(cli.timeout, Duration::from_millis(500));
}

#[test]
fn server_codes_map_to_documented_exit_codes() {
    let cases = [
        (Status::invalid_argument("key too long"), EXIT_REJECTED),
        (Status::resource_exhausted("too big"), EXIT_REJECTED),
        (Status::failed_precondition("not a number"), EXIT_REJECTED),
        (Status::internal("bug"), EXIT_REJECTED),
        (Status::unavailable("draining"), EXIT_UNAVAILABLE),
        (Status::deadline_exceeded("slow"), EXIT_UNAVAILABLE),
    ];
    for (status, expected) in cases {
        let code = status.code();
        let error = Error::from_status(status, Duration::from_secs(2));
        assert_eq!(exit_code(&error), expected, "{code:?}");
    }
}

#[test]
fn help_documents_every_exit_code() {
    for code in [
        EXIT_OK,
        EXIT_MISS,
        EXIT_USAGE,
        EXIT_REJECTED,
        EXIT_UNAVAILABLE,
    ] {
        assert!(AFTER_HELP.contains(&format!("\n  {code}  ")), "{code}");
    }
}

#[tokio::test]
async fn a_malformed_address_is_a_usage_error() {
    let (code, _, err) = run_args(&["--addr", "https://node:7000", "stats"]).await;
    assert_eq!(code, EXIT_USAGE);
    assert!(err.starts_with("error: invalid address"), "{err}");
}

#[tokio::test]
async fn an_unreachable_node_exits_unavailable_after_retrying() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    let started = Instant::now();
    let (code, out, err) = run_args(&["--addr", &addr, "get", "k"]).await;
    assert_eq!(code, EXIT_UNAVAILABLE);
    assert!(out.is_empty());
    assert!(err.starts_with("error: UNAVAILABLE: "), "{err}");
    // Two retries back off 25 ms then 50 ms.
    assert!(started.elapsed() >= INITIAL_BACKOFF * 3, "did not retry");
}

#[tokio::test]
async fn a_node_that_never_answers_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    // Accept connections and hold them open without ever speaking HTTP/2.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    let (code, _, err) = run_args(&["--addr", &addr, "--timeout", "200ms", "stats"]).await;
    silent.abort();
    assert_eq!(code, EXIT_UNAVAILABLE, "{err}");
    assert!(started.elapsed() < Duration::from_secs(2), "{err}");
}

#[test]
fn a_client_certificate_needs_its_key_and_a_ca() {
    let err = parse(&[
        "--tls-cert-file",
        "c.pem",
        "--tls-ca-file",
        "ca.pem",
        "stats",
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("--tls-key-file"), "{err}");
    let err = parse(&[
        "--tls-cert-file",
        "c.pem",
        "--tls-key-file",
        "k.pem",
        "stats",
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("--tls-ca-file"), "{err}");
    let err = parse(&["--token-file", "t", "--token", "x", "stats"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be used with"), "{err}");
}

#[tokio::test]
async fn an_unreadable_credential_file_is_a_usage_error_naming_it() {
    let (code, _, err) = run_args(&["--tls-ca-file", "/nonexistent/ca.crt", "get", "k"]).await;
    assert_eq!(code, EXIT_USAGE);
    assert!(
        err.starts_with("error: credentials: /nonexistent/ca.crt: "),
        "{err}"
    );
    let (code, _, err) = run_args(&["--token-file", "/nonexistent/token", "get", "k"]).await;
    assert_eq!(code, EXIT_USAGE);
    assert!(err.contains("/nonexistent/token"), "{err}");
    let (code, _, err) = run_args(&["--token", "two words", "get", "k"]).await;
    assert_eq!(code, EXIT_USAGE);
    assert!(err.contains("--token / KCACHE_TOKEN"), "{err}");
}
