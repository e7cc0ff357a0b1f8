//! `takeover`: how long a persistent session takes to follow its client to another broker
//! of a cluster (or back to the same broker).
//!
//! One client id, clean session 0, one subscription (`bench/t/<client id>`, QoS 1). The
//! client connects to `--url`; then, `--runs` times, it connects again to `--to` (the same
//! broker if omitted) while its first connection is still open (the broker must close that
//! one: a takeover), or after a DISCONNECT with `--disconnect-first` (a plain reconnect); and
//! goes back to `--url` the same way for the next run, `--pause-ms` between two moves. Each
//! timed figure is from writing CONNECT to reading CONNACK on an already open socket, so
//! TCP's handshake is not in it; the moves there (`--url` → `--to`) and back are reported
//! apart. Every CONNACK must say session present = 1, every connection taken over must be
//! closed by the broker within [`CLOSE_WAIT`], and before each move a PINGREQ checks that the
//! broker did not close the client's connection by itself. At the end the session is ended
//! (clean session 1).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use protocol::{Packet, ProtocolVersion, QoS, TopicFilter};

use crate::conn::{Conn, ConnError, Target};

/// How long a connection taken over may stay open after the new one's CONNACK.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Options of `mqtt-bench takeover`.
#[derive(Debug, clap::Args)]
pub(crate) struct Takeover {
    /// mqtt://HOST:PORT or ws://HOST:PORT/PATH: where the client starts (bridge a).
    #[arg(long)]
    url: Target,
    /// Where it reconnects (bridge b); default: --url.
    #[arg(long)]
    to: Option<Target>,
    /// Timed moves to --to (and as many back).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Send DISCONNECT before each reconnect, instead of leaving the connection open for the
    /// broker to take over.
    #[arg(long)]
    disconnect_first: bool,
    /// Milliseconds between two moves.
    #[arg(long, default_value_t = 20)]
    pause_ms: u64,
    /// The client id.
    #[arg(long, default_value = "bench-takeover")]
    client_id: String,
    /// Also print one line of JSON with the figures (for scripts; the last line printed).
    #[arg(long)]
    json: bool,
    /// Speak MQTT 5.0 instead of 3.1.1.
    #[arg(long)]
    v5: bool,
}

/// What the moves found.
#[derive(Debug, Default)]
struct Moves {
    /// CONNECT → CONNACK of each move to `--to`, microseconds.
    there_us: Vec<u64>,
    /// The same for each move back to `--url`.
    back_us: Vec<u64>,
    /// CONNACKs that said session present = 0.
    not_present: u32,
    /// Connections taken over that the broker left open past [`CLOSE_WAIT`].
    left_open: u32,
    /// Connections the broker closed although no other connection had taken them over
    /// (found by a PINGREQ before each move).
    dropped: u32,
}

/// Runs the moves and prints the report; `Ok(false)` if a session was not present, or a
/// connection was left open after a takeover or closed without one.
pub(crate) async fn run(args: Takeover) -> anyhow::Result<bool> {
    let version = if args.v5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    let to = args.to.clone().unwrap_or_else(|| args.url.clone());
    let id = args.client_id.as_str();
    let (mut conn, _) = Conn::connect(&args.url, version, id, false)
        .await
        .with_context(|| format!("connecting to {}", args.url))?;
    conn.subscribe(TopicFilter::new(format!("bench/t/{id}"))?, QoS::AtLeastOnce)
        .await
        .context("subscribing")?;

    let mut moves = Moves::default();
    let pause = Duration::from_millis(args.pause_ms);
    for run in 0..args.runs {
        for (target, times) in [(&to, true), (&args.url, false)] {
            tokio::time::sleep(pause).await;
            if !alive(&mut conn).await {
                // Closed without a takeover: reconnect (untimed) to go on.
                moves.dropped += 1;
                let from = if times { &args.url } else { &to };
                conn = Conn::connect(from, version, id, false).await?.0;
            }
            let moved = move_to(conn, target, &args, version)
                .await
                .with_context(|| format!("run {run}: moving to {target}"))?;
            conn = moved.conn;
            moves.left_open += u32::from(!moved.old_closed);
            moves.not_present += u32::from(!moved.session_present);
            let us = u64::try_from(moved.took.as_micros()).unwrap_or(u64::MAX);
            if times {
                moves.there_us.push(us);
            } else {
                moves.back_us.push(us);
            }
        }
    }
    conn.disconnect().await?;
    tokio::time::sleep(pause).await;
    let (conn, _) = Conn::connect(&args.url, version, id, true).await?;
    conn.disconnect().await?;
    Ok(report(&args, &to, moves))
}

/// One move, and what it found.
#[derive(Debug)]
struct Moved {
    /// The client's connection now.
    conn: Conn,
    /// CONNECT → CONNACK.
    took: Duration,
    session_present: bool,
    /// Whether the broker closed the connection taken over (true after a DISCONNECT).
    old_closed: bool,
}

/// One move: the client's connection `old` is left open (or disconnected first), a new one to
/// `target` sends CONNECT.
async fn move_to(
    old: Conn,
    target: &Target,
    args: &Takeover,
    version: ProtocolVersion,
) -> anyhow::Result<Moved> {
    let mut open = if args.disconnect_first {
        old.disconnect().await?;
        None
    } else {
        Some(old)
    };
    let mut conn = Conn::open(target, version).await?;
    let started = Instant::now();
    let session_present = conn.handshake(&args.client_id, false).await?;
    let took = started.elapsed();
    let old_closed = match &mut open {
        Some(old) => closed_within(old, CLOSE_WAIT).await,
        None => true,
    };
    Ok(Moved {
        conn,
        took,
        session_present,
        old_closed,
    })
}

/// Whether `conn` still answers PINGREQ with PINGRESP.
async fn alive(conn: &mut Conn) -> bool {
    if conn.push(&Packet::PingReq).is_err() || conn.flush().await.is_err() {
        return false;
    }
    loop {
        match conn.next_within(CLOSE_WAIT).await {
            Ok(Packet::PingResp) => return true,
            Ok(Packet::Disconnect(_)) | Err(_) => return false,
            Ok(_) => continue,
        }
    }
}

/// Whether the broker closes `conn` (or sends DISCONNECT) within `limit`.
async fn closed_within(conn: &mut Conn, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.next_within(left).await {
            Ok(Packet::Disconnect(_)) => return true,
            Ok(_) => continue,
            Err(ConnError::Timeout(_)) => return false,
            Err(_) => return true,
        }
    }
}

/// Median, p99 (the sample at rank ⌊(n − 1) · 0.99⌋) and max of `samples`, microseconds.
fn percentiles(samples: &[u64]) -> (u64, u64, u64) {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let at = |permille: usize| sorted.get((sorted.len().max(1) - 1) * permille / 1000);
    let get = |v: Option<&u64>| v.copied().unwrap_or(0);
    (get(at(500)), get(at(990)), get(sorted.last()))
}

fn report(args: &Takeover, to: &Target, moves: Moves) -> bool {
    let ms = |us: u64| us as f64 / 1000.0;
    let how = if args.disconnect_first {
        "reconnect after DISCONNECT"
    } else {
        "takeover of an open connection"
    };
    println!(
        "takeover {} -> {to}, MQTT {}, {how}, {} runs",
        args.url,
        if args.v5 { "5.0" } else { "3.1.1" },
        args.runs
    );
    let (there, back) = (percentiles(&moves.there_us), percentiles(&moves.back_us));
    for (name, (p50, p99, max)) in [("there", there), ("back", back)] {
        println!(
            "{name:<6} CONNECT -> CONNACK: median {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            ms(p50),
            ms(p99),
            ms(max)
        );
    }
    println!(
        "check:  {} CONNACKs without session present, {} old connections left open, {} \
         connections closed without a takeover",
        moves.not_present, moves.left_open, moves.dropped
    );
    let ok = moves.not_present == 0 && moves.left_open == 0 && moves.dropped == 0;
    if args.json {
        let figures = |(p50, p99, max): (u64, u64, u64)| serde_json::json!({ "p50": p50, "p99": p99, "max": max });
        let summary = serde_json::json!({
            "command": "takeover",
            "runs": args.runs,
            "disconnect_first": args.disconnect_first,
            "there_us": figures(there),
            "back_us": figures(back),
            "not_present": moves.not_present,
            "left_open": moves.left_open,
            "dropped": moves.dropped,
            "ok": ok,
        });
        println!("{summary}");
    }
    ok
}
