//! MQTT topics as NATS subjects, reversibly.
//!
//! A topic's levels become the subject's tokens: `/` ↔ `.`. A NATS token cannot be empty
//! and cannot hold `.`, `*`, `>` or whitespace, all of which an MQTT level may, so a level
//! is escaped: each such byte, and `%` itself, becomes `%XX` (two upper-case hex digits of
//! the byte), and an empty level becomes the token `%` alone (every other `%` is followed by
//! two hex digits, so the two cannot be confused). Control characters and DEL are escaped
//! too, and so is every byte of a non-ASCII whitespace character. Everything else, `$`, `+`
//! and `#` included (they cannot be in a topic name anyway, and mean nothing to NATS), is
//! kept, so subjects stay readable: `sensors/room 1/temp` is `…sensors.room%201.temp`.
//!
//! Every topic round-trips exactly ([`topic_of`] ∘ [`subject_of`] is the identity, checked
//! by property tests below), and a topic filter maps to the subject wildcards that match
//! exactly the subjects of the topics it matches ([`subjects_of_filter`]; `a/#` needs two,
//! `a` and `a.>`, because `#` also matches its parent level [MQTT-4.7.1-2]).

use protocol::{TopicFilter, TopicName};

/// Why a subject is not one this module made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// It does not start with the expected prefix.
    #[error("subject outside the cluster's namespace")]
    Prefix,
    /// A `%` not followed by two hex digits, or escapes that are not UTF-8.
    #[error("malformed escape in subject")]
    Escape,
    /// The decoded topic is not a valid topic name.
    #[error("subject decodes to an invalid topic")]
    Topic,
}

/// Whether byte `b` (of a level's UTF-8) must be escaped on its own.
fn escaped_byte(b: u8) -> bool {
    matches!(b, b'%' | b'.' | b'*' | b'>') || b <= b' ' || b == 0x7f
}

/// Appends one topic level as a subject token.
fn push_level(out: &mut String, level: &str) {
    if level.is_empty() {
        out.push('%');
        return;
    }
    for c in level.chars() {
        let mut utf8 = [0u8; 4];
        let bytes = c.encode_utf8(&mut utf8).as_bytes();
        if (bytes.len() == 1 && escaped_byte(bytes[0])) || (c.is_whitespace() && !c.is_ascii()) {
            for b in bytes {
                push_hex(out, *b);
            }
        } else {
            out.push(c);
        }
    }
}

fn push_hex(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

/// The subject of `topic` under `prefix` (`prefix.level.level…`).
pub fn subject_of(prefix: &str, topic: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1 + topic.len() + 8);
    out.push_str(prefix);
    for level in topic.split('/') {
        out.push('.');
        push_level(&mut out, level);
    }
    out
}

/// The topic of a subject [`subject_of`] made under `prefix`.
pub fn topic_of(prefix: &str, subject: &str) -> Result<TopicName, SubjectError> {
    let rest = subject
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
        .ok_or(SubjectError::Prefix)?;
    let mut topic = Vec::with_capacity(rest.len());
    for (i, token) in rest.split('.').enumerate() {
        if i > 0 {
            topic.push(b'/');
        }
        if token == "%" {
            continue;
        }
        let mut bytes = token.bytes();
        while let Some(b) = bytes.next() {
            if b == b'%' {
                let hi = bytes.next().and_then(hex).ok_or(SubjectError::Escape)?;
                let lo = bytes.next().and_then(hex).ok_or(SubjectError::Escape)?;
                topic.push(hi << 4 | lo);
            } else {
                topic.push(b);
            }
        }
    }
    let topic = String::from_utf8(topic).map_err(|_| SubjectError::Escape)?;
    TopicName::try_from(topic).map_err(|_| SubjectError::Topic)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The NATS subject filters under `prefix` that together match exactly the subjects of the
/// topics `filter` matches: `+` ↔ `*`, a trailing `#` ↔ the parent (if any) and `>`.
///
/// A filter starting with a wildcard does not match topics starting with `$`
/// [MQTT-4.7.2-1], while NATS's `*` and `>` do: callers check the topic of what such a
/// filter brings (the broker's matching does).
pub fn subjects_of_filter(prefix: &str, filter: &TopicFilter) -> Vec<String> {
    let mut out = String::with_capacity(prefix.len() + filter.as_str().len() + 8);
    out.push_str(prefix);
    let levels: Vec<&str> = filter.as_str().split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        match *level {
            "#" => {
                // `a/#` matches `a` itself too; a lone `#` matches every topic, and no
                // topic has zero levels.
                let parent = (i > 0).then(|| out.clone());
                out.push_str(".>");
                return parent.into_iter().chain([out]).collect();
            }
            "+" => out.push_str(".*"),
            level => {
                out.push('.');
                push_level(&mut out, level);
            }
        }
    }
    vec![out]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_levels_read_as_they_are_and_specials_are_escaped() {
        assert_eq!(subject_of("p", "a/b/c"), "p.a.b.c");
        assert_eq!(subject_of("p", "$SYS/x"), "p.$SYS.x");
        assert_eq!(subject_of("p", "a.b/*/>/%"), "p.a%2Eb.%2A.%3E.%25");
        assert_eq!(subject_of("p", "room 1\t/x"), "p.room%201%09.x");
        assert_eq!(subject_of("p", "/"), "p.%.%");
        assert_eq!(subject_of("p", "a//b/"), "p.a.%.b.%");
        assert_eq!(
            subject_of("p", "caf\u{e9}/\u{3000}"),
            "p.caf\u{e9}.%E3%80%80"
        );
    }

    #[test]
    fn malformed_subjects_are_refused() {
        assert_eq!(topic_of("p", "q.a"), Err(SubjectError::Prefix));
        assert_eq!(topic_of("p", "p.a%2"), Err(SubjectError::Escape));
        assert_eq!(topic_of("p", "p.a%zz"), Err(SubjectError::Escape));
        assert_eq!(topic_of("p", "p.%FF"), Err(SubjectError::Escape));
        assert_eq!(topic_of("p", "p.a%23"), Err(SubjectError::Topic));
    }

    #[test]
    fn a_filter_becomes_the_subject_wildcards_of_what_it_matches() {
        let f = |s: &str| subjects_of_filter("p", &TopicFilter::new(s).expect("filter"));
        assert_eq!(f("a/+/c"), ["p.a.*.c"]);
        assert_eq!(f("a/#"), ["p.a", "p.a.>"]);
        assert_eq!(f("#"), ["p.>"]);
        assert_eq!(f("+/#"), ["p.*", "p.*.>"]);
        assert_eq!(f("a b/./#"), ["p.a%20b.%2E", "p.a%20b.%2E.>"]);
    }

    /// NATS's own matching of a subject against a subject filter.
    fn nats_matches(filter: &str, subject: &str) -> bool {
        let f: Vec<&str> = filter.split('.').collect();
        let s: Vec<&str> = subject.split('.').collect();
        for (i, t) in f.iter().enumerate() {
            match *t {
                ">" => return s.len() > i,
                "*" if i < s.len() => {}
                t if i < s.len() && s[i] == t => {}
                _ => return false,
            }
        }
        f.len() == s.len()
    }

    /// MQTT's matching, written plainly (the broker's trie is tested against its own).
    fn mqtt_matches(filter: &str, topic: &str) -> bool {
        let f: Vec<&str> = filter.split('/').collect();
        let t: Vec<&str> = topic.split('/').collect();
        for (i, level) in f.iter().enumerate() {
            match *level {
                "#" => return true,
                "+" if i < t.len() => {}
                l if i < t.len() && t[i] == l => {}
                _ => return false,
            }
        }
        f.len() == t.len()
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("$x".to_owned()),
            "[a-c]{1,2}",
            "[a.*>% \t\u{3000}\u{e9}\u{1}]{1,4}",
        ]
    }

    fn topic() -> impl Strategy<Value = String> {
        // A topic is at least one character [MQTT-4.7.3-1].
        prop::collection::vec(level(), 1..5)
            .prop_map(|l| l.join("/"))
            .prop_filter("a topic is not empty", |t| !t.is_empty())
    }

    fn filter() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(prop_oneof![level(), Just("+".to_owned())], 0..4),
            any::<bool>(),
        )
            .prop_filter_map("a filter has a level", |(mut l, hash)| {
                if hash {
                    l.push("#".to_owned());
                }
                let f = l.join("/");
                (!f.is_empty()).then_some(f)
            })
    }

    proptest! {
        #[test]
        fn every_topic_round_trips_exactly(t in topic()) {
            let s = subject_of("mqtt.m", &t);
            prop_assert!(!s.contains(' ') && !s.contains('\t') && !s.contains(".."));
            prop_assert!(s.split('.').all(|tok| !tok.is_empty() && tok != "*" && tok != ">"));
            let back = topic_of("mqtt.m", &s).expect("decodes");
            prop_assert_eq!(back.as_str(), t.as_str());
        }

        #[test]
        fn a_filter_matches_in_nats_exactly_what_it_matches_in_mqtt(f in filter(), t in topic()) {
            let filter = TopicFilter::new(f.as_str()).expect("valid filter");
            let subject = subject_of("p", &t);
            let nats = subjects_of_filter("p", &filter).iter().any(|s| nats_matches(s, &subject));
            prop_assert_eq!(nats, mqtt_matches(&f, &t), "filter {:?} topic {:?}", f, t);
        }
    }
}
