//! `kcache bench`: a closed-loop load generator for kcache, Redis and memcached with one
//! worker model. Each of `--connections` connections is one task that sends a batch of
//! `--depth` operations, waits for every reply, records the batch's round trip and
//! sends the next. What a batch is depends on the target: `depth` concurrent unary
//! calls on the connection's HTTP/2 channel (kcache), one MultiGet/MultiSet (kcache-multi),
//! `depth` commands on the Pipeline stream (kcache-pipeline), or `depth` pipelined
//! commands (redis, memcached). With `--rate` connections are paced out of phase with
//! sub-millisecond precision; a batch that is late because the previous one was still
//! waiting on the server counts its latency from when it was due, so a stalled server
//! is not hidden (no coordinated omission).

mod target;
mod wire;

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::workload::{SplitMix64, Zipf};
use target::Conn;

/// Largest latency the histograms track (60 s in µs); anything slower is clamped.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Tokio's timer has millisecond granularity: the pacer sleeps until this long before
/// the next batch is due, then yields until it is, so batches go out when they are due
/// and not in bursts on each millisecond tick.
const TIMER_GRANULARITY: Duration = Duration::from_millis(1);

/// Percentiles reported in the JSON for the latency plot.
const PERCENTILES: [f64; 9] = [50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99, 100.0];

/// What `kcache bench` drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// kcache, one unary Get/Set per operation.
    Kcache,
    /// kcache, one MultiGet/MultiSet per batch.
    KcacheMulti,
    /// kcache, the Pipeline stream.
    KcachePipeline,
    /// Redis over RESP.
    Redis,
    /// memcached over its text protocol.
    Memcached,
}

/// The operations a run issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Reads only.
    Get,
    /// Writes only.
    Set,
    /// Reads and writes, `--read-ratio` of them reads.
    Mix,
    /// Writes every key `0..keys` once, split over the connections, then stops.
    Load,
    /// Reads; every miss is followed by a write of that key (a cache in front of a
    /// database). Reports the hit ratio.
    CacheAside,
}

/// Arguments of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to drive.
    #[arg(long, value_enum, default_value = "kcache")]
    pub target: Target,
    /// Server addresses, comma separated; connection i uses the (i mod n)th. Default:
    /// --addr (kcache), 127.0.0.1:6379 (redis), 127.0.0.1:11211 (memcached).
    #[arg(long, value_delimiter = ',')]
    pub servers: Vec<String>,
    /// Connections, each with one batch in flight.
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// Operations per batch (pipeline depth, MultiGet size, concurrent unary calls).
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// What to do.
    #[arg(long, value_enum, default_value = "get")]
    pub workload: Workload,
    /// Fraction of reads with `--workload mix`.
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// Distinct keys (16 bytes each: `key:` and 12 digits).
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Key popularity: `uniform`, or `zipf:S` (e.g. zipf:0.99).
    #[arg(long, default_value = "uniform", value_parser = parse_dist)]
    pub dist: Dist,
    /// Bytes per written value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Stop after this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Stop after this many operations in all.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Pace to this many operations per second in all (default: as fast as replies come).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seed of the key choice; the same seed gives every target the same keys.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A name for this run in the JSON.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Print one JSON object instead of the text summary.
    #[arg(long)]
    pub json: bool,
}

/// Key popularity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dist {
    Uniform,
    Zipf(f64),
}

fn parse_dist(s: &str) -> Result<Dist, String> {
    if s == "uniform" {
        return Ok(Dist::Uniform);
    }
    match s.strip_prefix("zipf:").map(str::parse::<f64>) {
        Some(Ok(exponent)) if exponent > 0.0 => Ok(Dist::Zipf(exponent)),
        _ => Err("expected uniform or zipf:S with S > 0, e.g. zipf:0.99".into()),
    }
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Usage(String),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error(transparent)]
    Client(#[from] kcache_client::Error),
}

impl BenchError {
    fn io(addr: &str) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
        move |source| BenchError::Connect {
            addr: addr.to_owned(),
            source,
        }
    }
}

/// One operation of a batch.
#[derive(Debug, Clone)]
pub(crate) struct Op {
    pub set: bool,
    pub key: Bytes,
}

/// The key of rank `rank`: 16 bytes, as the memory figure asks.
fn key(rank: u64) -> Bytes {
    Bytes::from(format!("key:{rank:012}"))
}

/// What one worker measured.
struct Tally {
    latency: Histogram<u64>,
    ops: u64,
    gets: u64,
    hits: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Runs the benchmark and writes its summary to `out`.
pub async fn run(
    args: BenchArgs,
    default_addr: &str,
    connect: &super::Connect,
    out: &mut impl Write,
) -> Result<(), BenchError> {
    if args.connections == 0 || args.depth == 0 {
        return Err(BenchError::Usage(
            "--connections and --depth must be at least 1".into(),
        ));
    }
    let servers = if args.servers.is_empty() {
        vec![match args.target {
            Target::Redis => "127.0.0.1:6379".to_owned(),
            Target::Memcached => "127.0.0.1:11211".to_owned(),
            _ => default_addr.to_owned(),
        }]
    } else {
        args.servers.clone()
    };
    // Between one connection's batches when paced.
    let interval = match args.rate {
        None => None,
        Some(rate) if rate.is_finite() && rate > 0.0 => {
            let every = args.connections as f64 * args.depth as f64 / rate;
            if every < 1e-6 {
                return Err(BenchError::Usage(format!(
                    "--rate {rate} asks each connection for more than a batch per microsecond: \
                     use more --connections or a lower rate"
                )));
            }
            Some(Duration::from_secs_f64(every))
        }
        Some(rate) => {
            return Err(BenchError::Usage(format!(
                "--rate must be a positive number of operations per second, not {rate}"
            )));
        }
    };
    let mut conns = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let addr = &servers[i % servers.len()];
        conns.push(Conn::connect(args.target, addr, connect).await?);
    }
    let args = Arc::new(args);
    let zipf = match args.dist {
        Dist::Zipf(s) => Some(Zipf::new(args.keys.max(1) as usize, s, args.seed)),
        Dist::Uniform => None,
    };
    let progress = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let mut tasks = Vec::with_capacity(conns.len());
    // With --rate, one pacer tells every connection when its next batch is due.
    let mut paces = Vec::with_capacity(conns.len());
    let pacer = interval.map(|every| {
        let mut wakes = Vec::with_capacity(conns.len());
        let pacer = Pacer::new(started, every, conns.len());
        for i in 0..conns.len() {
            let wake = Arc::new(tokio::sync::Notify::new());
            wakes.push(wake.clone());
            paces.push(Pace {
                wake,
                every,
                next: pacer.first_due(i),
            });
        }
        tokio::spawn(pace(pacer, wakes))
    });
    let mut paces = paces.into_iter();
    for (i, conn) in conns.into_iter().enumerate() {
        let seed = args.seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
        let keys = KeyChooser {
            zipf: zipf.as_ref().map(|z| z.with_seed(seed)),
            rng: SplitMix64(seed ^ 0x5EED),
            next_load: i as u64,
        };
        let worker = Worker {
            args: args.clone(),
            keys,
            progress: progress.clone(),
            stop: stop.clone(),
            started,
            pace: paces.next(),
        };
        tasks.push(tokio::spawn(worker.run(conn)));
    }
    let bar = progress_bar(&args);
    let deadline = started + args.duration;
    while !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = Instant::now();
        let counted = args.workload == Workload::Load || args.requests.is_some();
        bar.set_position(if counted {
            progress.load(Ordering::Relaxed)
        } else {
            now.saturating_duration_since(started).as_millis() as u64
        });
        if now >= deadline {
            stop.store(true, Ordering::Relaxed);
        }
    }
    let elapsed = started.elapsed();
    if let Some(pacer) = pacer {
        pacer.abort();
    }
    bar.finish_and_clear();
    let mut total = Tally::new();
    for task in tasks {
        let tally = task
            .await
            .map_err(|e| BenchError::Protocol(format!("a worker panicked: {e}")))?;
        total.merge(tally);
    }
    let cpu = cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let mut report = report(&args, &servers, &total, elapsed);
    report["client_cpu_s"] = cpu.into();
    if args.json {
        writeln!(out, "{report}")?;
    } else {
        write_text(out, &report)?;
    }
    if total.ops == 0 {
        let why = total
            .first_error
            .unwrap_or_else(|| "no operation finished".into());
        return Err(BenchError::Protocol(why));
    }
    Ok(())
}

/// CPU seconds this process has used (user + system), from /proc on Linux: with the
/// ops done, the load generator's own cost per operation. `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and
    // 13th of them, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / 100.0)
}

fn progress_bar(args: &BenchArgs) -> ProgressBar {
    let (len, unit) = match (args.workload, args.requests) {
        (Workload::Load, _) => (args.keys, "ops"),
        (_, Some(n)) => (n, "ops"),
        _ => (args.duration.as_millis() as u64, "ms"),
    };
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    let template = format!(
        "{{spinner}} {:?} [{{bar:40}}] {{pos}}/{{len}} {unit} {{elapsed}}",
        args.target
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

struct KeyChooser {
    zipf: Option<Zipf>,
    rng: SplitMix64,
    next_load: u64,
}

impl KeyChooser {
    fn rank(&mut self, keys: u64) -> u64 {
        match &mut self.zipf {
            Some(zipf) => zipf.next_rank(),
            None => self.rng.next_u64() % keys.max(1),
        }
    }
}

struct Worker {
    args: Arc<BenchArgs>,
    keys: KeyChooser,
    progress: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    started: Instant,
    /// When paced: this connection's schedule.
    pace: Option<Pace>,
}

/// A paced connection's schedule, the same as the pacer's for it.
struct Pace {
    /// Notified by the pacer when a batch of this connection is due (one stored
    /// permit at most, however many dues pass while the connection is busy).
    wake: Arc<tokio::sync::Notify>,
    every: Duration,
    /// When the next batch is due.
    next: Instant,
}

/// When each paced connection's next batch is due. Connections start out of phase,
/// spread evenly over one interval: in step, every connection would fire in the same
/// instant and each batch would queue behind all the others, which measures the
/// generator, not the server.
#[derive(Debug)]
struct Pacer {
    /// (due, connection), earliest first.
    schedule: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, usize)>>,
    /// Between one connection's batches.
    every: Duration,
}

impl Pacer {
    fn new(start: Instant, every: Duration, connections: usize) -> Pacer {
        let schedule = (0..connections)
            .map(|i| {
                let offset = every * i as u32 / connections as u32;
                std::cmp::Reverse((start + offset, i))
            })
            .collect();
        Pacer { schedule, every }
    }

    /// When connection `i`'s first batch is due.
    fn first_due(&self, i: usize) -> Instant {
        self.schedule
            .iter()
            .find_map(|std::cmp::Reverse((due, c))| (*c == i).then_some(*due))
            .expect("every connection is scheduled")
    }

    /// When the next batch is due.
    fn next_due(&self) -> Option<Instant> {
        self.schedule.peek().map(|std::cmp::Reverse((due, _))| *due)
    }

    /// The next batch (when, and whose), and that connection's next one scheduled.
    fn pop(&mut self) -> Option<(Instant, usize)> {
        let std::cmp::Reverse((due, i)) = self.schedule.pop()?;
        self.schedule.push(std::cmp::Reverse((due + self.every, i)));
        Some((due, i))
    }
}

/// Wakes each connection when its next batch is due. One task sleeps until a
/// millisecond before the next is due and yields until it is: one such task, not one
/// per connection, so waiting costs the generator little of the core it shares with
/// the connections (50 connections each yielding until due kept it busy enough to fall
/// behind, and its own lateness then counted as the server's). Ends when aborted.
async fn pace(mut pacer: Pacer, wakes: Vec<Arc<tokio::sync::Notify>>) {
    let mut woken = 0u32;
    while let Some(due) = pacer.next_due() {
        let now = Instant::now();
        if due > now {
            match due.checked_sub(TIMER_GRANULARITY) {
                Some(early) if early > now => tokio::time::sleep_until(early.into()).await,
                _ => tokio::task::yield_now().await,
            }
            continue;
        }
        if let Some((_, i)) = pacer.pop() {
            wakes[i].notify_one();
        }
        woken = woken.wrapping_add(1);
        if woken.is_multiple_of(64) {
            // Catching up on many dues (the runtime has one thread): let the
            // connections run meanwhile.
            tokio::task::yield_now().await;
        }
    }
}

impl Worker {
    async fn run(mut self, mut conn: Conn) -> Tally {
        let args = self.args.clone();
        let value = Bytes::from(vec![b'v'; args.value_size]);
        let mut tally = Tally::new();
        let mut last_done = self.started;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let Some(ops) = self.batch() else { break };
            if let Some(n) = args.requests {
                let before = self.progress.fetch_add(ops.len() as u64, Ordering::Relaxed);
                if before >= n {
                    break;
                }
            } else {
                self.progress.fetch_add(ops.len() as u64, Ordering::Relaxed);
            }
            let sent = match &mut self.pace {
                Some(pace) => {
                    let due = pace.next;
                    pace.next += pace.every;
                    if last_done > due {
                        // Still waiting on our previous batch when this one was due: the
                        // server held us up, so the wait counts against it (no
                        // coordinated omission).
                        due
                    } else {
                        while Instant::now() < due {
                            pace.wake.notified().await;
                        }
                        // Whatever lateness is left is the generator's, not the
                        // server's.
                        Instant::now()
                    }
                }
                None => Instant::now(),
            };
            let mut result = conn.run(&ops, &value).await;
            if args.workload == Workload::CacheAside {
                if let Ok(hits) = &result {
                    tally.gets += ops.len() as u64;
                    tally.hits += hits.iter().filter(|&&h| h).count() as u64;
                    let fill: Vec<Op> = ops
                        .iter()
                        .zip(hits)
                        .filter(|(_, hit)| !**hit)
                        .map(|(op, _)| Op {
                            set: true,
                            key: op.key.clone(),
                        })
                        .collect();
                    if !fill.is_empty() {
                        tally.ops += fill.len() as u64;
                        result = conn.run(&fill, &value).await.map(|_| Vec::new());
                    }
                }
            } else if let Ok(hits) = &result {
                for (op, hit) in ops.iter().zip(hits) {
                    if !op.set {
                        tally.gets += 1;
                        tally.hits += u64::from(*hit);
                    }
                }
            }
            last_done = Instant::now();
            match result {
                Ok(_) => {
                    let us = last_done
                        .duration_since(sent)
                        .as_micros()
                        .min(u128::from(MAX_LATENCY_US)) as u64;
                    tally.latency.saturating_record(us.max(1));
                    tally.ops += ops.len() as u64;
                }
                Err(e) => {
                    tally.errors += 1;
                    tally.first_error.get_or_insert_with(|| e.to_string());
                    // A broken connection would fail every batch; give up on it.
                    if tally.errors > 100 || matches!(e, BenchError::Io(_)) {
                        break;
                    }
                }
            }
        }
        tally
    }

    /// The next batch, or `None` when a load has written all its keys.
    fn batch(&mut self) -> Option<Vec<Op>> {
        let args = &self.args;
        let mut ops = Vec::with_capacity(args.depth);
        for _ in 0..args.depth {
            let (set, rank) = match args.workload {
                Workload::Load => {
                    let rank = self.keys.next_load;
                    if rank >= args.keys {
                        break;
                    }
                    self.keys.next_load += args.connections as u64;
                    (true, rank)
                }
                Workload::Get | Workload::CacheAside => (false, self.keys.rank(args.keys)),
                Workload::Set => (true, self.keys.rank(args.keys)),
                Workload::Mix => {
                    let read = self.keys.rng.next_f64() < args.read_ratio;
                    (!read, self.keys.rank(args.keys))
                }
            };
            ops.push(Op {
                set,
                key: key(rank),
            });
        }
        (!ops.is_empty()).then_some(ops)
    }
}

impl Tally {
    fn new() -> Self {
        Self {
            // 3 significant digits over 1 µs..60 s; the bounds are valid constants.
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!())),
            ops: 0,
            gets: 0,
            hits: 0,
            errors: 0,
            first_error: None,
        }
    }

    fn merge(&mut self, other: Tally) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.ops += other.ops;
        self.gets += other.gets;
        self.hits += other.hits;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

fn report(args: &BenchArgs, servers: &[String], t: &Tally, elapsed: Duration) -> serde_json::Value {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let ms = |q: f64| t.latency.value_at_quantile(q / 100.0) as f64 / 1000.0;
    let percentiles: Vec<serde_json::Value> = PERCENTILES
        .iter()
        .map(|&p| serde_json::json!({ "p": p, "ms": ms(p) }))
        .collect();
    serde_json::json!({
        "label": args.label,
        "target": format!("{:?}", args.target),
        "servers": servers,
        "workload": format!("{:?}", args.workload),
        "connections": args.connections,
        "depth": args.depth,
        "keys": args.keys,
        "value_size": args.value_size,
        "rate": args.rate,
        "elapsed_s": secs,
        "ops": t.ops,
        "ops_per_s": t.ops as f64 / secs,
        "batches": t.latency.len(),
        "p50_ms": ms(50.0),
        "p99_ms": ms(99.0),
        "p999_ms": ms(99.9),
        "max_ms": t.latency.max() as f64 / 1000.0,
        "percentiles": percentiles,
        "gets": t.gets,
        "hit_ratio": if t.gets > 0 { Some(t.hits as f64 / t.gets as f64) } else { None },
        "errors": t.errors,
        "first_error": t.first_error,
    })
}

fn write_text(out: &mut impl Write, r: &serde_json::Value) -> std::io::Result<()> {
    writeln!(
        out,
        "{} {} x{} depth {}: {} ops in {:.2}s = {:.0} ops/s",
        r["target"],
        r["workload"],
        r["connections"],
        r["depth"],
        r["ops"],
        r["elapsed_s"].as_f64().unwrap_or(0.0),
        r["ops_per_s"].as_f64().unwrap_or(0.0)
    )?;
    writeln!(
        out,
        "batch latency ms: p50 {} p99 {} p99.9 {} max {}",
        r["p50_ms"], r["p99_ms"], r["p999_ms"], r["max_ms"]
    )?;
    if let Some(h) = r["hit_ratio"].as_f64() {
        writeln!(out, "hit ratio {h:.4} over {} reads", r["gets"])?;
    }
    if r["errors"].as_u64().unwrap_or(0) > 0 {
        writeln!(out, "errors {}: {}", r["errors"], r["first_error"])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_parse_and_nonsense_is_refused() {
        assert_eq!(parse_dist("uniform"), Ok(Dist::Uniform));
        assert_eq!(parse_dist("zipf:0.99"), Ok(Dist::Zipf(0.99)));
        assert!(parse_dist("zipf:0").is_err());
        assert!(parse_dist("zipf").is_err());
    }

    #[test]
    fn paced_batches_come_one_at_a_time_spread_over_the_interval() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, Duration::from_millis(1), 4);
        let batches: Vec<(u128, usize)> = (0..9)
            .map(|_| {
                let (due, i) = pacer.pop().unwrap();
                (due.duration_since(start).as_micros(), i)
            })
            .collect();
        assert_eq!(
            batches,
            [
                (0, 0),
                (250, 1),
                (500, 2),
                (750, 3),
                (1000, 0),
                (1250, 1),
                (1500, 2),
                (1750, 3),
                (2000, 0)
            ]
        );
        assert_eq!(
            pacer.next_due().unwrap().duration_since(start).as_micros(),
            2250
        );
    }

    #[test]
    fn keys_are_sixteen_bytes_as_the_memory_figure_assumes() {
        assert_eq!(key(0).len(), 16);
        assert_eq!(key(999_999_999_999).len(), 16);
    }
}
