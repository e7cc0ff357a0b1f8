//! The browser MQTT client: wasm-bindgen glue over the [`protocol`] crate's sans-io client
//! state machine, exposed to JavaScript with an MQTT.js-shaped API (`connect(url, opts)`).
//!
//! # Why it is thin
//! Everything MQTT (the codec, packet ids, QoS flows, resending, resubscribing, keep-alive
//! deadlines) lives in `protocol`, the same code the broker runs. This crate only owns the
//! browser's WebSocket, its timers and the JavaScript-facing types.
//!
//! # Layout
//! - `client`: `connect()` and `MqttClient`: drives the state machine from socket events,
//!   timers and method calls; listeners, promises, auto-reconnect with backoff.
//! - `socket`: the WebSocket with the closures it owns (detached on drop).
//! - `timer`: `performance.now()` as a `Timestamp`, and re-armable timers that tick in one
//!   small shared Worker on a page (Chrome throttles a hidden page's timers, not a Worker's,
//!   and a late PINGREQ loses the connection) and use `setTimeout` inside a Worker.
//! - `options`: the `connect` options object and `publish` properties.
//! - `store`: the `persistence` option: records in IndexedDB (through a small JavaScript
//!   snippet in `js/client.js`), and the output held until they are written.
//! - `js`: small conversions (option getters, plain objects, promises).
//! - `error`: the crate's one error type and its one conversion to a JavaScript `Error`.
//!
//! # std
//! The package (client-wasm/build.sh) builds this crate and `protocol` without their default
//! `std` feature: `no_std` + `alloc`, with the panic handler at the bottom of this file, so
//! that std's panic hook (which formats a message a wasm32 std cannot print) stays out of the
//! binary. Every other build (tests, clippy, the host) keeps std; the code is the same.
//!
//! The TypeScript definitions below are hand-written: they are the API's documentation.

#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

mod client;
mod error;
mod js;
mod options;
mod prelude;
mod socket;
mod store;
mod timer;

use wasm_bindgen::prelude::wasm_bindgen;

use crate::prelude::*;
pub use client::{connect, MqttClient};

/// The version of the MQTT codec this package was built with.
#[wasm_bindgen(js_name = protocolCrateVersion)]
pub fn protocol_crate_version() -> String {
    protocol::VERSION.to_string()
}

#[wasm_bindgen(typescript_custom_section)]
const TS_API: &'static str = r#"
/** 0: at most once, 1: at least once, 2: exactly once. */
export type QoS = 0 | 1 | 2;

/** What a `password` function gives. */
export type PasswordValue = string | Uint8Array | undefined;

export interface ConnectOptions {
  /** May be empty with `clean: true` (a 5.0 server then assigns one). Default "". */
  clientId?: string;
  /** Clean Session (3.1.1) / Clean Start (5.0). Default true. */
  clean?: boolean;
  /** Seconds; 0 = off. Default 60. */
  keepalive?: number;
  /** 4 = MQTT 3.1.1 (default), 5 = MQTT 5.0. */
  protocolVersion?: 4 | 5;
  /** 5.0: seconds the server keeps the session after the connection ends. */
  sessionExpiryInterval?: number;
  /**
   * The user name, or a function giving it (or a promise of it) that is called again before
   * every connection attempt, the first and each reconnection. `undefined` or `null`: none.
   */
  username?: string | (() => string | undefined | Promise<string | undefined>);
  /**
   * The password, or a function giving it (or a promise of it) that is called again before
   * every connection attempt, the first and each reconnection: so a short-lived token (a JWT
   * from the app's backend) is fetched fresh for each CONNECT. `undefined` or `null`: none.
   */
  password?: string | Uint8Array | (() => PasswordValue | Promise<PasswordValue>);
  /**
   * Called before every WebSocket is opened (the first connection and each reconnection)
   * with the `url` given to `connect`; the string it gives (or resolves to) is the URL
   * opened, e.g. the URL with a fresh token in its query. Default: `url` as it is.
   *
   * If this, `username` or `password` throws, rejects or gives a wrong type, that attempt
   * fails as an unreachable broker would: the first `connect` rejects with an Error naming
   * the function ("cannot open a WebSocket to <url>: password failed: <its message>"); a
   * reconnection emits `error` and `close` and is tried again after the reconnect backoff,
   * until `end()`.
   */
  transformWsUrl?: (url: string) => string | Promise<string>;
  will?: { topic: string; payload: string | Uint8Array; qos?: QoS; retain?: boolean };
  /** Messages waiting while offline (bounded); publish rejects beyond it. Default 1000. */
  queueLimit?: number;
  /** Milliseconds to wait for CONNACK. Default 30000. */
  connectTimeout?: number;
  /**
   * Auto-reconnect after a lost connection (not after a failed first one: `connect`
   * rejects). Delay = min(maxDelay, initialDelay * 2^attempt), minus up to `jitter` of it
   * at random. `false` turns it off. Defaults: 1000 ms, 30000 ms, 0.5.
   */
  reconnect?: false | { initialDelay?: number; maxDelay?: number; jitter?: number };
  /**
   * Keep the session's unfinished QoS 1/2 work in IndexedDB, so that a page reload (a new
   * client with the same `clientId`) resumes it: outgoing messages not yet acknowledged
   * (queued or in flight, resent with the same packet id) and the ids of incoming QoS 2
   * messages awaiting PUBREL (their duplicates are not delivered twice). Packets and
   * messages of a step go out only once the step is written. Needs `clientId`,
   * `clean: false` and, with 5.0, `sessionExpiryInterval` > 0. Database name default:
   * `mqtt-bridge-client <url> <clientId>`; one client at a time holds it (a Web Lock:
   * `connect` rejects while another tab has it). Survives a reload or a crashed tab (relaxed
   * durability), not a power cut. A failed write is retried by rewriting the whole session;
   * if that fails too, an `error` event says persistence is off for this client.
   */
  persistence?: boolean | { name?: string };
}

/** MQTT 5.0 PUBLISH properties, named as in MQTT.js. */
export interface PublishProperties {
  payloadFormatIndicator?: boolean;
  messageExpiryInterval?: number;
  contentType?: string;
  responseTopic?: string;
  correlationData?: string | Uint8Array;
  /** A key given an array is sent once per value. */
  userProperties?: Record<string, string | string[]>;
}

export interface ConnackPacket {
  cmd: "connack";
  sessionPresent: boolean;
  reasonCode: number;
}

export interface PublishPacket {
  cmd: "publish";
  topic: string;
  payload: Uint8Array;
  qos: QoS;
  retain: boolean;
  dup: boolean;
  /** Present at QoS 1 and 2. */
  messageId?: number;
  /** 5.0, when the message has any. A repeated user property key maps to an array. */
  properties?: Omit<PublishProperties, "correlationData"> & {
    correlationData?: Uint8Array;
    subscriptionIdentifier?: number[];
  };
}

export interface PublishOptions {
  qos?: QoS;
  retain?: boolean;
  /** 5.0 only; a 3.1.1 connection sends none. */
  properties?: PublishProperties;
}

export interface SubscribeOptions {
  qos?: QoS;
  /** 5.0 No Local. */
  nl?: boolean;
  /** 5.0 Retain As Published. */
  rap?: boolean;
  /** 5.0 Retain Handling: 0 send retained, 1 only for a new subscription, 2 never. */
  rh?: 0 | 1 | 2;
}

/** The client's own view of its session (`client.session()`). */
export interface SessionView {
  connected: boolean;
  /** The last CONNACK's session present flag. */
  sessionPresent: boolean;
  /** Granted subscriptions: the options asked for, with the QoS granted. */
  subscriptions: { topic: string; qos: QoS; nl: boolean; rap: boolean; rh: 0 | 1 | 2 }[];
  /** Outgoing QoS 1/2 messages not yet acknowledged, oldest first. */
  outgoingInflight: {
    messageId: number;
    topic: string;
    qos: QoS;
    size: number;
    stage: "awaiting-ack" | "awaiting-comp";
  }[];
  /** Incoming QoS 2 packet ids received and awaiting PUBREL. */
  incomingAwaitingPubrel: number[];
  /** Messages waiting to be sent (offline, or the server's Receive Maximum reached). */
  queued: number;
  /** The server's Receive Maximum. */
  sendWindow: number;
}

export interface ClientEvents {
  connect: (connack: ConnackPacket) => void;
  reconnect: () => void;
  offline: () => void;
  close: () => void;
  /** Messages that arrive before the first `message` listener are kept and given to it. */
  message: (topic: string, payload: Uint8Array, packet: PublishPacket) => void;
  error: (error: Error & { reasonCode?: number }) => void;
}

export class MqttClient {
  private constructor();
  free(): void;
  /** CONNACK accepted and the connection not lost since. */
  readonly connected: boolean;
  /**
   * Resolves with the reason code when the broker acknowledged the message (QoS 1 PUBACK,
   * QoS 2 PUBCOMP) or, at QoS 0, once handed to the connection; rejects with an Error (`reasonCode` set) when
   * the broker refused it, or when the client ends first. Queued while offline.
   */
  publish(topic: string, payload: string | Uint8Array, opts?: PublishOptions): Promise<number>;
  /** Resolves with one code per filter: 0, 1, 2 = the granted QoS; 0x80 and up = refused. */
  subscribe(filter: string | string[], opts?: SubscribeOptions): Promise<number[]>;
  /** Resolves with one reason code per filter. */
  unsubscribe(filter: string | string[]): Promise<number[]>;
  on<E extends keyof ClientEvents>(event: E, listener: ClientEvents[E]): void;
  off<E extends keyof ClientEvents>(event: E, listener: ClientEvents[E]): void;
  /**
   * Sends DISCONNECT, stops reconnecting, rejects pending promises; resolves when closed.
   * With `persistence`, unfinished QoS 1/2 messages stay stored for the next client with
   * this `clientId`.
   */
  end(): Promise<void>;
  session(): SessionView;
}

/**
 * Opens a WebSocket (subprotocol `mqtt`) to `url` (through `transformWsUrl`) and resolves
 * once the broker accepted the connection; rejects with an Error saying why not (bad URL or
 * option, a `transformWsUrl` / `username` / `password` function that failed, socket
 * refused, CONNACK refused with `reasonCode`, e.g. 0x86 for a wrong user name or password).
 * `reasonCode` is always an MQTT 5.0 reason code: a 3.1.1 CONNACK return code comes as its
 * 5.0 equivalent (1 → 0x84, 2 → 0x85, 3 → 0x88, 4 → 0x86, 5 → 0x87).
 */
export function connect(url: string, opts?: ConnectOptions): Promise<MqttClient>;
"#;

/// Talc instead of std's dlmalloc: ~2 KB gzip less of the size-budgeted package
/// (client-wasm/build.sh), and faster on wasm.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

/// Without std (the package's build, see Cargo.toml) a panic stops the module, as with std
/// and `panic = "abort"`, but without std's panic hook, which formats the message (and so
/// keeps `core::fmt` and the panic locations in the binary) only to write it nowhere: a
/// wasm32-unknown-unknown std has no stderr.
#[cfg(all(not(feature = "std"), target_arch = "wasm32"))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}
