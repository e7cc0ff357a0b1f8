//! Who may connect and what they may touch: the bridge's [`Authenticator`], configured by the
//! `[auth]` table, and the `bridge passwd` command.
//!
//! # Layout
//! - [`password`]: the password file (`user:hash`; argon2id, and mosquitto's `$6$` / `$7$`).
//! - [`passwd`]: `bridge passwd FILE USER`, which writes that file.
//! - [`jwt`]: tokens in the CONNECT password (`[auth.jwt]`), with an optional `acl` claim.
//! - [`acl`]: topic ACLs in mosquitto's `acl_file` format, over [`topics`] (matching, overlap
//!   and cover of filters that may hold `%u` / `%c`, allocation-free).
//! - [`ratelimit`]: failed attempts and checks in flight counted per source address.
//! - Here: [`AuthConfig`], [`setup`], and [`FileAuthenticator`], which puts them together.
//!
//! # Deciding who connects
//! With any authentication configured (a password file, a token key, or the client
//! certificate's CN as user name), a CONNECT is checked in this order:
//! 1. A source address with too many recent failures is refused at once (no hash computed).
//! 2. With `use_identity_as_username`, a verified client certificate's CN is the user name;
//!    no password is needed (as mosquitto).
//! 3. No user name and no password: anonymous, accepted only with `allow_anonymous = true`.
//! 4. Credentials: the attempt takes a slot of its source's budget first (checks in flight
//!    count as failures until they succeed, so guesses sent at once are limited like
//!    sequential ones; at most [`ratelimit::MAX_IN_FLIGHT_PER_SOURCE`] per source even with
//!    the limit off; see [`ratelimit`]); while its source's checks hold the whole budget it
//!    waits for them to end (honest clients behind one NAT logging in together), then takes
//!    a place among the checks admitted at once ([`WAITING_PER_CORE`] waiting per core,
//!    beyond the one running per core), then waits for its turn, all within
//!    [`CHECK_DEADLINE`].
//! 5. A password that is a JWT (its first segment a JOSE header) goes to the token check when
//!    a token key is configured; if that fails and the CONNECT has a user name, the password
//!    file decides (a password-file user's password may look like a token). Any other
//!    password goes to the password file, or, with no password file, to the token check.
//!    Either way it is one check, on a blocking thread, never on the connection's or the
//!    engine's thread.
//!
//! Refusals are CONNACKs and the connection is closed (the broker does the sending):
//! - 0x86 Bad User Name or Password (3.1.1: 4): wrong or missing credentials, or a source
//!   at its failure limit. Wrong credentials are refused
//!   even when anonymous clients are allowed: a client that tried to log in must not silently
//!   become anonymous.
//! - 0x89 Server Busy (3.1.1: 3 Server unavailable): its source's checks in flight did not
//!   leave it a slot, or all the places for waiting checks are taken, or its check did not
//!   finish, within [`CHECK_DEADLINE`]. Not counted as a failure. So a flood of logins, even
//!   wrong ones, waits a bounded time and does not starve real logins from other addresses.
//!
//! Refusals are logged at most once per interval ([`RateLimitedLog`]).
//!
//! With only an `acl_file` and no authentication, user names are not proven, so every client
//! is anonymous for the ACL (the rules before its first `user` line, and the patterns).
//!
//! # Deciding what a connection may touch
//! [`FileAuthenticator::authorize`] asks the token's grants (if its token had an `acl` claim)
//! and then the ACL file (if any); both must allow. With no ACL file, an authenticated client
//! may do everything. Sessions belong to the user who made them
//! ([`Authenticator::enforces_ownership`] keeps its default, true).
//!
//! # Reloading
//! [`FileAuthenticator::reload`] reads the password file, the ACL file and the token key again
//! (on SIGHUP) and swaps them in at once; on any error the old ones stay.

mod acl;
mod jwt;
mod passwd;
mod password;
mod ratelimit;
mod topics;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use broker::auth::{Access, Authentication, Grants, Identity};
use broker::{Authenticator, ConnectionInfo, RateLimitedLog};
use bytes::Bytes;
use protocol::{Connect, ReasonCode};
use serde::Deserialize;
use tokio::sync::Semaphore;

use self::acl::Acl;
pub(crate) use self::jwt::JwtConfig;
use self::jwt::{is_jwt, JwtVerifier};
pub(crate) use self::passwd::{run as run_command, Command};
use self::password::PasswordFile;
use self::ratelimit::{Attempt, FailureLimiter, Refused, Source};

/// Checks that may wait for a verification thread, per core, beyond the one running per core:
/// about what one core verifies within [`CHECK_DEADLINE`] (an argon2id check costs some
/// 20-40 ms here), so that a fleet reconnecting at once waits its turn instead of being
/// refused while the queue still moves. Past them a CONNECT is refused at once as busy: a
/// queue a flood can fill without end only makes real logins wait behind it.
const WAITING_PER_CORE: usize = 128;

/// How long an attempt waits between two tries for a slot of its source's budget when its
/// source's checks in flight hold all of it (they may all succeed and give their slots back).
const SOURCE_RETRY: Duration = Duration::from_millis(25);

/// How long a CONNECT's credentials may take, waiting included, before it is refused as busy.
const CHECK_DEADLINE: Duration = Duration::from_secs(5);

/// The `[auth]` table. Every key is optional; with none, anyone may connect and do anything.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct AuthConfig {
    /// `user:hash` lines (see [`password`]); written by `bridge passwd` or mosquitto_passwd.
    pub(crate) password_file: Option<PathBuf>,
    /// Topic ACLs in mosquitto's `acl_file` format (see [`acl`]).
    pub(crate) acl_file: Option<PathBuf>,
    /// Whether clients sending no credentials are accepted once authentication is configured.
    pub(crate) allow_anonymous: bool,
    /// Failed logins allowed per source address (IPv4 address or IPv6 /64) in
    /// `failed_attempts_window_secs`; past it, that source is refused at once until the
    /// window ends. 0 turns the limit off. Checks still running count against it: past it, a
    /// login from that source waits for them to end (within the check deadline).
    pub(crate) max_failed_attempts: u32,
    /// The window of `max_failed_attempts`, in seconds, from the first failure.
    pub(crate) failed_attempts_window_secs: u64,
    /// `[auth.jwt]`: tokens in the CONNECT password.
    pub(crate) jwt: Option<JwtConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            password_file: None,
            acl_file: None,
            allow_anonymous: false,
            max_failed_attempts: 5,
            failed_attempts_window_secs: 60,
            jwt: None,
        }
    }
}

/// A file or setting of `[auth]` that cannot be used. Start-up stops on it (exit 2); a reload
/// keeps the previous files.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of a password or ACL file is wrong.
    #[error("{}:{line}: {why}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// A token key file holds no usable key.
    #[error("{}: {why}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A setting cannot work.
    #[error("{0}")]
    Config(String),
}

impl AuthError {
    fn read(path: &Path, source: std::io::Error) -> AuthError {
        AuthError::Read {
            path: path.to_path_buf(),
            source,
        }
    }

    fn line(path: &Path, line: usize, why: String) -> AuthError {
        AuthError::Line {
            path: path.to_path_buf(),
            line,
            why,
        }
    }
}

/// What the bridge runs with.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    /// For the broker.
    pub(crate) authenticator: Arc<dyn Authenticator>,
    /// The same, when `[auth]` configures anything: [`FileAuthenticator::reload`] on SIGHUP.
    pub(crate) files: Option<Arc<FileAuthenticator>>,
}

impl Setup {
    /// Whether clients must prove who they are (anonymous ones are refused), for the
    /// start-up warning about open listeners.
    pub(crate) fn requires_credentials(&self) -> bool {
        self.files
            .as_ref()
            .is_some_and(|f| f.authenticates() && !f.config.allow_anonymous)
    }
}

/// Builds the authenticator `[auth]` asks for: [`broker::AllowAll`] when it asks for nothing.
/// `use_identity_as_username` is `[tls] use_identity_as_username`.
pub(crate) fn setup(
    config: &AuthConfig,
    use_identity_as_username: bool,
) -> Result<Setup, AuthError> {
    let nothing = config.password_file.is_none()
        && config.acl_file.is_none()
        && config.jwt.is_none()
        && !use_identity_as_username;
    if nothing {
        return Ok(Setup {
            authenticator: Arc::new(broker::AllowAll),
            files: None,
        });
    }
    let files = Arc::new(FileAuthenticator::new(
        config.clone(),
        use_identity_as_username,
    )?);
    if !files.authenticates() {
        tracing::warn!(
            "[auth] acl_file is set without any authentication (password_file, [auth.jwt] or \
             [tls] use_identity_as_username): user names are unproven, so every client gets \
             the ACL's anonymous rules"
        );
    }
    Ok(Setup {
        authenticator: files.clone(),
        files: Some(files),
    })
}

/// The files and keys in force; replaced whole by a reload.
#[derive(Debug)]
struct Loaded {
    passwords: Option<PasswordFile>,
    acl: Option<Acl>,
    jwt: Option<JwtVerifier>,
}

impl Loaded {
    fn load(config: &AuthConfig) -> Result<Loaded, AuthError> {
        Ok(Loaded {
            passwords: config
                .password_file
                .as_deref()
                .map(PasswordFile::load)
                .transpose()?,
            acl: config.acl_file.as_deref().map(Acl::load).transpose()?,
            jwt: config.jwt.as_ref().map(JwtVerifier::load).transpose()?,
        })
    }
}

/// The bridge's authenticator: password file, tokens, client certificates, ACL file.
#[derive(Debug)]
pub(crate) struct FileAuthenticator {
    config: AuthConfig,
    use_identity_as_username: bool,
    /// Read once per call and never held across an await; swapped whole by a reload.
    loaded: RwLock<Arc<Loaded>>,
    /// Failed attempts and checks in flight per source address.
    failures: Arc<Mutex<FailureLimiter>>,
    /// Password and token checks running at once, at most one per core.
    verifications: Arc<Semaphore>,
    /// Checks admitted (waiting for `verifications` or running): per core, one running and
    /// [`WAITING_PER_CORE`] waiting. A place is taken without waiting, or the CONNECT refused.
    admitted: Arc<Semaphore>,
    /// How long a check may take, waiting included ([`CHECK_DEADLINE`]).
    deadline: Duration,
    /// One log line per interval for refused connections.
    refusals: Mutex<RateLimitedLog>,
}

impl FileAuthenticator {
    /// Reads the files `config` names.
    pub(crate) fn new(
        config: AuthConfig,
        use_identity_as_username: bool,
    ) -> Result<FileAuthenticator, AuthError> {
        if config.max_failed_attempts > 0 && config.failed_attempts_window_secs == 0 {
            return Err(AuthError::Config(
                "[auth] failed_attempts_window_secs must be at least 1 (max_failed_attempts = 0 \
                 turns the limit off)"
                    .to_owned(),
            ));
        }
        let loaded = Loaded::load(&config)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(FileAuthenticator {
            failures: Arc::new(Mutex::new(FailureLimiter::new(
                config.max_failed_attempts,
                Duration::from_secs(config.failed_attempts_window_secs),
            ))),
            config,
            use_identity_as_username,
            loaded: RwLock::new(Arc::new(loaded)),
            verifications: Arc::new(Semaphore::new(cores)),
            admitted: Arc::new(Semaphore::new(cores.saturating_mul(1 + WAITING_PER_CORE))),
            deadline: CHECK_DEADLINE,
            refusals: Mutex::new(RateLimitedLog::default()),
        })
    }

    /// Reads the password file, the ACL file and the token key again and puts them in force
    /// together; on any error nothing changes. Blocking file I/O: call it where that is fine
    /// (a signal handler task, `spawn_blocking`).
    pub(crate) fn reload(&self) -> Result<(), AuthError> {
        let loaded = Arc::new(Loaded::load(&self.config)?);
        let users = loaded.passwords.as_ref().map_or(0, PasswordFile::len);
        *self.loaded.write().unwrap_or_else(PoisonError::into_inner) = loaded;
        tracing::info!(users, "[auth] files reloaded");
        Ok(())
    }

    /// Whether any way to prove an identity is configured.
    fn authenticates(&self) -> bool {
        self.config.password_file.is_some()
            || self.config.jwt.is_some()
            || self.use_identity_as_username
    }

    fn current(&self) -> Arc<Loaded> {
        Arc::clone(&self.loaded.read().unwrap_or_else(PoisonError::into_inner))
    }

    async fn check(
        &self,
        connect: &Connect,
        info: &ConnectionInfo,
    ) -> Result<Identity, ReasonCode> {
        if !self.authenticates() {
            return Ok(Identity::default());
        }
        let source = info.peer.map(|peer| Source::from(peer.ip()));
        if let Some(source) = source {
            let blocked = lock(&self.failures).blocked(source, Instant::now());
            if blocked {
                self.refused(connect, info, "too many failed attempts from this address");
                return Err(ReasonCode::BadUserNameOrPassword);
            }
        }
        if self.use_identity_as_username {
            if let Some(name) = &info.certificate_name {
                return Ok(Identity {
                    username: Some(Arc::from(name.as_str())),
                    ..Identity::default()
                });
            }
        }
        let username = connect.username.as_deref();
        if connect.password.is_none() && username.is_none() {
            if self.config.allow_anonymous {
                return Ok(Identity::default());
            }
            self.refused(connect, info, "no credentials (allow_anonymous is off)");
            return Err(ReasonCode::BadUserNameOrPassword);
        }
        // Checks in flight hold slots of their source's budget, so that guesses sent at once
        // are limited like guesses sent one after another. Honest clients behind one address
        // (a NAT, a gateway) that log in together wait for those checks to end (a success
        // gives its slot back) rather than being refused, within the deadline.
        let give_up = Instant::now() + self.deadline;
        let attempt = loop {
            match FailureLimiter::admit(&self.failures, source, Instant::now()) {
                Ok(attempt) => break attempt,
                Err(Refused::Limited) => {
                    self.refused(connect, info, "too many failed attempts from this address");
                    return Err(ReasonCode::BadUserNameOrPassword);
                }
                Err(Refused::Busy) if Instant::now() + SOURCE_RETRY < give_up => {
                    tokio::time::sleep(SOURCE_RETRY).await;
                }
                Err(Refused::Busy) => {
                    self.refused(
                        connect,
                        info,
                        "this address's checks in flight did not end in time",
                    );
                    return Err(ReasonCode::ServerBusy);
                }
            }
        };
        let Some(password) = &connect.password else {
            attempt.end(true);
            self.refused(connect, info, "a user name without a password");
            return Err(ReasonCode::BadUserNameOrPassword);
        };
        match self
            .verify(username, password.clone(), attempt, give_up)
            .await
        {
            Ok(identity) => Ok(identity),
            Err(Failure::Wrong(why)) => {
                self.refused(connect, info, &why);
                Err(ReasonCode::BadUserNameOrPassword)
            }
            Err(Failure::Busy(why)) => {
                self.refused(connect, info, why);
                Err(ReasonCode::ServerBusy)
            }
        }
    }

    /// Checks a password or a token on a blocking thread, within the deadline; `attempt`
    /// ends there, counted as a failure or not.
    async fn verify(
        &self,
        username: Option<&str>,
        password: Bytes,
        attempt: Attempt,
        give_up: Instant,
    ) -> Result<Identity, Failure> {
        let loaded = self.current();
        let route = match Route::choose(&loaded, username.is_some(), &password) {
            Ok(route) => route,
            Err(why) => {
                attempt.end(true);
                return Err(Failure::Wrong(why.to_owned()));
            }
        };
        let Ok(place) = Arc::clone(&self.admitted).try_acquire_owned() else {
            return Err(Failure::Busy("too many checks waiting"));
        };
        let username = username.map(str::to_owned);
        let verifications = Arc::clone(&self.verifications);
        let check = async move {
            let permit = verifications
                .acquire_owned()
                .await
                .map_err(|_| Failure::Busy("shutting down"))?;
            // Its failures cannot have grown past the limit while it waited (its slot counted),
            // but the turn is the last moment to refuse without computing a hash.
            if attempt.blocked() {
                return Err(Failure::Wrong(
                    "too many failed attempts from this address".to_owned(),
                ));
            }
            let work = tokio::task::spawn_blocking(move || {
                // Held until the work is done, even if the connection gives up waiting.
                let _held = (permit, place);
                let outcome = route.run(&loaded, username, &password);
                attempt.end(outcome.is_err());
                outcome.map_err(Failure::Wrong)
            });
            work.await
                .map_err(|e| Failure::Wrong(format!("the check failed: {e}")))?
        };
        tokio::time::timeout(give_up.saturating_duration_since(Instant::now()), check)
            .await
            .map_err(|_| Failure::Busy("the check did not finish in time"))?
    }

    fn refused(&self, connect: &Connect, info: &ConnectionInfo, why: &str) {
        let due = lock(&self.refusals).hit(Instant::now());
        if let Some(count) = due {
            tracing::warn!(
                peer = ?info.peer,
                client_id = ?connect.client_id,
                username = ?connect.username,
                refused = count,
                "connection refused: {why} (one line per interval; `refused` counts them)"
            );
        }
    }
}

/// Why a check refused a CONNECT.
#[derive(Debug)]
enum Failure {
    /// Wrong or unusable credentials (0x86), counted against the source; why, for the log.
    Wrong(String),
    /// No check could be made in time (0x89), not counted; why, for the log.
    Busy(&'static str),
}

/// Which check a password goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// The token key alone.
    Token,
    /// The token key, then, if the token is refused, the password file (the password of a
    /// password-file user may look like a token).
    TokenThenPassword,
    /// The password file.
    Password,
}

impl Route {
    /// Where `password` goes with the files `loaded`; the error says why it goes nowhere.
    fn choose(loaded: &Loaded, has_username: bool, password: &[u8]) -> Result<Route, &'static str> {
        let passwords = loaded.passwords.is_some();
        match (loaded.jwt.is_some(), passwords) {
            (true, false) => Ok(Route::Token),
            (true, true) if is_jwt(password) => Ok(if has_username {
                Route::TokenThenPassword
            } else {
                Route::Token
            }),
            (_, true) if has_username => Ok(Route::Password),
            (_, true) => Err("a password without a user name"),
            (false, false) => Err("a password, but no password file or token key is configured"),
        }
    }

    /// Runs the check. Slow on purpose (argon2): call it on a blocking thread.
    fn run(
        self,
        loaded: &Loaded,
        username: Option<String>,
        password: &[u8],
    ) -> Result<Identity, String> {
        let by_token = || {
            let jwt = loaded.jwt.as_ref().ok_or("no token key")?;
            let text = std::str::from_utf8(password).map_err(|_| "token is not UTF-8")?;
            jwt.verify(text, username.as_deref())
        };
        let by_password = || {
            let (Some(file), Some(user)) = (&loaded.passwords, username.as_deref()) else {
                return Err("no password file or no user name".to_owned());
            };
            // An unknown user costs a stand-in check: timing does not tell names apart.
            if file.verify(user, password) {
                Ok(Identity {
                    username: Some(Arc::from(user)),
                    ..Identity::default()
                })
            } else {
                Err("wrong password or unknown user".to_owned())
            }
        };
        match self {
            Route::Token => by_token(),
            Route::Password => by_password(),
            Route::TokenThenPassword => by_token().or_else(|token| {
                by_password().map_err(|password| format!("{token}; as a password: {password}"))
            }),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether a token's grants allow `access`.
fn granted(grants: &Grants, access: Access<'_>) -> bool {
    let none = topics::Vars::default();
    match access {
        Access::Publish(topic) => grants
            .publish
            .iter()
            .any(|f| topics::matches(topics::plain(f), none, topic)),
        Access::Read(topic) => grants
            .subscribe
            .iter()
            .any(|f| topics::matches(topics::plain(f), none, topic)),
        Access::Subscribe(filter) => grants
            .subscribe
            .iter()
            .any(|f| topics::overlaps(topics::plain(f), none, filter)),
    }
}

impl Authenticator for FileAuthenticator {
    fn authenticate<'a>(
        &'a self,
        connect: &'a Connect,
        info: &'a ConnectionInfo,
    ) -> Authentication<'a> {
        Box::pin(self.check(connect, info))
    }

    fn authorize(&self, who: &Identity, client_id: &str, access: Access<'_>) -> bool {
        if let Some(grants) = &who.grants {
            if !granted(grants, access) {
                return false;
            }
        }
        let loaded = self.loaded.read().unwrap_or_else(PoisonError::into_inner);
        match &loaded.acl {
            None => true,
            Some(acl) => acl.allows(who.username.as_deref(), client_id, access),
        }
    }
}

#[cfg(test)]
mod tests;
