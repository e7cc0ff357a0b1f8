//! Topic names, topic filters and topic matching (MQTT 3.1.1 and 5.0, section 4.7; shared
//! subscriptions, MQTT 5.0 section 4.8.2).
//!
//! A [`TopicName`] is what a PUBLISH is sent to; a [`TopicFilter`] is what a SUBSCRIBE asks
//! for. Both are validated once, when they are built, so the rest of the crate (and the broker)
//! can rely on the rules of section 4.7 without checking again. Both hold an `Arc<str>` so a
//! broker can fan one topic out to many sessions without copying it.
//!
//! [`matches()`] is the allocation-free matcher on raw strings used on the broker's hot path.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::Arc;

/// The largest topic name or filter, in bytes of UTF-8: the length prefix of a UTF-8 encoded
/// string is a 16-bit integer [MQTT-4.7.3-3].
pub const MAX_TOPIC_LEN: usize = 65_535;

/// The prefix that marks an MQTT 5.0 shared subscription, `$share/{group}/{filter}` (4.8.2).
const SHARE_PREFIX: &str = "$share/";

/// Why a topic name or filter is invalid.
///
/// Each variant names the rule that was broken, so a broker can pick the right reason code and
/// a user can fix the string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The topic is zero bytes long; names and filters must be at least one character
    /// [MQTT-4.7.3-1].
    #[error("topic is empty: a topic name or filter must be at least one character long")]
    Empty,
    /// The topic is longer than [`MAX_TOPIC_LEN`] bytes of UTF-8 [MQTT-4.7.3-3].
    #[error("topic is longer than 65535 bytes of UTF-8")]
    TooLong,
    /// The topic contains the null character U+0000 [MQTT-4.7.3-2].
    #[error("topic contains the null character U+0000")]
    NullCharacter,
    /// A topic name contains `+` or `#`; wildcards are only allowed in filters
    /// [MQTT-3.3.2-2], [MQTT-4.7.0-1].
    #[error("topic name contains a wildcard ('+' or '#'); wildcards are only allowed in filters")]
    WildcardInName,
    /// `#` is used somewhere other than alone in the last level of a filter [MQTT-4.7.1-2].
    #[error("'#' must be the last level of a topic filter and stand alone in it (e.g. \"a/#\" or \"#\")")]
    MisplacedMultiLevelWildcard,
    /// `+` shares its level with other characters [MQTT-4.7.1-3].
    #[error("'+' must occupy a whole level of a topic filter (e.g. \"a/+/b\" or \"+\")")]
    MisplacedSingleLevelWildcard,
    /// The group name of a `$share/{group}/{filter}` subscription is empty or contains `/`,
    /// `+` or `#` [MQTT-4.8.2-1], [MQTT-4.8.2-2].
    #[error("invalid shared subscription group name: it must be non-empty and contain no '/', '+' or '#'")]
    InvalidShareName,
    /// A `$share/{group}` subscription has no topic filter after the group name.
    #[error("shared subscription has no topic filter after the group name")]
    EmptySharedFilter,
}

/// The checks common to topic names and filters: length in bytes and no U+0000 (4.7.3).
fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    if s.as_bytes().contains(&0) {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// Validates a topic name: the common rules plus no wildcard characters.
pub(crate) fn validate_name(s: &str) -> Result<(), TopicError> {
    check_common(s)?;
    if s.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Validates a topic filter: the common rules plus the placement of wildcards (4.7.1).
///
/// A misplaced wildcard in the group level of a `$share/` filter (e.g. `$share/g+/a`) is
/// reported as [`TopicError::InvalidShareName`], which says more than "misplaced '+'".
fn validate_filter(s: &str) -> Result<(), TopicError> {
    check_common(s)?;
    let shared = s.starts_with(SHARE_PREFIX);
    let mut levels = s.split('/').enumerate().peekable();
    while let Some((i, level)) = levels.next() {
        let is_last = levels.peek().is_none();
        let error = if level.contains('#') {
            (level != "#" || !is_last).then_some(TopicError::MisplacedMultiLevelWildcard)
        } else if level.contains('+') {
            (level != "+").then_some(TopicError::MisplacedSingleLevelWildcard)
        } else {
            None
        };
        if let Some(error) = error {
            return Err(if shared && i == 1 {
                TopicError::InvalidShareName
            } else {
                error
            });
        }
    }
    Ok(())
}

/// Implements the string-like traits shared by [`TopicName`] and [`TopicFilter`].
macro_rules! impl_topic_traits {
    ($ty:ident) => {
        impl $ty {
            /// The topic as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($ty))
                    .field(&self.as_str())
                    .finish()
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        /// Hash, Eq and Ord are those of the string, so a map keyed by this type can be
        /// looked up with a `&str`.
        impl Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                self.as_str()
            }
        }

        impl Deref for $ty {
            type Target = str;
            fn deref(&self) -> &str {
                self.as_str()
            }
        }

        impl FromStr for $ty {
            type Err = TopicError;
            fn from_str(s: &str) -> Result<Self, TopicError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = TopicError;
            fn try_from(s: &str) -> Result<Self, TopicError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = TopicError;
            fn try_from(s: String) -> Result<Self, TopicError> {
                Self::new(s)
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

/// A validated topic name (what a PUBLISH is sent to).
///
/// Invariant: non-empty, no `+` or `#`, no U+0000, at most [`MAX_TOPIC_LEN`] bytes
/// (4.7.3, [MQTT-4.7.0-1]). The only exception is `TopicName::alias_placeholder`, which is
/// empty and never leaves the codec. Cheap to clone (`Arc<str>`) because the broker fans one
/// name out to many subscribers.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Arc<str>);

impl TopicName {
    /// Validates `s` as a topic name.
    ///
    /// # Errors
    /// [`TopicError::Empty`], [`TopicError::TooLong`], [`TopicError::NullCharacter`] or
    /// [`TopicError::WildcardInName`].
    pub fn new(s: impl AsRef<str>) -> Result<Self, TopicError> {
        let s = s.as_ref();
        validate_name(s)?;
        Ok(Self(Arc::from(s)))
    }

    /// Whether the name starts with `$` (e.g. `$SYS/...`). Such topics are not matched by
    /// filters starting with a wildcard [MQTT-4.7.2-1].
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }

    /// The levels of the name, split on `/`. Empty levels are real levels: `"/a"` has the two
    /// levels `""` and `"a"`.
    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.0.split('/')
    }

    /// For the codec only: a name that is allowed to be empty, used for an MQTT 5.0 PUBLISH
    /// that carries only a Topic Alias; the codec replaces it before any user sees it.
    pub(crate) fn alias_placeholder() -> Self {
        Self(Arc::from(""))
    }

    /// Whether the name is empty, which only `TopicName::alias_placeholder` can be.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl_topic_traits!(TopicName);

/// A validated topic filter (what a SUBSCRIBE asks for).
///
/// Invariant: non-empty, no U+0000, at most [`MAX_TOPIC_LEN`] bytes, `#` only as the whole
/// last level, `+` only as a whole level [MQTT-4.7.1-1..3], [MQTT-4.7.3-1..3].
/// A `$share/...` filter is accepted here as long as it is a valid filter literally; use
/// [`TopicFilter::shared`] to check and split it as an MQTT 5.0 shared subscription.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(Arc<str>);

impl TopicFilter {
    /// Validates `s` as a topic filter.
    ///
    /// # Errors
    /// [`TopicError::Empty`], [`TopicError::TooLong`], [`TopicError::NullCharacter`],
    /// [`TopicError::MisplacedMultiLevelWildcard`],
    /// [`TopicError::MisplacedSingleLevelWildcard`], or [`TopicError::InvalidShareName`] when
    /// the misplaced wildcard is in the group name of a `$share/` filter.
    pub fn new(s: impl AsRef<str>) -> Result<Self, TopicError> {
        let s = s.as_ref();
        validate_filter(s)?;
        Ok(Self(Arc::from(s)))
    }

    /// Whether the filter contains `+` or `#`; a filter without them matches exactly one name.
    pub fn has_wildcards(&self) -> bool {
        self.0.bytes().any(|b| b == b'+' || b == b'#')
    }

    /// Does this filter match the topic name? Literal match of the whole filter string (a
    /// `$share/...` filter is matched literally; the broker strips the share prefix first, see
    /// [`TopicFilter::shared`]). Same rules as [`matches()`].
    pub fn matches(&self, topic: &TopicName) -> bool {
        matches(self.as_str(), topic.as_str())
    }

    /// For MQTT 5.0 shared subscriptions (4.8.2): `Ok(None)` if the filter does not start
    /// with `$share/`, `Ok(Some(..))` with the group and the inner filter for
    /// `$share/{group}/{filter}`.
    ///
    /// # Errors
    /// [`TopicError::InvalidShareName`] if the group is empty or contains `+` or `#`
    /// [MQTT-4.8.2-1], [MQTT-4.8.2-2]; [`TopicError::EmptySharedFilter`] if nothing follows
    /// the group (`$share/g` or `$share/g/`).
    pub fn shared(&self) -> Result<Option<SharedFilter>, TopicError> {
        let Some(rest) = self.0.strip_prefix(SHARE_PREFIX) else {
            return Ok(None);
        };
        let (group, filter) = rest.split_once('/').unwrap_or((rest, ""));
        if group.is_empty() || group.contains(['+', '#']) {
            return Err(TopicError::InvalidShareName);
        }
        if filter.is_empty() {
            return Err(TopicError::EmptySharedFilter);
        }
        Ok(Some(SharedFilter {
            group: Arc::from(group),
            filter: TopicFilter::new(filter)?,
        }))
    }
}

impl_topic_traits!(TopicFilter);

/// The parts of a shared subscription `$share/{group}/{filter}` (MQTT 5.0, 4.8.2).
///
/// Invariant (when built by [`TopicFilter::shared`]): `group` is non-empty and has no `/`,
/// `+` or `#`; `filter` is a valid filter, which is what the broker matches topics against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SharedFilter {
    /// The share name: subscriptions with the same group and filter share the messages.
    pub group: Arc<str>,
    /// The filter the messages are matched against, without the `$share/{group}/` prefix.
    pub filter: TopicFilter,
}

/// Topic matching on raw strings that are already a valid filter and a valid name (the hot
/// path of the broker's router; allocation-free, iterates levels once).
///
/// Rules (4.7): `+` matches exactly one level (possibly empty); `#` matches the parent level
/// and any number of child levels (`sport/#` matches `sport`); a filter starting with `+` or
/// `#` does not match a topic starting with `$` [MQTT-4.7.2-1]; empty levels are real levels
/// (`a//b`, `/a`). Matching is case sensitive. On strings that are not valid, the result is
/// unspecified but this never panics.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) => {
                if f != t {
                    return false;
                }
            }
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
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
}
