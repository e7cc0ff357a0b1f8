//! `bridge passwd FILE USER`: adds or updates a user in a password file.
//!
//! The password comes from standard input: one line when it is a pipe or a file (for
//! scripts), or typed twice without echo when it is a terminal. The line written is
//! `USER:$argon2id$...` (never the password itself); the file's other lines, comments
//! included, are kept, and it is replaced atomically (written beside it, then renamed), with
//! the old file's permissions, or owner-only ones for a new file.

use std::fs;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::password::hash_password;

/// The longest password accepted, in bytes (the CONNECT password field's limit).
const MAX_PASSWORD: usize = 65_535;

/// The bridge's maintenance commands; without one, the bridge serves.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub(crate) enum Command {
    /// Add USER to the password FILE, or change their password (argon2id). The password is
    /// read from standard input (one line; asked twice when it is a terminal)
    Passwd {
        /// The password file (created if missing)
        file: PathBuf,
        /// The user name (no `:`, no spaces at either end, no line breaks)
        user: String,
    },
}

/// Runs `command`: exit 0 on success; an error goes to stderr with exit 1 (2 for bad input).
pub(crate) fn run(command: Command) -> ExitCode {
    match command {
        Command::Passwd { file, user } => match passwd(&file, &user) {
            Ok(()) => ExitCode::SUCCESS,
            Err(PasswdError::Usage(why)) => {
                eprintln!("bridge passwd: {why}");
                ExitCode::from(2)
            }
            Err(PasswdError::Failed(why)) => {
                eprintln!("bridge passwd: {why}");
                ExitCode::from(1)
            }
        },
    }
}

enum PasswdError {
    /// Bad input: the user name, the password.
    Usage(String),
    /// Could not be done: the file, the terminal.
    Failed(String),
}

fn passwd(file: &Path, user: &str) -> Result<(), PasswdError> {
    check_user(user).map_err(PasswdError::Usage)?;
    let password = if io::stdin().is_terminal() {
        prompt_twice()?
    } else {
        read_line(io::stdin().lock())?
    };
    if password.is_empty() {
        return Err(PasswdError::Usage("the password is empty".to_owned()));
    }
    let hash = hash_password(password.as_bytes()).map_err(PasswdError::Failed)?;
    update(file, user, &hash)
        .map_err(|e| PasswdError::Failed(format!("cannot write {}: {e}", file.display())))
}

fn check_user(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("the user name is empty".to_owned());
    }
    if user.contains(':') || user.contains(['\n', '\r', '\0']) {
        return Err("the user name must not contain ':', a line break or NUL".to_owned());
    }
    if user.trim() != user || user.starts_with('#') {
        return Err(
            "the user name must not start with '#' or have spaces at either end".to_owned(),
        );
    }
    if user.len() > MAX_PASSWORD {
        return Err("the user name is longer than 65535 bytes".to_owned());
    }
    Ok(())
}

fn prompt_twice() -> Result<String, PasswdError> {
    let failed = |e: io::Error| PasswdError::Failed(format!("cannot read the password: {e}"));
    let first = rpassword::prompt_password("Password: ").map_err(failed)?;
    let second = rpassword::prompt_password("Password (again): ").map_err(failed)?;
    if first != second {
        return Err(PasswdError::Usage("the passwords differ".to_owned()));
    }
    Ok(first)
}

/// One line of `input`, without its line break.
fn read_line(input: impl BufRead) -> Result<String, PasswdError> {
    let mut line = Vec::new();
    input
        .take(MAX_PASSWORD as u64 + 2)
        .read_until(b'\n', &mut line)
        .map_err(|e| PasswdError::Failed(format!("cannot read standard input: {e}")))?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    } else if line.len() > MAX_PASSWORD {
        return Err(PasswdError::Usage(
            "the password is longer than 65535 bytes".to_owned(),
        ));
    }
    String::from_utf8(line)
        .map_err(|_| PasswdError::Usage("the password is not valid UTF-8".to_owned()))
}

/// Writes `user:hash` into `file`: replacing the user's line, or appended.
fn update(file: &Path, user: &str, hash: &str) -> io::Result<()> {
    let old = match fs::read_to_string(file) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let text = updated(old.as_deref().unwrap_or_default(), user, hash);
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = write_new(&temporary, text.as_bytes(), file, old.is_some())
        .and_then(|()| fs::rename(&temporary, file));
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written
}

/// Creates `path` with `bytes`, with `like`'s permissions when it exists, else owner-only.
fn write_new(path: &Path, bytes: &[u8], like: &Path, like_exists: bool) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut out = options.open(path)?;
    if like_exists {
        out.set_permissions(fs::metadata(like)?.permissions())?;
    }
    out.write_all(bytes)?;
    out.sync_all()
}

/// `text` with `user`'s line replaced by `user:hash` (later lines for the same user
/// dropped), or with it appended; every other line kept as it was.
fn updated(text: &str, user: &str, hash: &str) -> String {
    let mut out = String::with_capacity(text.len() + user.len() + hash.len() + 2);
    let mut done = false;
    for line in text.lines() {
        let owner = line
            .split_once(':')
            .map(|(u, _)| u.trim())
            .filter(|_| !line.trim_start().starts_with('#'));
        if owner == Some(user) {
            if !done {
                out.push_str(&format!("{user}:{hash}\n"));
                done = true;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !done {
        out.push_str(&format!("{user}:{hash}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_line_is_replaced_in_place_and_the_rest_kept() {
        let text = "# users\nalice:$7$old\nbob:$6$x\nalice:$6$dup\n";
        assert_eq!(
            updated(text, "alice", "NEW"),
            "# users\nalice:NEW\nbob:$6$x\n"
        );
        assert_eq!(updated(text, "carol", "H"), format!("{text}carol:H\n"));
        assert_eq!(updated("", "carol", "H"), "carol:H\n");
        // Comments are never taken for a user's line.
        assert_eq!(updated("#alice:x\n", "alice", "H"), "#alice:x\nalice:H\n");
    }

    #[test]
    fn one_line_is_read_without_its_line_break() {
        let read = |input: &[u8]| match read_line(input) {
            Ok(s) => Ok(s),
            Err(PasswdError::Usage(e) | PasswdError::Failed(e)) => Err(e),
        };
        assert_eq!(read(b"pw\n").as_deref(), Ok("pw"));
        assert_eq!(read(b"pw\r\nrest\n").as_deref(), Ok("pw"));
        assert_eq!(read(b"pw").as_deref(), Ok("pw"));
        assert_eq!(read(b"").as_deref(), Ok(""));
        assert!(read(&[0xff, b'\n']).is_err());
        assert!(read(&vec![b'x'; MAX_PASSWORD + 1]).is_err());
        assert_eq!(
            read(&vec![b'x'; MAX_PASSWORD]).map(|s| s.len()),
            Ok(MAX_PASSWORD)
        );
    }

    #[test]
    fn user_names_that_would_break_the_file_are_refused() {
        for bad in ["", "a:b", "a\nb", " a", "a ", "#a", "a\0"] {
            assert!(check_user(bad).is_err(), "{bad:?}");
        }
        assert!(check_user("alice@example.com").is_ok());
    }
}
