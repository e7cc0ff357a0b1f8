//! Topic questions an access rule has to answer, on filters that may hold `%u` / `%c`.
//!
//! A rule is a topic filter (an ACL line, a token's grant); three questions are asked of it:
//! - [`matches`](fn@matches): is this topic name inside the rule? (a PUBLISH, a delivery)
//! - [`overlaps`]: is there a topic inside both the rule and this subscription filter? A
//!   SUBSCRIBE is granted when some readable rule overlaps it; what the rule does not cover
//!   is held back on delivery, as mosquitto does.
//! - [`covers`]: is every topic of this subscription filter inside the rule? A `deny` rule
//!   refuses a SUBSCRIBE only when it covers the whole filter.
//!
//! All three follow the matching rules of MQTT section 4.7: `+` is one level (possibly empty),
//! `#` is the parent level and any number of children (`a/#` matches `a`), and a filter whose
//! first level is a wildcard never matches a topic starting with `$` [MQTT-4.7.2-1].
//!
//! They run on the engine thread for every delivered message, so they allocate nothing: a
//! rule is parsed once into [`Level`]s, and a `pattern` rule's `%u` / `%c` pieces are compared
//! in place against the topic's level. This is sound only because a substituted value never
//! holds `/`, `+` or `#` (the ACL refuses such values before asking, see
//! `acl::dangerous`), so substitution never changes a rule's levels.
//! Levels are walked with iterators, never recursion, so a deep topic costs no stack.

/// One level of a rule, parsed once when the rule is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Level {
    /// `+`.
    Plus,
    /// `#` (always the last level).
    Hash,
    /// A level without substitutions, compared as is.
    Text(Box<str>),
    /// A `pattern` level holding `%u` and/or `%c`, e.g. `dev-%c`.
    Template(Box<[Piece]>),
}

/// A piece of a [`Level::Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Text taken as is.
    Literal(Box<str>),
    /// `%u`: the connection's user name.
    User,
    /// `%c`: the connection's client id.
    Client,
}

/// What `%u` and `%c` stand for, for one connection.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Vars<'a> {
    /// The user name; `None` for an anonymous client (a rule using `%u` is then skipped
    /// by the caller before it gets here).
    pub(crate) user: Option<&'a str>,
    /// The client id.
    pub(crate) client: &'a str,
}

/// A level seen by the three questions: a parsed rule's level, or a level of a plain filter
/// string (a token's grant).
#[derive(Debug, Clone, Copy)]
pub(crate) enum RuleLevel<'a> {
    /// `+`.
    Plus,
    /// `#`.
    Hash,
    /// Plain text.
    Text(&'a str),
    /// A template, substituted on the fly.
    Template(&'a [Piece]),
}

impl Level {
    /// This level, for the questions below.
    pub(crate) fn view(&self) -> RuleLevel<'_> {
        match self {
            Level::Plus => RuleLevel::Plus,
            Level::Hash => RuleLevel::Hash,
            Level::Text(t) => RuleLevel::Text(t),
            Level::Template(p) => RuleLevel::Template(p),
        }
    }

    /// Parses one level of a rule; `substitute`: whether `%u` and `%c` are substitutions
    /// (a `pattern` line) or plain text (a `topic` line).
    ///
    /// Substitution scans left to right as mosquitto does: `%c` and `%u` are replaced, any
    /// other `%` is kept as is.
    pub(crate) fn parse(level: &str, substitute: bool) -> Level {
        match level {
            "+" => return Level::Plus,
            "#" => return Level::Hash,
            _ => {}
        }
        if !substitute || !(level.contains("%u") || level.contains("%c")) {
            return Level::Text(level.into());
        }
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = level.chars().peekable();
        while let Some(c) = chars.next() {
            let piece = match (c, chars.peek()) {
                ('%', Some('u')) => Some(Piece::User),
                ('%', Some('c')) => Some(Piece::Client),
                _ => None,
            };
            match piece {
                Some(piece) => {
                    chars.next();
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal).into()));
                    }
                    pieces.push(piece);
                }
                None => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal.into()));
        }
        Level::Template(pieces.into())
    }
}

impl<'a> RuleLevel<'a> {
    /// A level of a plain (already valid) filter string.
    pub(crate) fn plain(level: &'a str) -> RuleLevel<'a> {
        match level {
            "+" => RuleLevel::Plus,
            "#" => RuleLevel::Hash,
            text => RuleLevel::Text(text),
        }
    }

    /// Whether this (non-wildcard) level, substituted, equals `other`.
    fn text_eq(self, vars: Vars<'_>, other: &str) -> bool {
        match self {
            RuleLevel::Text(t) => t == other,
            RuleLevel::Template(pieces) => {
                let mut rest = other;
                for piece in pieces {
                    let Some(value) = piece.value(vars) else {
                        return false;
                    };
                    match rest.strip_prefix(value) {
                        Some(r) => rest = r,
                        None => return false,
                    }
                }
                rest.is_empty()
            }
            RuleLevel::Plus | RuleLevel::Hash => false,
        }
    }

    /// Whether this (non-wildcard) level, substituted, starts with `$`.
    fn starts_with_dollar(self, vars: Vars<'_>) -> bool {
        match self {
            RuleLevel::Text(t) => t.starts_with('$'),
            RuleLevel::Template(pieces) => pieces
                .iter()
                .filter_map(|p| p.value(vars))
                .find(|v| !v.is_empty())
                .is_some_and(|v| v.starts_with('$')),
            RuleLevel::Plus | RuleLevel::Hash => false,
        }
    }
}

impl Piece {
    fn value<'v>(&'v self, vars: Vars<'v>) -> Option<&'v str> {
        match self {
            Piece::Literal(l) => Some(l),
            Piece::User => vars.user,
            Piece::Client => Some(vars.client),
        }
    }
}

/// A level of a subscription filter is a wildcard.
fn is_wildcard(level: &str) -> bool {
    level == "+" || level == "#"
}

/// Whether the topic name `topic` is inside `rule`.
pub(crate) fn matches<'a>(
    rule: impl IntoIterator<Item = RuleLevel<'a>>,
    vars: Vars<'_>,
    topic: &str,
) -> bool {
    let dollar = topic.starts_with('$');
    let mut topic_levels = topic.split('/');
    for (i, level) in rule.into_iter().enumerate() {
        let first = i == 0;
        match (level, topic_levels.next()) {
            (RuleLevel::Hash, _) => return !(first && dollar),
            (RuleLevel::Plus, Some(_)) => {
                if first && dollar {
                    return false;
                }
            }
            (_, None) => return false,
            (text, Some(t)) => {
                if !text.text_eq(vars, t) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

/// Whether some topic name is inside both `rule` and the subscription filter `filter`.
pub(crate) fn overlaps<'a>(
    rule: impl IntoIterator<Item = RuleLevel<'a>>,
    vars: Vars<'_>,
    filter: &str,
) -> bool {
    let mut rule = rule.into_iter();
    let mut filter_levels = filter.split('/');
    let mut first = true;
    loop {
        match (rule.next(), filter_levels.next()) {
            (None, None) => return true,
            // `a/#` and `a` share the topic `a`.
            (Some(RuleLevel::Hash), None) | (None, Some("#")) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            // Any continuation of the filter is inside the rule's `#`, except that a first
            // `#` never matches a `$` topic.
            (Some(RuleLevel::Hash), Some(f)) => {
                return !(first && !is_wildcard(f) && f.starts_with('$'));
            }
            (Some(r), Some("#")) => {
                return !(first && !matches!(r, RuleLevel::Plus) && r.starts_with_dollar(vars));
            }
            (Some(RuleLevel::Plus), Some(f)) => {
                if first && !is_wildcard(f) && f.starts_with('$') {
                    return false;
                }
            }
            (Some(r), Some("+")) => {
                if first && r.starts_with_dollar(vars) {
                    return false;
                }
            }
            (Some(r), Some(f)) => {
                if !r.text_eq(vars, f) {
                    return false;
                }
            }
        }
        first = false;
    }
}

/// Whether every topic name inside the subscription filter `filter` is inside `rule`.
pub(crate) fn covers<'a>(
    rule: impl IntoIterator<Item = RuleLevel<'a>>,
    vars: Vars<'_>,
    filter: &str,
) -> bool {
    let mut rule = rule.into_iter();
    let mut filter_levels = filter.split('/');
    let mut first = true;
    loop {
        match (rule.next(), filter_levels.next()) {
            (None, None) | (Some(RuleLevel::Hash), None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
            // The rule takes everything from here on; a first `#` takes no `$` topic, so
            // the filter must have none either (a first wildcard has none, a first literal
            // level has none unless it starts with `$`).
            (Some(RuleLevel::Hash), Some(f)) => {
                return !(first && !is_wildcard(f) && f.starts_with('$'));
            }
            // A first `#` is every topic but the `$` ones, and so is `+/#` (`#` takes the
            // parent level too).
            (Some(RuleLevel::Plus), Some("#")) if first => {
                return matches!(rule.next(), Some(RuleLevel::Hash));
            }
            // Otherwise the filter takes its parent and any depth below: only `#` follows.
            (Some(_), Some("#")) => return false,
            (Some(RuleLevel::Plus), Some(f)) => {
                if first && !is_wildcard(f) && f.starts_with('$') {
                    return false;
                }
            }
            (Some(_), Some("+")) => return false,
            (Some(r), Some(f)) => {
                if !r.text_eq(vars, f) {
                    return false;
                }
            }
        }
        first = false;
    }
}

/// The levels of a plain filter string, for the questions above.
pub(crate) fn plain(filter: &str) -> impl Iterator<Item = RuleLevel<'_>> {
    filter.split('/').map(RuleLevel::plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Vars<'static> = Vars {
        user: None,
        client: "",
    };

    fn m(rule: &str, topic: &str) -> bool {
        matches(plain(rule), NONE, topic)
    }

    fn o(rule: &str, filter: &str) -> bool {
        overlaps(plain(rule), NONE, filter)
    }

    fn c(rule: &str, filter: &str) -> bool {
        covers(plain(rule), NONE, filter)
    }

    #[test]
    fn matching_follows_section_4_7_and_agrees_with_the_protocol_matcher() {
        for (rule, topic, want) in [
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/+", "a", false),
            ("a/+", "a/", true),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "a", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("/+", "/a", true),
            ("+", "/a", false),
        ] {
            assert_eq!(m(rule, topic), want, "{rule} vs {topic}");
            assert_eq!(
                protocol::topic::matches(rule, topic),
                want,
                "{rule} vs {topic}"
            );
        }
    }

    #[test]
    fn overlap_and_cover_on_known_cases() {
        assert!(o("a/+", "+/b"));
        assert!(o("a/#", "a"));
        assert!(o("a", "a/#"));
        assert!(!o("a/b", "a/c"));
        assert!(!o("#", "$SYS/#"));
        assert!(!o("+/#", "$SYS/x"));
        assert!(o("$SYS/#", "$SYS/+"));
        assert!(!o("$SYS/x", "#"));
        assert!(!o("$SYS/x", "+/x"));
        assert!(o("a/+/c", "a/#"));
        assert!(!o("a/b", "a/b/+"));

        assert!(c("#", "a/#"));
        assert!(c("a/#", "a"));
        assert!(c("a/#", "a/#"));
        assert!(!c("a/+", "a/#"));
        assert!(!c("#", "$SYS/x"));
        assert!(c("#", "+/x"));
        assert!(c("$SYS/#", "$SYS/+/x"));
        assert!(!c("a/b", "a/+"));
        assert!(c("a/+", "a/b"));
        assert!(!c("+", "$x"));
    }

    /// Every filter of at most three levels over a small alphabet (with `$x` for the `$`
    /// rule, the empty level, and `%u` for substitution), every topic of at most four levels
    /// (with `b` and `u1`, levels no filter names): the three questions must agree with their
    /// definitions evaluated by brute force over those topics.
    #[test]
    fn the_three_questions_agree_with_brute_force_over_a_small_alphabet() {
        let filters = sequences(&["a", "+", "#", "$x", ""], 3)
            .into_iter()
            .filter(|f| {
                f.iter()
                    .position(|l| *l == "#")
                    .is_none_or(|i| i == f.len() - 1)
            })
            .map(|f| f.join("/"))
            .collect::<Vec<_>>();
        let topics = sequences(&["a", "b", "$x", "", "u1"], 4)
            .into_iter()
            .map(|t| t.join("/"))
            .collect::<Vec<_>>();
        let inside = |filter: &str| -> Vec<bool> {
            topics
                .iter()
                .map(|t| protocol::topic::matches(filter, t))
                .collect()
        };
        let filter_sets: Vec<Vec<bool>> = filters.iter().map(|f| inside(f)).collect();
        // Rules are the filters, plus some with `%u` (the user is `u1`).
        let mut rules = filters.clone();
        rules.extend(["%u", "a/%u", "%u/#", "+/%u", "a/%u/#"].map(String::from));
        let vars = Vars {
            user: Some("u1"),
            client: "c",
        };
        for rule in &rules {
            let levels: Vec<Level> = rule.split('/').map(|l| Level::parse(l, true)).collect();
            let view = || levels.iter().map(Level::view);
            let rule_set = inside(&rule.replace("%u", "u1"));
            for (topic, want) in topics.iter().zip(&rule_set) {
                assert_eq!(
                    matches(view(), vars, topic),
                    *want,
                    "matches({rule}, {topic})"
                );
            }
            for (filter, filter_set) in filters.iter().zip(&filter_sets) {
                let both = rule_set.iter().zip(filter_set).any(|(r, f)| *r && *f);
                assert_eq!(
                    overlaps(view(), vars, filter),
                    both,
                    "overlaps({rule}, {filter})"
                );
                let all = rule_set.iter().zip(filter_set).all(|(r, f)| *r || !*f);
                assert_eq!(
                    covers(view(), vars, filter),
                    all,
                    "covers({rule}, {filter})"
                );
            }
        }
    }

    fn sequences<'a>(alphabet: &[&'a str], max_len: usize) -> Vec<Vec<&'a str>> {
        let mut all = Vec::new();
        let mut layer: Vec<Vec<&str>> = vec![Vec::new()];
        for _ in 0..max_len {
            layer = layer
                .iter()
                .flat_map(|prefix| {
                    alphabet.iter().map(move |l| {
                        let mut next = prefix.clone();
                        next.push(*l);
                        next
                    })
                })
                .collect();
            all.extend(layer.iter().cloned());
        }
        all
    }

    #[test]
    fn templates_substitute_in_place_and_keep_other_percent_signs() {
        let level = Level::parse("dev-%c-%u%x", true);
        assert_eq!(
            level,
            Level::Template(
                vec![
                    Piece::Literal("dev-".into()),
                    Piece::Client,
                    Piece::Literal("-".into()),
                    Piece::User,
                    Piece::Literal("%x".into()),
                ]
                .into()
            )
        );
        let vars = Vars {
            user: Some("bob"),
            client: "c1",
        };
        assert!(level.view().text_eq(vars, "dev-c1-bob%x"));
        assert!(!level.view().text_eq(vars, "dev-c1-bob"));
        assert_eq!(Level::parse("%u", false), Level::Text("%u".into()));
        assert_eq!(Level::parse("plain", true), Level::Text("plain".into()));
        // Without a user name, a `%u` level matches nothing.
        let anonymous = Vars {
            user: None,
            client: "c1",
        };
        assert!(!Level::parse("%u", true).view().text_eq(anonymous, ""));
    }
}
