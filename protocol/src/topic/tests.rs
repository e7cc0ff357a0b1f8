//! Topic names and filters: validation, matching, shared subscriptions.

#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

fn name(s: &str) -> TopicName {
    TopicName::new(s).unwrap()
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s).unwrap()
}

fn m(f: &str, t: &str) -> bool {
    let via_types = filter(f).matches(&name(t));
    assert_eq!(via_types, matches(f, t), "typed and raw matching disagree");
    via_types
}

// ---- 4.7.1.2 multi-level wildcard ----

#[test]
fn mqtt_4_7_1_2_multi_level_wildcard_examples() {
    // "sport/tennis/player1/#" would receive messages published using these topic names.
    assert!(m("sport/tennis/player1/#", "sport/tennis/player1"));
    assert!(m("sport/tennis/player1/#", "sport/tennis/player1/ranking"));
    assert!(m(
        "sport/tennis/player1/#",
        "sport/tennis/player1/score/wimbledon"
    ));
    assert!(!m("sport/tennis/player1/#", "sport/tennis/player2"));
    assert!(!m("sport/tennis/player1/#", "sport/tennis"));
    // "sport/#" also matches the singular "sport", since # includes the parent level.
    assert!(m("sport/#", "sport"));
    assert!(m("sport/#", "sport/"));
    // "#" is valid and receives every (non-$) message.
    assert!(m("#", "sport/tennis"));
    assert!(m("#", "/"));
}

#[test]
fn mqtt_4_7_1_2_multi_level_wildcard_validity() {
    assert!(TopicFilter::new("#").is_ok());
    assert!(TopicFilter::new("sport/tennis/#").is_ok());
    // [MQTT-4.7.1-2] '#' must be the last character, alone in its level.
    assert_eq!(
        TopicFilter::new("sport/tennis#"),
        Err(TopicError::MisplacedMultiLevelWildcard)
    );
    assert_eq!(
        TopicFilter::new("sport/tennis/#/ranking"),
        Err(TopicError::MisplacedMultiLevelWildcard)
    );
    assert_eq!(
        TopicFilter::new("#/"),
        Err(TopicError::MisplacedMultiLevelWildcard)
    );
    assert_eq!(
        TopicFilter::new("##"),
        Err(TopicError::MisplacedMultiLevelWildcard)
    );
    assert_eq!(
        TopicFilter::new("+#"),
        Err(TopicError::MisplacedMultiLevelWildcard)
    );
}

// ---- 4.7.1.3 single-level wildcard ----

#[test]
fn mqtt_4_7_1_3_single_level_wildcard_examples() {
    assert!(m("sport/tennis/+", "sport/tennis/player1"));
    assert!(m("sport/tennis/+", "sport/tennis/player2"));
    assert!(!m("sport/tennis/+", "sport/tennis/player1/ranking"));
    // "sport/+" does not match "sport" but does match "sport/".
    assert!(!m("sport/+", "sport"));
    assert!(m("sport/+", "sport/"));
    // "/finance" is matched by "+/+" and "/+" but not by "+".
    assert!(m("+/+", "/finance"));
    assert!(m("/+", "/finance"));
    assert!(!m("+", "/finance"));
}

#[test]
fn mqtt_4_7_1_3_single_level_wildcard_validity() {
    assert!(TopicFilter::new("+").is_ok());
    assert!(TopicFilter::new("+/tennis/#").is_ok());
    assert!(TopicFilter::new("sport/+/player1").is_ok());
    assert!(TopicFilter::new("+/+").is_ok());
    assert!(TopicFilter::new("/+").is_ok());
    // [MQTT-4.7.1-3] '+' must occupy an entire level.
    assert_eq!(
        TopicFilter::new("sport+"),
        Err(TopicError::MisplacedSingleLevelWildcard)
    );
    assert_eq!(
        TopicFilter::new("sport/+x/a"),
        Err(TopicError::MisplacedSingleLevelWildcard)
    );
    assert_eq!(
        TopicFilter::new("++"),
        Err(TopicError::MisplacedSingleLevelWildcard)
    );
}

// ---- 4.7.2 topics beginning with $ ----

#[test]
fn mqtt_4_7_2_1_wildcard_first_does_not_match_dollar_topics() {
    // [MQTT-4.7.2-1]
    assert!(!m("#", "$SYS/x"));
    assert!(!m("#", "$SYS"));
    assert!(!m("+/monitor/Clients", "$SYS/monitor/Clients"));
    assert!(!m("+", "$x"));
    assert!(m("$SYS/#", "$SYS/monitor/Clients"));
    assert!(m("$SYS/monitor/+", "$SYS/monitor/Clients"));
    // Only the first level is special.
    assert!(m("a/+", "a/$x"));
    assert!(m("a/#", "a/$x/y"));
    assert!(name("$SYS/x").is_system());
    assert!(!name("a/$SYS").is_system());
}

// ---- 4.7.3 topic semantics and usage ----

#[test]
fn mqtt_4_7_3_1_empty_rejected() {
    assert_eq!(TopicName::new(""), Err(TopicError::Empty));
    assert_eq!(TopicFilter::new(""), Err(TopicError::Empty));
}

#[test]
fn mqtt_4_7_3_2_null_character_rejected() {
    assert_eq!(TopicName::new("a\0b"), Err(TopicError::NullCharacter));
    assert_eq!(TopicName::new("\0"), Err(TopicError::NullCharacter));
    assert_eq!(TopicFilter::new("a/\0/#"), Err(TopicError::NullCharacter));
}

#[test]
fn mqtt_4_7_3_3_length_limit_in_bytes() {
    let at_limit = "a".repeat(MAX_TOPIC_LEN);
    assert!(TopicName::new(&at_limit).is_ok());
    assert!(TopicFilter::new(&at_limit).is_ok());
    let over = "a".repeat(MAX_TOPIC_LEN + 1);
    assert_eq!(TopicName::new(&over), Err(TopicError::TooLong));
    assert_eq!(TopicFilter::new(&over), Err(TopicError::TooLong));

    // Multibyte: 21 845 × '€' (3 bytes each) is exactly 65 535 bytes, far fewer chars.
    let euro = "€".repeat(21_845);
    assert_eq!(euro.len(), MAX_TOPIC_LEN);
    assert!(TopicName::new(&euro).is_ok());
    let euro_over = format!("{euro}a");
    assert_eq!(euro_over.chars().count(), 21_846);
    assert_eq!(TopicName::new(&euro_over), Err(TopicError::TooLong));
    // 2-byte chars: 32 767 × 'é' + "a" = 65 535 bytes; one more 'é' is over.
    let e_acute = format!("{}a", "é".repeat(32_767));
    assert!(TopicName::new(&e_acute).is_ok());
    let e_over = "é".repeat(32_768);
    assert_eq!(TopicName::new(&e_over), Err(TopicError::TooLong));
}

#[test]
fn mqtt_4_7_0_1_and_3_3_2_2_wildcards_not_allowed_in_names() {
    assert_eq!(TopicName::new("a/+"), Err(TopicError::WildcardInName));
    assert_eq!(TopicName::new("#"), Err(TopicError::WildcardInName));
    assert_eq!(TopicName::new("sport+"), Err(TopicError::WildcardInName));
}

#[test]
fn mqtt_4_7_3_case_sensitive() {
    assert!(!m("ACCOUNTS", "Accounts"));
    assert!(!m("Accounts", "ACCOUNTS"));
    assert!(m("Accounts", "Accounts"));
    assert_ne!(name("ACCOUNTS"), name("Accounts"));
}

#[test]
fn mqtt_4_7_3_spaces_and_empty_levels() {
    // "Accounts payable" is a valid topic name with a space.
    assert!(m("Accounts payable", "Accounts payable"));
    assert!(m("Accounts payable/+", "Accounts payable/ Q1 "));
    assert!(TopicName::new(" ").is_ok());
    // "/finance" differs from "finance".
    assert!(!m("finance", "/finance"));
    // Empty levels are real levels.
    assert!(m("a//b", "a//b"));
    assert!(m("a/+/b", "a//b"));
    assert!(!m("a/b", "a//b"));
    assert!(m("+/+/+", "a//b"));
    assert!(TopicName::new("/").is_ok());
    assert!(m("+/+", "/"));
    assert!(!m("+", "/"));
    let n = name("/a//b/");
    let levels: Vec<_> = n.levels().collect();
    assert_eq!(levels, ["", "a", "", "b", ""]);
}

// ---- shared subscriptions (MQTT 5.0, 4.8.2) ----

#[test]
fn shared_filter_parsing() {
    let s = filter("$share/g/a/+").shared().unwrap().unwrap();
    assert_eq!(&*s.group, "g");
    assert_eq!(s.filter, "a/+");

    let s = filter("$share/g/#").shared().unwrap().unwrap();
    assert_eq!(&*s.group, "g");
    assert_eq!(s.filter, "#");

    // [MQTT-4.8.2-1] the share name must be at least one character.
    assert_eq!(
        filter("$share//a").shared(),
        Err(TopicError::InvalidShareName)
    );
    assert_eq!(
        filter("$share/").shared(),
        Err(TopicError::InvalidShareName)
    );
    // [MQTT-4.8.2-2] no '/', '+' or '#' in the share name. "g+" is not even a valid
    // filter literally, and new() names the share name as the culprit.
    assert_eq!(
        TopicFilter::new("$share/g+/a"),
        Err(TopicError::InvalidShareName)
    );
    assert_eq!(
        filter("$share/+/a").shared(),
        Err(TopicError::InvalidShareName)
    );
    assert_eq!(
        filter("$share/#").shared(),
        Err(TopicError::InvalidShareName)
    );

    assert_eq!(
        filter("$share/g").shared(),
        Err(TopicError::EmptySharedFilter)
    );
    assert_eq!(
        filter("$share/g/").shared(),
        Err(TopicError::EmptySharedFilter)
    );

    assert_eq!(filter("$shared/g/a").shared(), Ok(None));
    assert_eq!(filter("$share").shared(), Ok(None));
    assert_eq!(filter("a/b").shared(), Ok(None));
    // A shared filter is matched literally; the broker matches the inner filter.
    assert!(!filter("$share/g/a/+").matches(&name("a/b")));
    assert!(filter("$share/g/a/+")
        .shared()
        .unwrap()
        .unwrap()
        .filter
        .matches(&name("a/b")));
}

// ---- API details ----

#[test]
fn trait_impls() {
    let owned = String::from("a/b");
    let n = TopicName::new(owned.clone()).unwrap();
    assert_eq!(n, TopicName::new("a/b").unwrap());
    assert_eq!(n, "a/b");
    assert!(n == *"a/b");
    assert_eq!(format!("{n}"), "a/b");
    assert_eq!(format!("{n:?}"), "TopicName(\"a/b\")");
    assert_eq!(n.len(), 3); // Deref<Target = str>
    assert_eq!("a/b".parse::<TopicName>().unwrap(), n);
    assert_eq!(TopicName::try_from(owned).unwrap(), n);
    assert_eq!(TopicName::try_from("a/+"), Err(TopicError::WildcardInName));
    let f: TopicFilter = "a/#".parse().unwrap();
    assert_eq!(format!("{f:?}"), "TopicFilter(\"a/#\")");
    assert!(f.has_wildcards());
    assert!(!filter("a/b").has_wildcards());
    assert_eq!(TopicFilter::try_from(String::from("a/+")).unwrap(), "a/+");

    // Borrow<str>: look a topic up by &str.
    let mut map = HashMap::new();
    map.insert(n.clone(), 1);
    assert_eq!(map.get("a/b"), Some(&1));

    let placeholder = TopicName::alias_placeholder();
    assert!(placeholder.is_empty());
    assert!(!n.is_empty());
    assert!(!TopicError::Empty.to_string().is_empty());
}

// ---- property tests ----

/// A reference matcher, written independently as a recursion on level slices.
fn naive_levels(f: &[&str], t: &[&str]) -> bool {
    match (f.split_first(), t.split_first()) {
        (None, None) => true,
        (Some((&"#", _)), _) => true,
        (Some((&"+", fr)), Some((_, tr))) => naive_levels(fr, tr),
        (Some((fl, fr)), Some((tl, tr))) => fl == tl && naive_levels(fr, tr),
        _ => false,
    }
}

fn naive_matches(f: &str, t: &str) -> bool {
    let fl: Vec<&str> = f.split('/').collect();
    let tl: Vec<&str> = t.split('/').collect();
    if tl[0].starts_with('$') && (fl[0] == "+" || fl[0] == "#") {
        return false;
    }
    naive_levels(&fl, &tl)
}

/// Whether `s` is a valid topic name, straight from the rules.
fn spec_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_TOPIC_LEN
        && !s.chars().any(|c| c == '\0' || c == '+' || c == '#')
}

/// Whether `s` is a valid topic filter, straight from the rules.
fn spec_valid_filter(s: &str) -> bool {
    let levels: Vec<&str> = s.split('/').collect();
    !s.is_empty()
        && s.len() <= MAX_TOPIC_LEN
        && !s.contains('\0')
        && levels.iter().enumerate().all(|(i, l)| {
            *l == "+"
                || (*l == "#" && i == levels.len() - 1)
                || !(l.contains('+') || l.contains('#'))
        })
}

fn topic_level() -> impl Strategy<Value = String> {
    "[a-z$ é]{0,3}"
}

fn small_filter() -> impl Strategy<Value = String> {
    let level = prop_oneof![Just("a"), Just("b"), Just(""), Just("$x"), Just("+")];
    (prop::collection::vec(level, 1..5), any::<bool>()).prop_map(|(levels, hash)| {
        let mut levels = levels;
        if hash {
            levels.push("#");
        }
        levels.join("/")
    })
}

fn small_topic() -> impl Strategy<Value = String> {
    let level = prop_oneof![Just("a"), Just("b"), Just(""), Just("$x")];
    prop::collection::vec(level, 1..5).prop_map(|levels| levels.join("/"))
}

/// Strings biased towards the characters the rules care about.
fn tricky_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a/+#\u{0}$ é]{0,12}",
        Just("a".repeat(MAX_TOPIC_LEN)),
        Just("a".repeat(MAX_TOPIC_LEN + 1)),
    ]
}

proptest! {
    #[test]
    fn filter_from_own_levels_matches(
        levels in prop::collection::vec(topic_level(), 1..6),
        plus_mask in prop::collection::vec(any::<bool>(), 6),
        hash_at in 0usize..7,
    ) {
        let topic = levels.join("/");
        prop_assume!(!topic.is_empty());
        let t = TopicName::new(&topic).unwrap();
        let dollar = topic.starts_with('$');

        // Some levels replaced by '+'.
        let plus: Vec<&str> = levels
            .iter()
            .zip(&plus_mask)
            .map(|(l, &p)| if p { "+" } else { l.as_str() })
            .collect();
        let f = TopicFilter::new(plus.join("/")).unwrap();
        let expected = !(dollar && plus_mask[0]);
        prop_assert_eq!(f.matches(&t), expected, "filter {} topic {}", f, topic);

        // The tail from `hash_at` replaced by '#' (hash_at may be past the end: "topic/#").
        let k = hash_at.min(levels.len());
        let mut hashed: Vec<&str> = plus[..k].to_vec();
        hashed.push("#");
        let f = TopicFilter::new(hashed.join("/")).unwrap();
        let first_is_wild = k == 0 || plus_mask[0];
        prop_assert_eq!(f.matches(&t), !(dollar && first_is_wild), "filter {} topic {}", f, topic);
    }

    #[test]
    fn matches_agrees_with_reference(f in small_filter(), t in small_topic()) {
        // A single empty level joins to "", which is neither a valid filter nor name.
        prop_assume!(!f.is_empty() && !t.is_empty());
        prop_assert!(TopicFilter::new(&f).is_ok());
        prop_assert!(TopicName::new(&t).is_ok());
        prop_assert_eq!(matches(&f, &t), naive_matches(&f, &t), "filter {} topic {}", f, t);
    }

    #[test]
    fn name_validation_is_exactly_the_rules(s in tricky_string()) {
        let result = TopicName::new(&s);
        prop_assert_eq!(result.is_ok(), spec_valid_name(&s), "{:?}", s);
        if let Ok(n) = result {
            prop_assert_eq!(n.as_str(), s.as_str());
        }
    }

    #[test]
    fn filter_validation_is_exactly_the_rules(s in tricky_string()) {
        let result = TopicFilter::new(&s);
        prop_assert_eq!(result.is_ok(), spec_valid_filter(&s), "{:?}", s);
        if let Ok(f) = result {
            // Never panics, and an Ok shared filter has a valid inner filter.
            if let Ok(Some(shared)) = f.shared() {
                prop_assert!(spec_valid_filter(shared.filter.as_str()));
            }
        }
    }

    #[test]
    fn matches_never_panics_on_arbitrary_input(f in tricky_string(), t in tricky_string()) {
        let _ = matches(&f, &t);
    }
}
