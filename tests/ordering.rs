//! Packets from different connections reach the engine in the order the sockets delivered
//! them, as far as one process can tell.
//!
//! MQTT orders packets within a connection only, but the brokers users compare us to
//! (mosquitto: one event loop) handle packets across connections in arrival order, and
//! request/response code and test suites rely on it: a client that subscribes and, without
//! waiting for the SUBACK, has another client publish, expects the message.

use std::time::Duration;

use e2e::{filter, topic, Bridge, RawClient, Read, Transport};
use protocol::{
    Connect, Packet, PacketId, ProtocolVersion, Publish, Subscribe, Subscription,
    SubscriptionOptions,
};

const TRIES: usize = 40;

#[tokio::test]
async fn a_publish_sent_right_after_another_clients_subscribe_is_never_routed_before_it() {
    let bridge = Bridge::start();
    for transport in [Transport::Tcp, Transport::Ws] {
        let endpoint = bridge.endpoint(transport);
        let mut misses = 0;
        for i in 0..TRIES {
            let mut sub = RawClient::open(&endpoint).await;
            sub.connect(Connect::new(
                ProtocolVersion::V5,
                format!("order-sub-{i}"),
                true,
            ))
            .await;
            let mut publisher = RawClient::open(&endpoint).await;
            publisher
                .connect(Connect::new(
                    ProtocolVersion::V5,
                    format!("order-pub-{i}"),
                    true,
                ))
                .await;
            let name = format!("order/{transport:?}/{i}");
            let subscribe = Packet::Subscribe(Subscribe {
                packet_id: PacketId::new(1).expect("1 is a packet id"),
                subscriptions: vec![Subscription {
                    filter: filter(&name),
                    options: SubscriptionOptions::default(),
                }],
                properties: Default::default(),
            });
            let publish =
                Packet::Publish(Publish::new(topic(&name), bytes::Bytes::from_static(b"m")));
            // Back to back, from two sockets: the SUBSCRIBE is on the wire first.
            sub.send(subscribe).await;
            publisher.send(publish).await;
            let mut got = false;
            let mut seen = Vec::new();
            loop {
                match sub.read_within(Duration::from_millis(500)).await {
                    Read::Packet(Packet::Publish(p)) if p.topic.as_str() == name => {
                        got = true;
                        break;
                    }
                    Read::Packet(p) => seen.push(p),
                    Read::Nothing | Read::Closed => break,
                }
            }
            if !got {
                misses += 1;
            }
        }
        assert_eq!(
            misses, 0,
            "{transport:?}: {misses} of {TRIES} PUBLISHes overtook the SUBSCRIBE sent before them"
        );
    }
}
