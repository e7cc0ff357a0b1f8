//! `mqtt-bench`: a load generator for the bridge, or for any MQTT broker (mosquitto, to
//! compare), over TCP or WebSocket.
//!
//! It speaks MQTT through the project's own `protocol` crate, encoding and decoding packets
//! directly rather than through the client state machine, so that the load generator does as
//! little as possible per message: it shares the machine with the broker it measures.
//!
//! # Layout
//! - [`conn`]: one connection, TCP or WebSocket (subprotocol `mqtt`, binary frames), as
//!   whole packets; CONNECT, SUBSCRIBE, DISCONNECT.
//! - [`publish`]: publishing with a window of unacknowledged messages; acknowledging.
//! - [`publish`]: publishing with a window of unacknowledged messages, optionally on a
//!   schedule (`--rate`); acknowledging.
//! - [`fanin`]: `fanin`, N publishers to M subscribers: throughput, latency, a loss check;
//!   for a time (`--duration`) or a count (`--messages`), as fast as the window allows or at a
//!   fixed offered rate (`--rate`).
//! - [`sessions`]: `sessions`, many persistent sessions with messages queued while offline
//!   (each to its own topic, or `--common-topic` to all of them), and `--drain` to take them
//!   back after a restart.
//! - [`takeover`]: `takeover`, one persistent session moving between two brokers of a cluster
//!   (or reconnecting to one): CONNECT → CONNACK times.
//!
//! Every subcommand prints a report for people and, with `--json`, one JSON line for scripts:
//! `bench/compare.sh` runs them against the bridge and mosquitto side by side and writes
//! `BENCHMARKS.md`; `bench/cluster.sh` runs them against two bridges of a NATS cluster
//! beside one bridge (`fanin --sub-url`: subscribers on the other bridge). Older figures:
//! `docs/benchmarks.md`.

mod conn;
mod fanin;
mod publish;
mod sessions;
mod takeover;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Load generator for MQTT brokers.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// N publishers (topic `bench/<i>`) to M subscribers of `bench/#`: messages/s, latency, and
    /// at QoS 1 and 2 a check that every acknowledged message arrived.
    Fanin(fanin::Fanin),
    /// Create persistent sessions (clean session 0, one subscription each), optionally
    /// queue QoS 1 messages for them while offline; or drain them again.
    Sessions(sessions::Sessions),
    /// One persistent session moving from --url to --to and back, taking over its open
    /// connection (or after a DISCONNECT): CONNECT → CONNACK median and p99.
    Takeover(takeover::Takeover),
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let ok = match Cli::parse().command {
        Command::Fanin(args) => fanin::run(args).await?,
        Command::Sessions(args) => sessions::run(args).await?,
        Command::Takeover(args) => takeover::run(args).await?,
    };
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
