//! Who may connect and what they may touch: the bridge's [`Authenticator`], configured by the
//! `[auth]` table, and the `bridge passwd` command.
//!
//! # Layout
//! - [`password`]: the password file (`user:hash`; argon2id, and mosquitto's `$6$` / `$7$`).
//! - [`passwd`]: `bridge passwd FILE USER`, which writes that file.
//! - [`jwt`]: tokens in the CONNECT password (`[auth.jwt]`), with an optional `acl` claim.
//! - [`acl`]: topic ACLs in mosquitto's `acl_file` format, over [`topics`] (matching, overlap
//!   and cover of filters that may hold `%u` / `%c`, allocation-free).
//! - [`ratelimit`]: failed attempts counted per source address.
//! - Here: [`AuthConfig`], [`setup`], and [`FileAuthenticator`], which puts them together.
//!
//! # Deciding who connects
//! With any authentication configured (a password file, a token key, or the client
//! certificate's CN as user name), a CONNECT is checked in this order:
//! 1. A source address with too many recent failures is refused at once (no hash computed).
//! 2. With `use_identity_as_username`, a verified client certificate's CN is the user name;
//!    no password is needed (as mosquitto).
//! 3. No user name and no password: anonymous, accepted only with `allow_anonymous = true`.
//! 4. A password shaped like a JWT goes to the token check when a token key is configured (to
//!    it alone when there is no password file); any other password to the password file.
//!    Password and token checks run on a blocking thread, a bounded number at once (one per
//!    core), never on the connection's or the engine's thread.
//!
//! A refusal is CONNACK 0x86 Bad User Name or Password (3.1.1: 4) and the connection is
//! closed (the broker does the sending). Wrong credentials are refused even when anonymous
//! clients are allowed: a client that tried to log in must not silently become anonymous.
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
use self::jwt::{looks_like_jwt, JwtVerifier};
pub(crate) use self::passwd::{run as run_command, Command};
use self::password::PasswordFile;
use self::ratelimit::{FailureLimiter, Source};

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
    /// window ends. 0 turns the limit off.
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
    #[allow(dead_code)] // read once SIGHUP reloads the files (wired in main.rs, issue 11)
    pub(crate) files: Option<Arc<FileAuthenticator>>,
}

impl Setup {
    /// Whether clients must prove who they are (anonymous ones are refused), for the
    /// start-up warning about open listeners.
    #[allow(dead_code)] // for the start-up warning (main.rs, issue 11)
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
    /// Failed attempts per source address.
    failures: Mutex<FailureLimiter>,
    /// Password and token checks running at once, at most one per core.
    verifications: Arc<Semaphore>,
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
            failures: Mutex::new(FailureLimiter::new(
                config.max_failed_attempts,
                Duration::from_secs(config.failed_attempts_window_secs),
            )),
            config,
            use_identity_as_username,
            loaded: RwLock::new(Arc::new(loaded)),
            verifications: Arc::new(Semaphore::new(cores)),
            refusals: Mutex::new(RateLimitedLog::default()),
        })
    }

    /// Reads the password file, the ACL file and the token key again and puts them in force
    /// together; on any error nothing changes. Blocking file I/O: call it where that is fine
    /// (a signal handler task, `spawn_blocking`).
    #[allow(dead_code)] // called on SIGHUP once main.rs wires it (issue 11)
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
        let outcome = match (&connect.password, username) {
            (None, None) if self.config.allow_anonymous => return Ok(Identity::default()),
            (None, None) => {
                self.refused(connect, info, "no credentials (allow_anonymous is off)");
                return Err(ReasonCode::BadUserNameOrPassword);
            }
            (None, Some(_)) => Err("a user name without a password".to_owned()),
            (Some(password), _) => self.verify(username, password.clone()).await,
        };
        outcome.map_err(|why| {
            if let Some(source) = source {
                lock(&self.failures).failed(source, Instant::now());
            }
            self.refused(connect, info, &why);
            ReasonCode::BadUserNameOrPassword
        })
    }

    /// Checks a password or a token on a blocking thread; the error says why, for the log.
    async fn verify(&self, username: Option<&str>, password: Bytes) -> Result<Identity, String> {
        let loaded = self.current();
        let token =
            loaded.jwt.is_some() && (loaded.passwords.is_none() || looks_like_jwt(&password));
        if !token {
            if loaded.passwords.is_none() {
                return Err("a password, but no password file or token key is configured".into());
            }
            if username.is_none() {
                return Err("a password without a user name".to_owned());
            }
        }
        let username = username.map(str::to_owned);
        let permit = Arc::clone(&self.verifications)
            .acquire_owned()
            .await
            .map_err(|_| "shutting down".to_owned())?;
        let work = tokio::task::spawn_blocking(move || {
            // Held until the work is done, even if the connection gives up waiting.
            let _permit = permit;
            if token {
                let jwt = loaded.jwt.as_ref().ok_or("no token key")?;
                let text = std::str::from_utf8(&password).map_err(|_| "token is not UTF-8")?;
                return jwt.verify(text, username.as_deref());
            }
            let (Some(file), Some(user)) = (&loaded.passwords, username) else {
                return Err("no password file or no user name".to_owned());
            };
            if file.verify(&user, &password) {
                Ok(Identity {
                    username: Some(Arc::from(user)),
                    ..Identity::default()
                })
            } else {
                Err("wrong password or unknown user".to_owned())
            }
        });
        work.await.map_err(|e| format!("the check failed: {e}"))?
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
