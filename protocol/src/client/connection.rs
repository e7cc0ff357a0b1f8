//! The connection: CONNECT, CONNACK (resuming our session or starting over), DISCONNECT.

use core::time::Duration;

use crate::packet::{ConnAck, Connect, Disconnect, Packet, ProtocolVersion, QoS};
use crate::properties::Properties;
use crate::reason::ReasonCode;

use super::{Client, ClientError, Event, State, Timestamp};
use crate::prelude::*;

impl Client {
    /// Starts a connection on a freshly opened transport: queues CONNECT.
    pub fn connect(&mut self, now: Timestamp) -> Result<(), ClientError> {
        if self.state != State::Disconnected {
            return Err(ClientError::AlreadyConnected);
        }
        self.decoder.reset();
        self.transmit.clear();
        self.ping_sent = None;
        let mut properties = self.opts.connect_properties.clone();
        if self.opts.version == ProtocolVersion::V5 {
            properties.session_expiry_interval = self.opts.session_expiry_interval;
            if self.opts.receive_maximum != u16::MAX {
                properties.receive_maximum = Some(self.opts.receive_maximum.max(1));
            }
            properties.maximum_packet_size = Some(self.opts.max_packet_size);
            if self.opts.topic_alias_maximum > 0 {
                properties.topic_alias_maximum = Some(self.opts.topic_alias_maximum);
            }
        }
        let connect = Connect {
            protocol: self.opts.version,
            clean_start: self.opts.clean_start,
            keep_alive: self.opts.keep_alive,
            client_id: self.opts.client_id.clone(),
            will: self.opts.will.clone(),
            username: self.opts.username.clone(),
            password: self.opts.password.clone(),
            properties,
        };
        self.keep_alive = Duration::from_secs(u64::from(self.opts.keep_alive));
        self.send(Packet::Connect(Box::new(connect)), now);
        self.state = State::Connecting { since: now };
        Ok(())
    }

    /// The transport closed (or failed). In-flight messages are kept for the next connection.
    pub fn connection_lost(&mut self) {
        self.state = State::Disconnected;
        self.transmit.clear();
        self.ping_sent = None;
        for r in self.requests.values_mut() {
            r.sent = false;
        }
    }

    /// Sends DISCONNECT and ends the connection; the will is not published. A persistent
    /// session's in-flight messages are kept.
    pub fn disconnect(&mut self, reason: ReasonCode, now: Timestamp) {
        if self.state == State::Connected {
            self.send(Packet::Disconnect(Disconnect::new(reason)), now);
        }
        self.state = State::Disconnected;
        self.ping_sent = None;
        for r in self.requests.values_mut() {
            r.sent = false;
        }
    }

    /// CONNACK: the connection is refused, or accepted with the session resumed or void.
    pub(super) fn on_connack(&mut self, ack: ConnAck, now: Timestamp) -> Result<(), ClientError> {
        self.check_connack(&ack)?;
        self.state = State::Connected;
        self.session_present = ack.session_present;
        self.apply_server_limits(&ack.properties);
        if ack.session_present {
            self.resend_inflight(now);
        } else {
            self.forget_session();
            self.resubscribe()?;
        }
        self.send_unsent_requests(now);
        self.events.push_back(Event::Connected {
            session_present: ack.session_present,
            connack: ack,
        });
        self.drain_queue(now);
        Ok(())
    }

    /// Ends the connection attempt when CONNACK refuses it or breaks the protocol.
    fn check_connack(&mut self, ack: &ConnAck) -> Result<(), ClientError> {
        if ack.reason.is_error() {
            self.connection_lost();
            return Err(ClientError::Refused(ack.reason));
        }
        if self.opts.version == ProtocolVersion::V5 && self.opts.clean_start && ack.session_present
        {
            // [MQTT-3.2.2-4]: a session cannot be present after Clean Start.
            self.connection_lost();
            return Err(ClientError::Protocol("session present after clean start"));
        }
        Ok(())
    }

    /// Takes the server's limits and assignments from the CONNACK properties (absent ones
    /// mean no limit).
    fn apply_server_limits(&mut self, p: &Properties) {
        self.send_window = p.receive_maximum.unwrap_or(u16::MAX);
        self.server_max_packet = p.maximum_packet_size.map_or(usize::MAX, |m| m as usize);
        self.server_max_qos = p.maximum_qos.unwrap_or(QoS::ExactlyOnce);
        self.server_retain = p.retain_available.unwrap_or(true);
        if let Some(ka) = p.server_keep_alive {
            self.keep_alive = Duration::from_secs(u64::from(ka));
        }
        if let Some(id) = &p.assigned_client_identifier {
            self.opts.client_id = id.clone();
        }
    }

    /// No session on the server: our session state is void [MQTT-3.2.2-5]. Incoming QoS 2
    /// flows are forgotten; outgoing messages are done or sent again as new ones.
    fn forget_session(&mut self) {
        // Everything below changes: the store follows.
        self.touch_all();
        self.inbound_qos2.clear();
        self.requeue_inflight();
    }
}
