//! Topic names, topic filters and topic matching (MQTT 3.1.1 and 5.0, section 4.7; shared
//! subscriptions, MQTT 5.0 section 4.8.2).
//!
//! A [`TopicName`] is what a PUBLISH is sent to; a [`TopicFilter`] is what a SUBSCRIBE asks
//! for. Both are validated once, when they are built, so the rest of the crate (and the broker)
//! can rely on the rules of section 4.7 without checking again. Both hold an `Arc<str>` so a
//! broker can fan one topic out to many sessions without copying it.
//!
//! [`matches()`] is the allocation-free matcher on raw strings used on the broker's hot path.

use crate::prelude::*;
use alloc::sync::Arc;
use core::borrow::Borrow;
use core::fmt;
use core::ops::Deref;
use core::str::FromStr;

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
    pub fn levels(&self) -> core::str::Split<'_, char> {
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
mod tests;
