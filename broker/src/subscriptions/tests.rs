//! Tests of the subscription index.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::testing::{Rng, FILTER_LEVELS, TOPIC_LEVELS};
use protocol::QoS;

fn entry(qos: QoS) -> SubEntry {
    SubEntry {
        options: SubscriptionOptions {
            qos,
            ..Default::default()
        },
        id: None,
    }
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s).unwrap()
}

fn matches(subs: &Subscriptions, topic: &str) -> Vec<u64> {
    let mut out = Vec::new();
    subs.for_each_match(topic, |s, _| out.push(s.0));
    out.sort_unstable();
    out
}

/// The members of every group matching `topic`, as sorted (session, group index) pairs;
/// groups are told apart by their members' entry ids.
fn group_matches(subs: &mut Subscriptions, topic: &str) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    subs.for_each_matching_group(topic, |_, g| {
        out.extend(g.members.iter().map(|(s, e)| (s.0, e.id.unwrap())));
    });
    out.sort_unstable();
    out
}

fn random_topic(rng: &mut Rng) -> Option<String> {
    let t = rng.levels(TOPIC_LEVELS, TOPIC_LEVELS);
    protocol::TopicName::new(&t).ok().map(|_| t)
}

fn random_filter(rng: &mut Rng) -> Option<String> {
    let f = rng.levels(FILTER_LEVELS, &["#"]);
    TopicFilter::new(&f).ok().map(|_| f)
}

#[test]
fn the_trie_matches_exactly_like_the_reference_matcher_on_random_filters_and_topics() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _round in 0..50 {
        let mut subs = Subscriptions::default();
        // (session, filter) of the ordinary subscriptions, and (session, group, inner
        // filter) of the shared ones, as the reference.
        let mut plain: Vec<(u64, String)> = Vec::new();
        let mut shared: Vec<(u64, u32, String)> = Vec::new();
        for _ in 0..40 {
            let Some(f) = random_filter(&mut rng) else {
                continue;
            };
            let session = rng.below(5) as u64;
            if rng.below(3) == 0 {
                let group = rng.below(3) as u32;
                let mut e = entry(QoS::AtMostOnce);
                e.id = Some(group);
                subs.insert(
                    SessionId(session),
                    &filter(&format!("$share/g{group}/{f}")),
                    e,
                );
                if !shared.contains(&(session, group, f.clone())) {
                    shared.push((session, group, f));
                }
            } else {
                subs.insert(SessionId(session), &filter(&f), entry(QoS::AtMostOnce));
                if !plain.contains(&(session, f.clone())) {
                    plain.push((session, f));
                }
            }
        }
        assert_eq!(subs.len(), plain.len() + shared.len());
        for _ in 0..40 {
            let Some(topic) = random_topic(&mut rng) else {
                continue;
            };
            let mut expected: Vec<u64> = plain
                .iter()
                .filter(|(_, f)| protocol::topic::matches(f, &topic))
                .map(|(s, _)| *s)
                .collect();
            expected.sort_unstable();
            assert_eq!(
                matches(&subs, &topic),
                expected,
                "topic {topic:?} {plain:?}"
            );
            let mut expected: Vec<(u64, u32)> = shared
                .iter()
                .filter(|(_, _, f)| protocol::topic::matches(f, &topic))
                .map(|(s, g, _)| (*s, *g))
                .collect();
            expected.sort_unstable();
            assert_eq!(
                group_matches(&mut subs, &topic),
                expected,
                "topic {topic:?}"
            );
        }
        for (s, f) in plain {
            assert!(subs.remove(SessionId(s), &filter(&f)));
        }
        for (s, g, f) in shared {
            assert!(subs.remove(SessionId(s), &filter(&format!("$share/g{g}/{f}"))));
        }
        assert!(subs.is_empty());
        assert_eq!(subs.node_count(), 1, "removal prunes back to the root");
    }
}

#[test]
fn the_dollar_rule_and_the_parent_level_of_hash_hold_mqtt_4_7_2_1_and_4_7_1_2() {
    let mut subs = Subscriptions::default();
    for (i, f) in ["#", "+/x", "$SYS/#", "sport/#", "+", "$share/g/#"]
        .iter()
        .enumerate()
    {
        let mut e = entry(QoS::AtMostOnce);
        e.id = Some(i as u32);
        subs.insert(SessionId(i as u64), &filter(f), e);
    }
    assert_eq!(matches(&subs, "$SYS/x"), vec![2]);
    assert_eq!(matches(&subs, "$SYS"), vec![2]);
    assert!(group_matches(&mut subs, "$SYS/x").is_empty());
    assert_eq!(matches(&subs, "sport"), vec![0, 3, 4]);
    assert_eq!(matches(&subs, "a/x"), vec![0, 1]);
    assert_eq!(group_matches(&mut subs, "a/x"), vec![(5, 5)]);
}

#[test]
fn removing_prunes_and_counts() {
    let mut subs = Subscriptions::default();
    let f = filter("a/+/c");
    assert!(!subs.insert(SessionId(1), &f, entry(QoS::AtMostOnce)));
    assert!(subs.insert(SessionId(1), &f, entry(QoS::AtLeastOnce)));
    assert_eq!(subs.len(), 1);
    assert_eq!(subs.node_count(), 4);
    subs.insert(SessionId(2), &filter("a/b"), entry(QoS::AtMostOnce));
    assert_eq!(subs.node_count(), 5);
    assert!(subs.remove(SessionId(1), &f));
    assert!(!subs.remove(SessionId(1), &f));
    assert_eq!(subs.node_count(), 3, "a and a/b stay");
    assert!(!subs.remove(SessionId(2), &filter("a/b/c")));
    assert!(subs.remove(SessionId(2), &filter("a/b")));
    assert!(subs.is_empty());
    assert_eq!(subs.node_count(), 1);
    assert_eq!(subs.links.len(), 1, "the arena gave its nodes back");
}

#[test]
fn only_nodes_where_a_filter_ends_hold_subscriptions() {
    let mut subs = Subscriptions::default();
    let with_payload = |subs: &Subscriptions| subs.payload.iter().flatten().count();
    subs.insert(
        SessionId(1),
        &filter("home/one/cmd"),
        entry(QoS::AtMostOnce),
    );
    subs.insert(
        SessionId(2),
        &filter("home/two/cmd"),
        entry(QoS::AtMostOnce),
    );
    assert_eq!(subs.node_count(), 6);
    assert_eq!(with_payload(&subs), 2, "the two cmd nodes");
    // A filter ending on an inner node gives it subscriptions, and takes them back.
    let inner = filter("$share/g/home/one");
    subs.insert(SessionId(3), &inner, entry(QoS::AtMostOnce));
    subs.insert(SessionId(4), &filter("home/one"), entry(QoS::AtMostOnce));
    assert_eq!(with_payload(&subs), 3);
    assert!(subs.remove(SessionId(3), &inner));
    assert_eq!(with_payload(&subs), 3, "home/one still has session 4");
    assert!(subs.remove(SessionId(4), &filter("home/one")));
    assert_eq!(with_payload(&subs), 2);
    assert_eq!(subs.node_count(), 6, "home/one stays: it has a child");
    assert_eq!(matches(&subs, "home/one/cmd"), vec![1]);
}

#[test]
fn a_filter_followed_by_many_keeps_every_subscriber_across_the_vector_and_hash_forms() {
    let mut subs = Subscriptions::default();
    let f = filter("news/#");
    let n = 3 * FEW as u64;
    let is_many = |subs: &Subscriptions| {
        let node = subs.find("news/#").unwrap();
        matches!(
            subs.payload[node].as_ref().map(|p| &p.subs),
            Some(Subscribers::Many(_))
        )
    };
    for i in 0..n {
        assert!(!subs.insert(SessionId(i), &f, entry(QoS::AtMostOnce)));
        assert_eq!(matches(&subs, "news/x"), (0..=i).collect::<Vec<_>>());
    }
    assert!(is_many(&subs));
    // Replacing an entry in either form keeps one subscription, with the new options.
    assert!(subs.insert(SessionId(0), &f, entry(QoS::ExactlyOnce)));
    assert_eq!(subs.len(), n as usize);
    for i in (1..n).rev() {
        assert!(subs.remove(SessionId(i), &f));
        assert!(!subs.remove(SessionId(i), &f));
        assert_eq!(matches(&subs, "news/x"), (0..i).collect::<Vec<_>>());
    }
    assert!(!is_many(&subs), "back to a vector once few");
    let mut qos = Vec::new();
    subs.for_each_match("news/x", |_, e| qos.push(e.options.qos));
    assert_eq!(qos, [QoS::ExactlyOnce]);
    assert!(subs.remove(SessionId(0), &f));
    assert_eq!(subs.node_count(), 1);
}

#[test]
fn shared_groups_are_found_by_name_on_the_filters_node_and_take_members_in_order() {
    let mut subs = Subscriptions::default();
    let f = filter("$share/g/a/#");
    subs.insert(SessionId(1), &f, entry(QoS::AtMostOnce));
    subs.insert(SessionId(2), &f, entry(QoS::AtMostOnce));
    subs.insert(
        SessionId(3),
        &filter("$share/h/a/#"),
        entry(QoS::AtMostOnce),
    );
    assert!(matches(&subs, "a/b").is_empty());
    let mut groups = Vec::new();
    subs.for_each_matching_group("a/b", |_, g| {
        groups.push(g.members.iter().map(|m| m.0 .0).collect::<Vec<_>>());
    });
    groups.sort();
    assert_eq!(groups, vec![vec![1, 2], vec![3]]);
    assert!(subs.remove(SessionId(1), &f));
    assert!(subs.remove(SessionId(2), &f));
    assert!(!subs.remove(SessionId(2), &f));
    assert!(subs.remove(SessionId(3), &filter("$share/h/a/#")));
    let mut n = 0;
    subs.for_each_matching_group("a/b", |_, _| n += 1);
    assert_eq!(n, 0);
    assert_eq!(subs.node_count(), 1);
}

#[test]
fn a_hundred_thousand_groups_cost_nothing_to_a_publish_on_an_unrelated_topic() {
    let mut subs = Subscriptions::default();
    for i in 0..100_000u64 {
        let f = filter(&format!("$share/g{i}/sensors/{i}/temp"));
        subs.insert(SessionId(i), &f, entry(QoS::AtLeastOnce));
    }
    assert_eq!(subs.len(), 100_000);
    // Root, then no child "other": one node.
    let touched = walk(&subs.links, "other/topic", |_| panic!("nothing matches"));
    assert_eq!(touched, 1);
    // A matching topic walks its own three levels and finds its one group.
    let mut hits = 0;
    let touched = walk(&subs.links, "sensors/77/temp", |n| {
        hits += subs.payload[n]
            .as_ref()
            .and_then(|p| p.groups.as_ref())
            .map_or(0, |g| g.len());
    });
    assert_eq!((touched, hits), (4, 1));
    let mut found = Vec::new();
    subs.for_each_matching_group("sensors/77/temp", |_, g| found.push(g.members[0].0));
    assert_eq!(found, vec![SessionId(77)]);
}

#[test]
fn a_filter_of_sixty_five_thousand_levels_is_inserted_matched_removed_and_dropped_on_a_64_kib_stack(
) {
    // The longest valid filter is 65 535 bytes: 65 536 empty levels; and 32 768 `+`.
    let deep_empty = "/".repeat(65_535);
    let deep_plus = format!("{}+", "+/".repeat(32_767));
    let deep_topic = format!("{}a", "a/".repeat(32_767));
    std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut subs = Subscriptions::default();
            for (i, f) in [&deep_empty, &deep_plus, &deep_topic]
                .into_iter()
                .enumerate()
            {
                subs.insert(SessionId(i as u64), &filter(f), entry(QoS::AtMostOnce));
                let shared = filter(&format!("$share/g/{}", &f[..f.len() - 16]));
                subs.insert(SessionId(i as u64), &shared, entry(QoS::AtMostOnce));
            }
            assert!(subs.node_count() > 130_000);
            assert_eq!(matches(&subs, &deep_empty), vec![0]);
            assert_eq!(matches(&subs, &deep_topic), vec![1, 2]);
            let mut n = 0;
            subs.for_each_matching_group(&deep_topic, |_, _| n += 1);
            assert_eq!(n, 0, "the shared filters are shorter than the topic");
            assert!(subs.remove(SessionId(0), &filter(&deep_empty)));
            assert!(subs.remove(SessionId(1), &filter(&deep_plus)));
            // One deep filter is left in place for Drop to free.
            drop(subs);
            let mut subs = Subscriptions::default();
            subs.insert(SessionId(1), &filter(&deep_plus), entry(QoS::AtMostOnce));
            assert!(subs.remove(SessionId(1), &filter(&deep_plus)));
            assert_eq!(subs.node_count(), 1);
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn the_walk_stack_spills_to_the_heap_beyond_its_inline_frames() {
    let mut frames = Frames::new();
    for i in 0..100 {
        frames.push(Frame { node: i, pos: i });
    }
    for i in (0..100).rev() {
        assert_eq!(frames.pop().map(|f| f.node), Some(i));
    }
    assert!(frames.pop().is_none());
}
