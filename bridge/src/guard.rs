//! The HTTP side's gate: who may reach the dashboard, the admin API and `/mqtt`, decided
//! before any handler runs.
//!
//! # What it stops
//! - **DNS rebinding.** A page on `evil.example` whose name is made to resolve to the
//!   bridge's address is same-origin with it in the browser; only the `Host` header still
//!   says `evil.example`. Every request whose `Host` is not in `[server] allowed_hosts`
//!   (by default the listen addresses, `localhost`, `127.0.0.1`, `[::1]`) is answered 403.
//! - **Cross-site requests to the admin API.** A foreign page can send a `POST .../kick`
//!   with `Content-Type: text/plain` without a CORS preflight. With `[api] token` set, every
//!   `/api/v1/` route but `/api/v1/health` needs `Authorization: Bearer <token>`, which a
//!   browser never adds on its own (401 without it; `read_token` allows GET and HEAD only,
//!   403 otherwise). Without a token the API answers only loopback clients, and a mutating
//!   request only when its `Origin`, if any, is the bridge's own (or in `[api] cors_origins`).
//! - **Cross-site WebSocket hijacking.** WebSockets are not subject to CORS: a foreign page
//!   may open `/mqtt` unless the server checks `Origin`. The upgrade is refused (403) unless
//!   `Origin` is absent (a non-browser client), the bridge's own origin, or in
//!   `[server] allowed_origins` (`["*"]` allows all).
//! - **Spoofed client addresses.** `X-Forwarded-For` / `Forwarded` count only from
//!   `[server] trusted_proxies` ([`forwarded`]); the address found there is the client's
//!   everywhere: the loopback rule above, the per-address connection limit, the session's
//!   `peer` and the broker's authentication rate limit.
//!
//! No CORS header is ever sent unless `[api] cors_origins` lists the request's origin.
//!
//! # Layout
//! [`check`] wraps the whole router: it finds the client ([`forwarded`]), checks `Host`
//! ([`names`]), answers CORS preflights, and leaves a [`RequestContext`] for the handlers.
//! [`api_access`] wraps the API's routes (not `/api/v1/health`). The WebSocket endpoint calls
//! [`Guard::websocket_origin`] itself, before it counts the connection.

mod forwarded;
mod names;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, AUTHORIZATION, HOST, ORIGIN, VARY, WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

pub(crate) use self::forwarded::ProxyNet;
use self::forwarded::TrustedProxies;
use self::names::{AllowedHosts, Authority, Origin, Origins, Scheme};
pub(crate) use self::names::{HostPattern, OriginPattern};
use crate::config::{ApiConfig, ServerConfig};
use crate::state::TlsConnection;

/// Tokens shorter than this draw a warning at start.
const SHORT_TOKEN: usize = 16;

/// An `[api] token` or `read_token`: visible ASCII, no spaces (what fits in a header).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct ApiToken(Box<str>);

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(…)")
    }
}

impl TryFrom<String> for ApiToken {
    type Error = &'static str;

    fn try_from(text: String) -> Result<ApiToken, &'static str> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("an [api] token must be non-empty visible ASCII without spaces");
        }
        Ok(ApiToken(text.into_boxed_str()))
    }
}

impl ApiToken {
    /// Whether `given` is this token, in time that depends on this token's length only.
    pub(crate) fn matches(&self, given: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        let mut diff = u8::from(expected.len() != given.len());
        for (i, e) in expected.iter().enumerate() {
            diff |= e ^ given.get(i).copied().unwrap_or(0);
        }
        std::hint::black_box(diff) == 0
    }
}

/// The compiled `[server]` and `[api]` access settings.
#[derive(Debug)]
pub(crate) struct Guard {
    hosts: AllowedHosts,
    /// `[server] allowed_origins`, for `/mqtt`.
    ws_origins: Origins,
    /// `[api] cors_origins`.
    cors: Origins,
    proxies: TrustedProxies,
    token: Option<ApiToken>,
    read_token: Option<ApiToken>,
}

impl Guard {
    /// The guard for a bridge listening on `listen` (the default allowed hosts are made from
    /// these addresses).
    pub(crate) fn new(server: &ServerConfig, api: &ApiConfig, listen: &[SocketAddr]) -> Guard {
        let guard = Guard {
            hosts: AllowedHosts::new(&server.allowed_hosts, listen),
            ws_origins: Origins::new(&server.allowed_origins),
            cors: Origins::new(&api.cors_origins),
            proxies: TrustedProxies::new(&server.trusted_proxies),
            token: api.token.clone(),
            read_token: api.read_token.clone(),
        };
        for token in [&guard.token, &guard.read_token].into_iter().flatten() {
            if token.0.len() < SHORT_TOKEN {
                tracing::warn!(
                    "an [api] token is shorter than {SHORT_TOKEN} characters: use a long \
                     random one (e.g. `openssl rand -hex 32`)"
                );
            }
        }
        if !guard.token_mode() && listen.iter().any(|a| !a.ip().is_loopback()) {
            tracing::info!(
                "no [api] token: the admin API answers clients on this machine (loopback) only"
            );
        }
        if guard.hosts.any() {
            tracing::info!("[server] allowed_hosts = [\"*\"]: the Host header is not checked");
        }
        if !guard.cors.is_empty() && !guard.token_mode() {
            tracing::warn!(
                "[api] cors_origins without [api] token: the listed origins may kick and \
                 discard sessions from a page in a browser on this machine"
            );
        }
        guard
    }

    fn token_mode(&self) -> bool {
        self.token.is_some() || self.read_token.is_some()
    }

    /// Whether a WebSocket upgrade with these headers may go ahead: no `Origin` (not a
    /// browser), the bridge's own origin, or one of `[server] allowed_origins`.
    pub(crate) fn websocket_origin(
        &self,
        headers: &HeaderMap,
        ctx: &RequestContext,
    ) -> Result<(), Refused> {
        let Some(origin) = headers.get(ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or("");
        if ctx.is_own(origin) || self.ws_origins.allows(origin) {
            return Ok(());
        }
        Err(Refused::forbidden(
            "this page's origin may not open MQTT connections here: add it to [server] \
             allowed_origins",
        ))
    }

    /// The admin API's rule for one request (see the module docs); `/metrics` asks it too.
    pub(crate) fn api(
        &self,
        method: &Method,
        headers: &HeaderMap,
        ctx: &RequestContext,
    ) -> Result<(), Refused> {
        let reads = method == Method::GET || method == Method::HEAD;
        if self.token_mode() {
            let Some(given) = bearer(headers) else {
                return Err(Refused::unauthorized(false));
            };
            let full = self.token.as_ref().is_some_and(|t| t.matches(given));
            let read = self.read_token.as_ref().is_some_and(|t| t.matches(given));
            return match (full, read) {
                (true, _) => Ok(()),
                (false, true) if reads => Ok(()),
                (false, true) => Err(Refused::forbidden(
                    "the read token allows GET and HEAD only",
                )),
                (false, false) => Err(Refused::unauthorized(true)),
            };
        }
        if !ctx.client.ip().to_canonical().is_loopback() {
            return Err(Refused::forbidden(
                "without [api] token the admin API answers only clients on the bridge's own \
                 machine",
            ));
        }
        if ctx.untrusted_proxy {
            // A reverse proxy on this machine makes every client on the internet look local:
            // without a token, a forwarded request is not taken for a local one.
            return Err(Refused::forbidden(
                "a forwarded request from a proxy not in [server] trusted_proxies: without \
                 [api] token the admin API answers only clients on the bridge's own machine",
            ));
        }
        if !reads {
            if let Some(origin) = headers.get(ORIGIN) {
                let origin = origin.to_str().unwrap_or("");
                if !ctx.is_own(origin) && !self.cors.allows(origin) {
                    return Err(Refused::forbidden(
                        "cross-origin request refused: a page of another origin may not \
                         change the broker's state",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The request's `Origin`, when `[api] cors_origins` lets it read API answers.
    fn cors_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(ORIGIN)?;
        self.cors
            .allows(origin.to_str().ok()?)
            .then(|| origin.clone())
    }
}

/// The token of `Authorization: Bearer <token>`.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().as_bytes())
}

/// What [`check`] learned about a request, left in its extensions for the handlers.
#[derive(Debug, Clone)]
pub(crate) struct RequestContext {
    /// The client's address: the TCP peer, or the one a trusted proxy forwarded (port 0 when
    /// the proxy gave none).
    pub(crate) client: SocketAddr,
    /// The request carries `X-Forwarded-For`, `Forwarded` or `X-Real-IP` from a peer that is
    /// not a trusted proxy: a reverse proxy the operator did not list forwarded it, and the
    /// peer address (the proxy's) says nothing about the client.
    untrusted_proxy: bool,
    /// The bridge's origin as this request's client sees it: `http(s)://` + `Host`; `None`
    /// when `Host` is missing or malformed (only possible with `allowed_hosts = ["*"]`).
    own_origin: Option<Origin>,
}

impl RequestContext {
    /// Whether the raw `Origin` value `origin` is the bridge's own origin.
    fn is_own(&self, origin: &str) -> bool {
        self.own_origin
            .as_ref()
            .is_some_and(|own| Origin::parse(origin).as_ref() == Some(own))
    }
}

/// A request refused by the guard: the status and a JSON `{"error": "..."}` body.
#[derive(Debug)]
pub(crate) struct Refused {
    status: StatusCode,
    message: &'static str,
    /// For 401: whether a token was sent (and was wrong).
    challenge: Option<bool>,
}

impl Refused {
    fn forbidden(message: &'static str) -> Refused {
        Refused {
            status: StatusCode::FORBIDDEN,
            message,
            challenge: None,
        }
    }

    fn unauthorized(sent: bool) -> Refused {
        Refused {
            status: StatusCode::UNAUTHORIZED,
            message: if sent {
                "the token is not valid"
            } else {
                "the admin API needs Authorization: Bearer <[api] token>"
            },
            challenge: Some(sent),
        }
    }

    fn bad_request(message: &'static str) -> Refused {
        Refused {
            status: StatusCode::BAD_REQUEST,
            message,
            challenge: None,
        }
    }

    pub(crate) fn message(&self) -> &'static str {
        self.message
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if let Some(sent) = self.challenge {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static(if sent {
                    "Bearer realm=\"mqtt-bridge\", error=\"invalid_token\""
                } else {
                    "Bearer realm=\"mqtt-bridge\""
                }),
            );
        }
        response
    }
}

/// The middleware around every route: finds the client, refuses an unknown `Host`, answers
/// CORS preflights for `[api] cors_origins`, and adds their headers to API answers.
pub(crate) async fn check(
    State(guard): State<Arc<Guard>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(ConnectInfo(peer)) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .copied()
    else {
        // The listeners always set it; without it nothing can be decided.
        tracing::error!("a request without its peer address; refused");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let client = match guard.proxies.client(peer, request.headers()) {
        Ok(client) => client,
        Err(e) => {
            tracing::debug!(%peer, "{e}; request refused");
            return Refused::bad_request("the forwarded client address is not an IP address")
                .into_response();
        }
    };
    let scheme = if request.extensions().get::<TlsConnection>().is_some() {
        Scheme::Https
    } else {
        client.proto.unwrap_or(Scheme::Http)
    };
    if request.headers().get_all(HOST).iter().nth(1).is_some() {
        // RFC 9112 section 3.2: more than one Host is a bad request. A proxy in front that
        // read the other line would route by a host this check never saw.
        return Refused::bad_request("more than one Host header").into_response();
    }
    let host = request_host(&request);
    let allowed = match &host {
        Some(authority) => guard.hosts.any() || guard.hosts.allows(authority, scheme),
        None => guard.hosts.any(),
    };
    if !allowed {
        tracing::debug!(
            client = %client.addr,
            host = ?request.headers().get(HOST),
            "request for an unknown host refused (DNS rebinding?)"
        );
        return Refused::forbidden(
            "unknown Host: add the name this bridge is reached by to [server] allowed_hosts",
        )
        .into_response();
    }
    let api = request.uri().path().starts_with("/api/");
    let cors = if api {
        guard.cors_origin(request.headers())
    } else {
        None
    };
    if let Some(origin) = &cors {
        if request.method() == Method::OPTIONS
            && request
                .headers()
                .contains_key("access-control-request-method")
        {
            return preflight(origin.clone());
        }
    }
    // Forwarding headers the bridge did not honour: the request came through a proxy that
    // is not in `trusted_proxies`, so its loopback peer says nothing about the client.
    let untrusted_proxy = client.proxy.is_none()
        && ["x-forwarded-for", "forwarded", "x-real-ip"]
            .iter()
            .any(|h| request.headers().contains_key(*h));
    request.extensions_mut().insert(RequestContext {
        client: client.addr,
        untrusted_proxy,
        own_origin: host.map(|authority| Origin::own(scheme, &authority)),
    });
    let mut response = next.run(request).await;
    if let Some(origin) = cors {
        let headers = response.headers_mut();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.append(VARY, HeaderValue::from_static("origin"));
    }
    response
}

/// The authority the request is for: its `Host` header, which must agree with the URI's
/// authority if the request line has one (absolute form). `None` when missing or malformed.
fn request_host(request: &Request) -> Option<Authority> {
    let header = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(Authority::parse);
    match request.uri().authority() {
        None => header,
        Some(uri) => {
            let uri = Authority::parse(uri.as_str())?;
            match header {
                Some(header) if header != uri => None,
                _ => Some(uri),
            }
        }
    }
}

/// The answer to a CORS preflight from an origin of `[api] cors_origins`.
fn preflight(origin: HeaderValue) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, POST, DELETE"),
    );
    headers.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, accept"),
    );
    headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    headers.append(VARY, HeaderValue::from_static("origin"));
    response
}

/// The middleware around the admin API's routes (all of `/api/v1/` but `/api/v1/health`).
pub(crate) async fn api_access(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(ctx) = request.extensions().get::<RequestContext>() else {
        tracing::error!("an API request that did not pass the guard; refused");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match guard.api(request.method(), request.headers(), ctx) {
        Ok(()) => next.run(request).await,
        Err(refused) => {
            tracing::debug!(
                client = %ctx.client,
                method = %request.method(),
                path = request.uri().path(),
                status = refused.status.as_u16(),
                "admin API request refused: {}",
                refused.message
            );
            refused.into_response()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn token(text: &str) -> ApiToken {
        ApiToken::try_from(text.to_owned()).unwrap()
    }

    fn guard(api: &str, server: &str) -> Guard {
        let api: ApiConfig = toml::from_str(api).unwrap();
        let server: ServerConfig = toml::from_str(server).unwrap();
        Guard::new(&server, &api, &["127.0.0.1:8080".parse().unwrap()])
    }

    fn ctx(client: &str) -> RequestContext {
        RequestContext {
            client: client.parse().unwrap(),
            untrusted_proxy: false,
            own_origin: Some(Origin::own(
                Scheme::Http,
                &Authority::parse("127.0.0.1:8080").unwrap(),
            )),
        }
    }

    fn headers(list: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in list {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn status(r: Result<(), Refused>) -> u16 {
        r.map_or_else(|e| e.status.as_u16(), |()| 200)
    }

    #[test]
    fn a_token_matches_only_itself_whatever_the_length() {
        let t = token("s3cret-token");
        assert!(t.matches(b"s3cret-token"));
        for other in ["", "s3cret-toke", "s3cret-token!", "S3cret-token", "x"] {
            assert!(!t.matches(other.as_bytes()), "{other}");
        }
        assert!(ApiToken::try_from(String::new()).is_err());
        assert!(ApiToken::try_from("has space".to_owned()).is_err());
        assert_eq!(format!("{t:?}"), "ApiToken(…)");
    }

    #[test]
    fn with_tokens_the_api_wants_a_bearer_and_the_read_token_only_reads() {
        let g = guard("token = \"full-token\"\nread_token = \"read-token\"", "");
        let local = ctx("127.0.0.1:5000");
        let remote = ctx("203.0.113.7:5000");
        let none = HeaderMap::new();
        let full = headers(&[("authorization", "Bearer full-token")]);
        let read = headers(&[("authorization", "bearer read-token")]);
        let wrong = headers(&[("authorization", "Bearer nope")]);
        let basic = headers(&[("authorization", "Basic full-token")]);
        assert_eq!(status(g.api(&Method::GET, &none, &local)), 401);
        assert_eq!(status(g.api(&Method::GET, &wrong, &local)), 401);
        assert_eq!(status(g.api(&Method::GET, &basic, &local)), 401);
        assert_eq!(status(g.api(&Method::GET, &full, &remote)), 200);
        assert_eq!(status(g.api(&Method::POST, &full, &remote)), 200);
        assert_eq!(status(g.api(&Method::HEAD, &read, &remote)), 200);
        assert_eq!(status(g.api(&Method::POST, &read, &remote)), 403);
        assert_eq!(status(g.api(&Method::DELETE, &read, &local)), 403);
    }

    #[test]
    fn without_a_token_the_api_answers_loopback_and_same_origin_changes_only() {
        let g = guard("", "");
        let local = ctx("127.0.0.1:5000");
        let none = HeaderMap::new();
        assert_eq!(status(g.api(&Method::GET, &none, &local)), 200);
        assert_eq!(status(g.api(&Method::GET, &none, &ctx("[::1]:1"))), 200);
        assert_eq!(status(g.api(&Method::GET, &none, &ctx("10.0.0.1:1"))), 403);
        assert_eq!(status(g.api(&Method::POST, &none, &local)), 200);
        let own = headers(&[("origin", "http://127.0.0.1:8080")]);
        let evil = headers(&[("origin", "http://evil.example")]);
        let null = headers(&[("origin", "null")]);
        assert_eq!(status(g.api(&Method::POST, &own, &local)), 200);
        assert_eq!(status(g.api(&Method::DELETE, &evil, &local)), 403);
        assert_eq!(status(g.api(&Method::PATCH, &null, &local)), 403);
        // Reading cross-origin is harmless without CORS: the page cannot see the answer.
        assert_eq!(status(g.api(&Method::GET, &evil, &local)), 200);
        let g = guard("cors_origins = [\"http://evil.example\"]", "");
        assert_eq!(status(g.api(&Method::POST, &evil, &local)), 200);
    }

    #[test]
    fn without_a_token_a_request_forwarded_by_an_unlisted_proxy_is_not_local() {
        // nginx on the same machine, not in trusted_proxies: every internet client would
        // arrive from 127.0.0.1.
        let g = guard("", "");
        let mut via_proxy = ctx("127.0.0.1:5000");
        via_proxy.untrusted_proxy = true;
        let none = HeaderMap::new();
        assert_eq!(status(g.api(&Method::GET, &none, &via_proxy)), 403);
        let g = guard("token = \"a-long-enough-token\"", "");
        let bearer = headers(&[("authorization", "Bearer a-long-enough-token")]);
        assert_eq!(status(g.api(&Method::GET, &bearer, &via_proxy)), 200);
    }

    #[test]
    fn a_websocket_origin_must_be_absent_own_or_listed() {
        let local = ctx("127.0.0.1:5000");
        let g = guard("", "");
        let check = |g: &Guard, origin: Option<&str>| {
            let h = match origin {
                Some(o) => headers(&[("origin", o)]),
                None => HeaderMap::new(),
            };
            status(g.websocket_origin(&h, &local))
        };
        assert_eq!(check(&g, None), 200);
        assert_eq!(check(&g, Some("http://127.0.0.1:8080")), 200);
        assert_eq!(check(&g, Some("https://127.0.0.1:8080")), 403);
        assert_eq!(check(&g, Some("http://app.example")), 403);
        let g = guard("", "allowed_origins = [\"http://app.example\"]");
        assert_eq!(check(&g, Some("http://app.example")), 200);
        assert_eq!(check(&g, Some("http://127.0.0.1:8080")), 200);
        assert_eq!(check(&g, Some("http://other.example")), 403);
        let g = guard("", "allowed_origins = [\"*\"]");
        assert_eq!(check(&g, Some("http://other.example")), 200);
    }
}
