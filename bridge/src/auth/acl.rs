//! Topic ACLs in mosquitto's `acl_file` format, so a mosquitto file works unchanged.
//!
//! ```text
//! # anonymous clients (rules before the first `user` line)
//! topic read public/#
//!
//! user alice
//! topic readwrite alice/#
//! topic deny alice/secret/#
//!
//! # everyone: %u is the user name, %c the client id
//! pattern read users/%u/#
//! pattern write devices/%c/status
//! ```
//!
//! Semantics, as mosquitto's default security (`src/security_default.c`):
//! - `topic [read|write|readwrite|deny] FILTER`; no access word is `readwrite`; the filter is
//!   the rest of the line, so it may hold spaces. `topic` lines before the first `user` line
//!   apply to anonymous clients, later ones to the user named by the last `user` line.
//! - `pattern [access] FILTER` applies to everyone, with `%u` and `%c` substituted; a pattern
//!   using `%u` is skipped for an anonymous client.
//! - Nothing is allowed unless a rule allows it.
//! - `deny` wins: any matching deny rule (the user's or a pattern) refuses, whatever allows.
//!   (mosquitto checks the user's denies, then the user's allows, then the patterns, so there a
//!   user's allow beats a pattern's deny; here the deny wins, the safe reading.)
//! - A user name or client id holding `/`, `+` or `#`, or starting with `$`, could reach into
//!   another client's topics through a pattern (`%c` = `a/b` lands inside `a`'s subtree), so
//!   no pattern using such a value applies, and a deny pattern using one refuses everything.
//!   (mosquitto 2 refuses `+` and `#` only; 1.x refused `/` too.)
//!
//! Asked per delivered message on the engine thread: rules are parsed once, grouped per user
//! with the denies apart, and [`Acl::allows`] allocates nothing.

use std::collections::HashMap;
use std::path::Path;

use broker::auth::Access;
use protocol::TopicFilter;

use super::topics::{covers, matches, overlaps, Level, Piece, Vars};
use super::AuthError;

/// What a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    Read,
    Write,
    ReadWrite,
}

impl Grant {
    fn reads(self) -> bool {
        matches!(self, Grant::Read | Grant::ReadWrite)
    }

    fn writes(self) -> bool {
        matches!(self, Grant::Write | Grant::ReadWrite)
    }
}

/// One `topic` or `pattern` line.
#[derive(Debug)]
struct Rule {
    /// The filter, one entry per level.
    levels: Box<[Level]>,
    /// What it allows; `None`: a `deny` rule.
    grant: Option<Grant>,
    /// Whether it substitutes `%u`.
    uses_user: bool,
    /// Whether it substitutes `%c`.
    uses_client: bool,
}

/// The rules of one list (a user's, the anonymous clients', the patterns), denies apart so
/// they are all asked before any allow.
#[derive(Debug, Default)]
struct Rules {
    deny: Vec<Rule>,
    allow: Vec<Rule>,
}

impl Rules {
    fn push(&mut self, rule: Rule) {
        if rule.grant.is_some() {
            self.allow.push(rule);
        } else {
            self.deny.push(rule);
        }
    }
}

/// A parsed ACL file.
#[derive(Debug, Default)]
pub(crate) struct Acl {
    /// `topic` lines before the first `user` line.
    anonymous: Rules,
    /// `topic` lines per user.
    users: HashMap<Box<str>, Rules>,
    /// `pattern` lines.
    patterns: Rules,
}

/// Whether a rule applies to this connection.
enum Applies {
    Yes,
    /// A `%u` rule for an anonymous client: skipped, as mosquitto does.
    No,
    /// The rule would substitute a dangerous value.
    Unsafe,
}

/// A user name or client id that must not be substituted: it could change the rule's
/// levels or reach `$` topics.
fn dangerous(value: &str) -> bool {
    value.starts_with('$') || value.contains(['/', '+', '#'])
}

impl Rule {
    fn parse(filter: &str, grant: Option<Grant>, pattern: bool) -> Result<Rule, String> {
        TopicFilter::new(filter).map_err(|e| format!("invalid topic filter {filter:?}: {e}"))?;
        let levels: Box<[Level]> = filter
            .split('/')
            .map(|l| Level::parse(l, pattern))
            .collect();
        let uses = |wanted: &Piece| {
            levels.iter().any(|l| match l {
                Level::Template(pieces) => pieces.contains(wanted),
                _ => false,
            })
        };
        Ok(Rule {
            uses_user: uses(&Piece::User),
            uses_client: uses(&Piece::Client),
            levels,
            grant,
        })
    }

    fn applies(&self, vars: Vars<'_>) -> Applies {
        if self.uses_user {
            match vars.user {
                None => return Applies::No,
                Some(user) if dangerous(user) => return Applies::Unsafe,
                Some(_) => {}
            }
        }
        if self.uses_client && dangerous(vars.client) {
            return Applies::Unsafe;
        }
        Applies::Yes
    }

    /// Whether this deny rule refuses `access`.
    fn denies(&self, vars: Vars<'_>, access: Access<'_>) -> bool {
        let levels = self.levels.iter().map(Level::view);
        match access {
            Access::Publish(topic) | Access::Read(topic) => matches(levels, vars, topic),
            Access::Subscribe(filter) => covers(levels, vars, filter),
        }
    }

    /// Whether this allow rule allows `access`.
    fn allows(&self, vars: Vars<'_>, access: Access<'_>) -> bool {
        let Some(grant) = self.grant else {
            return false;
        };
        let levels = self.levels.iter().map(Level::view);
        match access {
            Access::Publish(topic) => grant.writes() && matches(levels, vars, topic),
            Access::Read(topic) => grant.reads() && matches(levels, vars, topic),
            Access::Subscribe(filter) => grant.reads() && overlaps(levels, vars, filter),
        }
    }
}

impl Acl {
    /// Reads and parses the file at `path`.
    pub(crate) fn load(path: &Path) -> Result<Acl, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|e| AuthError::read(path, e))?;
        Acl::parse(&text).map_err(|(line, why)| AuthError::line(path, line, why))
    }

    /// Parses a file's text; an error names the line (1-based) and what is wrong.
    fn parse(text: &str) -> Result<Acl, (usize, String)> {
        let mut acl = Acl::default();
        let mut user: Option<Box<str>> = None;
        for (i, line) in text.lines().enumerate() {
            let number = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_word(line);
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err((number, "`user` without a user name".to_owned()));
                    }
                    user = Some(rest.into());
                }
                "topic" | "pattern" => {
                    let pattern = keyword == "pattern";
                    let (grant, filter) = access_and_filter(rest).map_err(|e| (number, e))?;
                    let rule = Rule::parse(filter, grant, pattern).map_err(|e| (number, e))?;
                    let rules = match (pattern, &user) {
                        (true, _) => &mut acl.patterns,
                        (false, None) => &mut acl.anonymous,
                        (false, Some(user)) => acl.users.entry(user.clone()).or_default(),
                    };
                    rules.push(rule);
                }
                other => {
                    return Err((
                        number,
                        format!("unknown keyword {other:?} (expected user, topic or pattern)"),
                    ))
                }
            }
        }
        Ok(acl)
    }

    /// Whether the client `client_id` of `user` (`None`: anonymous) may do `access`.
    pub(crate) fn allows(&self, user: Option<&str>, client_id: &str, access: Access<'_>) -> bool {
        let own = match user {
            Some(user) => self.users.get(user),
            None => Some(&self.anonymous),
        };
        let vars = Vars {
            user,
            client: client_id,
        };
        for rule in own.into_iter().flat_map(|r| &r.deny) {
            if rule.denies(vars, access) {
                return false;
            }
        }
        for rule in &self.patterns.deny {
            match rule.applies(vars) {
                Applies::Unsafe => return false,
                Applies::No => {}
                Applies::Yes => {
                    if rule.denies(vars, access) {
                        return false;
                    }
                }
            }
        }
        if own.is_some_and(|r| r.allow.iter().any(|rule| rule.allows(vars, access))) {
            return true;
        }
        self.patterns
            .allow
            .iter()
            .any(|rule| matches!(rule.applies(vars), Applies::Yes) && rule.allows(vars, access))
    }
}

/// The first word of `line` and the rest, trimmed.
fn split_word(line: &str) -> (&str, &str) {
    match line.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (line, ""),
    }
}

/// The access word and the filter of a `topic` / `pattern` line (after the keyword). As in
/// mosquitto, a single word is the filter with `readwrite` access.
fn access_and_filter(rest: &str) -> Result<(Option<Grant>, &str), String> {
    let (first, filter) = split_word(rest);
    if first.is_empty() {
        return Err("no topic filter".to_owned());
    }
    if filter.is_empty() {
        return Ok((Some(Grant::ReadWrite), first));
    }
    let grant = match first {
        "read" => Some(Grant::Read),
        "write" => Some(Grant::Write),
        "readwrite" => Some(Grant::ReadWrite),
        "deny" => None,
        other => {
            return Err(format!(
                "unknown access {other:?} (expected read, write, readwrite or deny)"
            ))
        }
    };
    Ok((grant, filter))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(text: &str) -> Acl {
        match Acl::parse(text) {
            Ok(acl) => acl,
            Err((line, why)) => panic!("line {line}: {why}"),
        }
    }

    const FILE: &str = "\
# anonymous
topic read public/#

user alice
topic alice/#
topic deny alice/secret/#
topic write shared/in

user bob
topic read shared/#
topic read $SYS/broker/#

pattern read users/%u/#
pattern write devices/%c/status
pattern readwrite id/%c/%u
";

    #[test]
    fn anonymous_clients_get_the_rules_before_the_first_user_line() {
        let a = acl(FILE);
        assert!(a.allows(None, "c", Access::Read("public/news")));
        assert!(a.allows(None, "c", Access::Subscribe("public/#")));
        assert!(!a.allows(None, "c", Access::Publish("public/news")));
        assert!(!a.allows(None, "c", Access::Read("alice/x")));
        // Patterns apply to anonymous clients too, except those using %u.
        assert!(a.allows(None, "c1", Access::Publish("devices/c1/status")));
        assert!(!a.allows(None, "c1", Access::Read("users//x")));
        assert!(!a.allows(None, "c1", Access::Read("id/c1/")));
    }

    #[test]
    fn a_users_rules_and_the_patterns_apply_to_that_user_only() {
        let a = acl(FILE);
        assert!(a.allows(Some("alice"), "c", Access::Publish("alice/x")));
        assert!(a.allows(Some("alice"), "c", Access::Read("alice/x")));
        assert!(a.allows(Some("alice"), "c", Access::Publish("shared/in")));
        assert!(!a.allows(Some("alice"), "c", Access::Read("shared/in")));
        assert!(!a.allows(Some("alice"), "c", Access::Read("public/news")));
        assert!(a.allows(Some("bob"), "c", Access::Read("shared/in")));
        assert!(!a.allows(Some("bob"), "c", Access::Publish("shared/in")));
        assert!(!a.allows(Some("bob"), "c", Access::Read("alice/x")));
        assert!(!a.allows(Some("carol"), "c", Access::Read("alice/x")));
        // %u: each user reads only their own subtree.
        assert!(a.allows(Some("bob"), "c", Access::Read("users/bob/inbox")));
        assert!(!a.allows(Some("bob"), "c", Access::Read("users/alice/inbox")));
        assert!(a.allows(Some("carol"), "c", Access::Subscribe("users/carol/#")));
        assert!(!a.allows(Some("carol"), "c", Access::Subscribe("users/alice/#")));
        // %c and %u together.
        assert!(a.allows(Some("carol"), "k9", Access::Publish("id/k9/carol")));
        assert!(!a.allows(Some("carol"), "k9", Access::Publish("id/k8/carol")));
    }

    #[test]
    fn deny_wins_and_refuses_a_subscription_only_when_it_covers_the_whole_filter() {
        let a = acl(FILE);
        assert!(!a.allows(Some("alice"), "c", Access::Read("alice/secret/x")));
        assert!(!a.allows(Some("alice"), "c", Access::Publish("alice/secret/x")));
        assert!(!a.allows(Some("alice"), "c", Access::Subscribe("alice/secret/#")));
        assert!(!a.allows(Some("alice"), "c", Access::Subscribe("alice/secret/+")));
        // Partly denied: granted, filtered on delivery.
        assert!(a.allows(Some("alice"), "c", Access::Subscribe("alice/#")));
        assert!(a.allows(Some("alice"), "c", Access::Subscribe("+/+/x")));
        let patterned = acl("pattern readwrite #\npattern deny private/%u/#\n");
        assert!(!patterned.allows(Some("dan"), "c", Access::Read("private/dan/x")));
        assert!(patterned.allows(Some("dan"), "c", Access::Read("private/eve/x")));
    }

    #[test]
    fn wildcard_subscriptions_are_granted_when_they_overlap_a_readable_rule() {
        let a = acl(FILE);
        assert!(a.allows(Some("bob"), "c", Access::Subscribe("#")));
        assert!(a.allows(Some("bob"), "c", Access::Subscribe("+/in")));
        assert!(!a.allows(Some("bob"), "c", Access::Subscribe("other/#")));
        // A first-level wildcard never reaches `$` topics [MQTT-4.7.2-1].
        assert!(a.allows(Some("bob"), "c", Access::Subscribe("$SYS/#")));
        assert!(!a.allows(Some("alice"), "c", Access::Subscribe("$SYS/#")));
        assert!(a.allows(Some("bob"), "c", Access::Read("$SYS/broker/load")));
    }

    #[test]
    fn patterns_never_substitute_values_that_would_reach_other_topics() {
        let a = acl(FILE);
        for user in ["a/b", "a+", "#", "$SYS"] {
            assert!(
                !a.allows(Some(user), "c", Access::Read(&format!("users/{user}/x"))),
                "{user}"
            );
        }
        assert!(!a.allows(None, "x/y", Access::Publish("devices/x/y/status")));
        assert!(!a.allows(None, "+", Access::Publish("devices/+/status")));
        // A deny pattern that cannot be evaluated refuses everything.
        let denying = acl("topic readwrite #\npattern deny secret/%c/#\n");
        assert!(denying.allows(None, "ok", Access::Read("a")));
        assert!(!denying.allows(None, "a/b", Access::Read("a")));
    }

    #[test]
    fn mosquitto_syntax_quirks_are_kept() {
        // One word: the filter, with readwrite access (even a word like `read`).
        let a = acl("topic read\ntopic   write    spaced  topic/x  \n");
        assert!(a.allows(None, "c", Access::Publish("read")));
        assert!(a.allows(None, "c", Access::Read("read")));
        assert!(a.allows(None, "c", Access::Publish("spaced  topic/x")));
        assert!(!a.allows(None, "c", Access::Read("spaced  topic/x")));
        // `%u` in a `topic` line is literal text.
        let literal = acl("user u\ntopic read a/%u\n");
        assert!(literal.allows(Some("u"), "c", Access::Read("a/%u")));
        assert!(!literal.allows(Some("u"), "c", Access::Read("a/u")));
        // Several blocks for one user add up.
        let merged = acl("user u\ntopic read a\nuser v\ntopic read b\nuser u\ntopic read c\n");
        assert!(merged.allows(Some("u"), "c", Access::Read("a")));
        assert!(merged.allows(Some("u"), "c", Access::Read("c")));
        assert!(!merged.allows(Some("u"), "c", Access::Read("b")));
        // An empty file allows nothing.
        assert!(!acl("").allows(Some("u"), "c", Access::Read("a")));
    }

    #[test]
    fn bad_lines_are_refused_with_their_line_number() {
        for (text, line, needle) in [
            ("topic read a\nfoo bar\n", 2, "unknown keyword"),
            ("\n\nuser\n", 3, "without a user name"),
            ("topic\n", 1, "no topic filter"),
            ("topic rw a/b\n", 1, "unknown access"),
            ("# c\ntopic read a/#/b\n", 2, "invalid topic filter"),
            ("pattern read a+/b\n", 1, "invalid topic filter"),
        ] {
            match Acl::parse(text) {
                Ok(_) => panic!("accepted: {text:?}"),
                Err((n, why)) => {
                    assert_eq!(n, line, "{text:?}: {why}");
                    assert!(why.contains(needle), "{text:?}: {why}");
                }
            }
        }
    }
}
