//! The password file: `user:hash` lines, argon2id as written by `bridge passwd`, and the
//! `$6$` / `$7$` hashes of mosquitto's `mosquitto_passwd`, so a mosquitto file works unchanged.
//!
//! The hash formats, as mosquitto writes and checks them (`apps/mosquitto_passwd`,
//! `src/security_default.c`):
//! - `$argon2id$v=19$m=...,t=...,p=...$SALT$HASH`: a PHC string (argon2i and argon2d are
//!   read too); what `bridge passwd` writes.
//! - `$7$ITERATIONS$SALT$HASH`: PBKDF2-HMAC-SHA512 of the password with SALT, ITERATIONS
//!   rounds, 64 bytes; SALT and HASH in standard base64 (mosquitto_passwd's default).
//! - `$6$SALT$HASH`: SHA-512 of the password followed by SALT (`mosquitto_passwd -H sha512`).
//!
//! Lines are `user:hash` (blanks around either are trimmed, anything after a second `:` is
//! ignored, as mosquitto does); blank lines and lines starting with `#` are skipped. Plain-text
//! passwords, unknown hash formats, duplicate users and lines without `:` are refused when the
//! file is read, naming the line: a typo must not silently lock a user out or let one in.
//!
//! Checking a password is deliberately slow (argon2), so it runs on a blocking thread (see the
//! module above). An unknown user is checked against a stand-in hash as costly as the file's
//! costliest entry (argon2 with the file's strongest parameters, else the `$7$` entry with the
//! most iterations, else `$6$`), so the time taken does not tell which user names exist, even
//! in a mosquitto file to which `bridge passwd` added argon2id users; comparisons are
//! constant-time.

use std::collections::HashMap;
use std::path::Path;

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use super::AuthError;

/// Standard base64, padding optional: mosquitto writes it padded.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The length of a `$6$` / `$7$` hash (SHA-512).
const SHA512_LEN: usize = 64;

/// A hash of a password, parsed once when the file is read.
#[derive(Debug, Clone)]
enum StoredHash {
    /// A PHC string of argon2id (or argon2i / argon2d).
    Argon2(Box<PasswordHash>),
    /// `$6$`: SHA-512(password ‖ salt).
    Sha512 {
        salt: Vec<u8>,
        hash: [u8; SHA512_LEN],
    },
    /// `$7$`: PBKDF2-HMAC-SHA512(password, salt, iterations), 64 bytes.
    Pbkdf2 {
        iterations: u32,
        salt: Vec<u8>,
        hash: [u8; SHA512_LEN],
    },
}

/// A parsed password file.
pub(crate) struct PasswordFile {
    users: HashMap<Box<str>, StoredHash>,
    /// What an unknown user is checked against: a hash of the same kind and cost as the
    /// file's costliest entry (so timing does not reveal which names exist).
    decoy: StoredHash,
}

impl std::fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the hashes: they are offline-guessable.
        f.debug_struct("PasswordFile")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl PasswordFile {
    /// Reads and parses the file at `path`.
    pub(crate) fn load(path: &Path) -> Result<PasswordFile, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|e| AuthError::read(path, e))?;
        PasswordFile::parse(&text).map_err(|(line, why)| AuthError::line(path, line, why))
    }

    /// Parses a file's text; an error names the line (1-based) and what is wrong.
    fn parse(text: &str) -> Result<PasswordFile, (usize, String)> {
        let mut users = HashMap::new();
        let mut costliest: Option<(Cost, StoredHash)> = None;
        for (i, line) in text.lines().enumerate() {
            let number = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, rest)) = line.split_once(':') else {
                return Err((number, "expected `user:hash`".to_owned()));
            };
            let user = user.trim();
            let hash = rest.split(':').next().unwrap_or_default().trim();
            if user.is_empty() {
                return Err((number, "empty user name".to_owned()));
            }
            let hash = StoredHash::parse(hash).map_err(|why| (number, format!("{user}: {why}")))?;
            let cost = hash.cost();
            if costliest.as_ref().is_none_or(|(c, _)| cost > *c) {
                costliest = Some((cost, hash.decoy()));
            }
            if users.insert(Box::<str>::from(user), hash).is_some() {
                return Err((number, format!("user {user:?} appears twice")));
            }
        }
        let decoy = match costliest {
            Some((_, decoy)) => decoy,
            None => StoredHash::parse(DEFAULT_DECOY).map_err(|why| (0, why))?,
        };
        Ok(PasswordFile { users, decoy })
    }

    /// Whether `password` is `user`'s. Slow on purpose: call it on a blocking thread.
    pub(crate) fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(hash) => hash.verify(password),
            None => {
                // Same work as for a known user, then refuse.
                let _ = self.decoy.verify(password);
                false
            }
        }
    }

    /// How many users the file holds.
    pub(crate) fn len(&self) -> usize {
        self.users.len()
    }
}

/// The stand-in hash for an empty file: argon2id with the defaults `bridge passwd` uses, of
/// a password no one knows.
const DEFAULT_DECOY: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$ZGVjb3lkZWNveWRlY295$Oq3ML0dNbXxzL3bvgDgr0n5pNBCLpfzsUVCqU8V8xu4";

/// How costly a hash is to check, comparable across kinds: argon2 above `$7$` above `$6$`,
/// then by the work its parameters ask (argon2: memory × passes, then lanes; `$7$`:
/// iterations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cost {
    Sha512,
    Pbkdf2(u32),
    Argon2 { work: u64, lanes: u32 },
}

impl StoredHash {
    fn parse(text: &str) -> Result<StoredHash, String> {
        if text.starts_with("$argon2") {
            let hash = PasswordHash::new(text).map_err(|e| format!("invalid argon2 hash: {e}"))?;
            // The parameters are checked now, not at the first login.
            argon2::Params::try_from(&hash).map_err(|e| format!("invalid argon2 hash: {e}"))?;
            argon2::Algorithm::try_from(hash.algorithm.as_str())
                .map_err(|e| format!("invalid argon2 hash: {e}"))?;
            if hash.salt.is_none() || hash.hash.is_none() {
                return Err("invalid argon2 hash: no salt or no hash".to_owned());
            }
            return Ok(StoredHash::Argon2(Box::new(hash)));
        }
        let fields: Vec<&str> = text.split('$').collect();
        match fields.as_slice() {
            ["", "6", salt, hash] => Ok(StoredHash::Sha512 {
                salt: decode_salt(salt)?,
                hash: decode_hash(hash)?,
            }),
            ["", "7", iterations, salt, hash] => Ok(StoredHash::Pbkdf2 {
                iterations: iterations
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("invalid iteration count {iterations:?}"))?,
                salt: decode_salt(salt)?,
                hash: decode_hash(hash)?,
            }),
            _ if text.is_empty() => Err("no password hash".to_owned()),
            _ => Err(
                "not a supported password hash (expected $argon2id$... as written by \
                 `bridge passwd`, or mosquitto_passwd's $7$ or $6$); plain-text passwords are \
                 not accepted"
                    .to_owned(),
            ),
        }
    }

    fn cost(&self) -> Cost {
        match self {
            StoredHash::Argon2(hash) => match argon2::Params::try_from(&**hash) {
                Ok(p) => Cost::Argon2 {
                    work: u64::from(p.m_cost()) * u64::from(p.t_cost()),
                    lanes: p.p_cost(),
                },
                // Checked when the file was read; never here.
                Err(_) => Cost::Argon2 { work: 0, lanes: 0 },
            },
            StoredHash::Sha512 { .. } => Cost::Sha512,
            StoredHash::Pbkdf2 { iterations, .. } => Cost::Pbkdf2(*iterations),
        }
    }

    /// A hash of the same kind and cost, of no known password.
    fn decoy(&self) -> StoredHash {
        match self {
            StoredHash::Argon2(hash) => {
                let mut decoy = hash.clone();
                if let Some(output) = &hash.hash {
                    // Another output of the same length: no password hashes to it knowingly.
                    let zeros = vec![0u8; output.len()];
                    if let Ok(o) = argon2::password_hash::phc::Output::new(&zeros) {
                        decoy.hash = Some(o);
                    }
                }
                StoredHash::Argon2(decoy)
            }
            StoredHash::Sha512 { salt, .. } => StoredHash::Sha512 {
                salt: salt.clone(),
                hash: [0; SHA512_LEN],
            },
            StoredHash::Pbkdf2 {
                iterations, salt, ..
            } => StoredHash::Pbkdf2 {
                iterations: *iterations,
                salt: salt.clone(),
                hash: [0; SHA512_LEN],
            },
        }
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            StoredHash::Argon2(hash) => {
                Argon2::default().verify_password(password, &**hash).is_ok()
            }
            StoredHash::Sha512 { salt, hash } => {
                let computed = Sha512::new()
                    .chain_update(password)
                    .chain_update(salt)
                    .finalize();
                bool::from(computed.as_slice().ct_eq(hash))
            }
            StoredHash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => {
                let mut computed = [0u8; SHA512_LEN];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut computed);
                bool::from(computed.ct_eq(hash))
            }
        }
    }
}

fn decode_salt(text: &str) -> Result<Vec<u8>, String> {
    match BASE64.decode(text) {
        Ok(salt) if !salt.is_empty() => Ok(salt),
        _ => Err(format!("invalid salt {text:?} (expected base64)")),
    }
}

fn decode_hash(text: &str) -> Result<[u8; SHA512_LEN], String> {
    BASE64
        .decode(text)
        .ok()
        .and_then(|bytes| <[u8; SHA512_LEN]>::try_from(bytes).ok())
        .ok_or_else(|| "invalid hash (expected 64 bytes in base64)".to_owned())
}

/// Hashes `password` for a password file: argon2id with the crate's defaults (OWASP's
/// minimum: 19 MiB, 2 passes, 1 lane) and a random salt, as a PHC string.
pub(crate) fn hash_password(password: &[u8]) -> Result<String, String> {
    Argon2::default()
        .hash_password(password)
        .map(|hash| hash.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by mosquitto_passwd 2.0.11: `-b -c FILE alice secret` and
    // `-H sha512 -b -c FILE bob hunter2`.
    const MOSQUITTO: &str = "\
alice:$7$101$68rxmHhBi37mWrty$/tKktHyv/wbLk7hEZ0Uf28VfEjyn5dORQOd6BxYCxfbpvpmoceGeWeT4Qi7Uy+oAEBX8bLrbqzLffmLIrHtePw==
bob:$6$UbjCiiRw5VSBXBQJ$xaCk7RKRVjMKlqNN69TGmMgBioux1z7OaC8/zkW439pnVOSJkF6YAUir2NlE22SuEjI5yiwAy14PiPPQV0j1SQ==
";

    fn file(text: &str) -> PasswordFile {
        match PasswordFile::parse(text) {
            Ok(f) => f,
            Err((line, why)) => panic!("line {line}: {why}"),
        }
    }

    #[test]
    fn mosquitto_passwd_hashes_are_verified() {
        let f = file(MOSQUITTO);
        assert!(f.verify("alice", b"secret"));
        assert!(!f.verify("alice", b"Secret"));
        assert!(!f.verify("alice", b""));
        assert!(f.verify("bob", b"hunter2"));
        assert!(!f.verify("bob", b"secret"));
        assert!(!f.verify("carol", b"secret"));
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn argon2id_hashes_round_trip_and_are_salted() {
        let one = hash_password(b"pw").expect("hashed");
        let two = hash_password(b"pw").expect("hashed");
        assert!(one.starts_with("$argon2id$"), "{one}");
        assert_ne!(one, two, "a random salt each time");
        let f = file(&format!("# a comment\n\n  dave : {one} \nerin:{two}\n"));
        assert!(f.verify("dave", b"pw"));
        assert!(!f.verify("dave", b"pW"));
        assert!(f.verify("erin", b"pw"));
        assert!(!f.verify("nobody", b"pw"));
    }

    #[test]
    fn the_decoy_is_of_the_costliest_kind_and_matches_nothing() {
        let f = file(MOSQUITTO);
        assert!(matches!(
            f.decoy,
            StoredHash::Pbkdf2 {
                iterations: 101,
                ..
            }
        ));
        assert!(!f.decoy.verify(b"secret"));
        let empty = file("# nobody yet\n");
        assert!(matches!(empty.decoy, StoredHash::Argon2(_)));
        assert!(!empty.verify("anyone", b""));
        let argon = file(&format!("u:{}\n", hash_password(b"x").expect("hashed")));
        assert!(matches!(argon.decoy, StoredHash::Argon2(_)));
        assert!(!argon.decoy.verify(b"x"));
    }

    #[test]
    fn bad_lines_are_refused_with_their_line_number() {
        for (text, line, needle) in [
            ("alice:secret\n", 1, "plain-text"),
            ("# x\nalice\n", 2, "user:hash"),
            (":$6$c2FsdA==$AAAA\n", 1, "empty user name"),
            ("a:$6$c2FsdA==$AAAA\n", 1, "64 bytes"),
            ("a:$7$0$c2FsdA==$AAAA\n", 1, "iteration"),
            ("a:$6$!!$AAAA\n", 1, "salt"),
            (
                "a:$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$AAAA\n",
                1,
                "argon2",
            ),
            ("a:\n", 1, "no password hash"),
        ] {
            match PasswordFile::parse(text) {
                Ok(_) => panic!("accepted: {text:?}"),
                Err((n, why)) => {
                    assert_eq!(n, line, "{text:?}: {why}");
                    assert!(why.contains(needle), "{text:?}: {why}");
                }
            }
        }
        let bob_hash = MOSQUITTO.lines().nth(1).and_then(|l| l.split_once(':'));
        let twice = format!(
            "{MOSQUITTO}alice:{}\n",
            bob_hash.map(|(_, h)| h).unwrap_or_default()
        );
        match PasswordFile::parse(&twice) {
            Err((3, why)) => assert!(why.contains("twice"), "{why}"),
            other => panic!("duplicate accepted or wrong line: {:?}", other.err()),
        }
    }

    /// [review] A mosquitto file migrated by adding users with `bridge passwd` starts with a
    /// `$7$` line (about 1 ms to check) and goes on with argon2id lines (about 20 ms): an
    /// unknown user is checked against the first entry's kind only, so the time of a refusal
    /// tells the argon2 users from names that do not exist. Measured on the debug build: 20-46
    /// ms for carol (argon2id), 1.6-3.3 ms for an unknown name. The stand-in must cost as
    /// much as the costliest entry.
    #[test]
    fn an_unknown_user_costs_as_much_as_the_costliest_entry_of_a_mixed_file() {
        let argon2 = hash_password(b"carol-pw").expect("hash");
        let text = format!(
            "alice:$7$101$68rxmHhBi37mWrty$/tKktHyv/wbLk7hEZ0Uf28VfEjyn5dORQOd6BxYCxfbpvpmoceGeWeT4Qi7Uy+oAEBX8bLrbqzLffmLIrHtePw==\ncarol:{argon2}\n"
        );
        let file = PasswordFile::parse(&text).expect("parses");
        assert!(
            matches!(file.decoy, StoredHash::Argon2(_)),
            "unknown users are checked with a $7$ stand-in while carol costs an argon2id check"
        );
    }

    #[test]
    fn the_decoy_has_the_strongest_parameters_of_its_kind() {
        let pbkdf2 = |user: &str, iterations: u32| {
            format!(
                "{user}:$7${iterations}$68rxmHhBi37mWrty$/tKktHyv/wbLk7hEZ0Uf28VfEjyn5dORQOd6BxYCxfbpvpmoceGeWeT4Qi7Uy+oAEBX8bLrbqzLffmLIrHtePw==\n"
            )
        };
        let f = file(&format!(
            "{}{}{}",
            pbkdf2("a", 101),
            pbkdf2("b", 900),
            pbkdf2("c", 5)
        ));
        assert!(matches!(
            f.decoy,
            StoredHash::Pbkdf2 {
                iterations: 900,
                ..
            }
        ));
        let weak =
            "$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let strong = hash_password(b"x").expect("hashed");
        let f = file(&format!(
            "{}u:{weak}\nv:{strong}\nw:{weak}\n",
            pbkdf2("a", 101)
        ));
        let StoredHash::Argon2(decoy) = &f.decoy else {
            panic!("not argon2: {:?}", f.decoy.cost());
        };
        let params = argon2::Params::try_from(&**decoy).expect("params");
        assert_eq!((params.m_cost(), params.t_cost()), (19_456, 2));
        assert!(!f.verify("nobody", b"x"));
    }
}
