//! The frames nodes exchange on the bus, one JSON object per bus message.
//!
//! Every frame names its sender (`node`, the `--node-id`) and the sender's
//! `epoch` (a number fixed at process start that grows with each restart,
//! so a restarted node is told apart from its previous life). `t` is the
//! kind:
//!
//! # Format
//!
//! ```text
//! {"node":"a","epoch":1718000000123456,"t":"ops","seq":7,"ops":[
//!    {"op":"put","ch":"presence.room","pid":"8f3a0c1200000004","uid":"jim","info":{"name":"Jim"}},
//!    {"op":"del","ch":"presence.room","pid":"8f3a0c1200000003","uid":"ann"},
//!    {"op":"subs","ch":"news","n":3},
//!    {"op":"msg","id":"01J0…","ch":"presence.room","event":"chat","data":"{\"text\":\"hi\"}",
//!     "sender":{"conn":"8f3a0c1200000004","uid":"jim","info":{"name":"Jim"},"echo":false}}]}
//! {"node":"a","epoch":1718000000123456,"t":"hb","seq":7,"sent":1718000004000,"conns":12}
//! {"node":"b","epoch":1718000000999999,"t":"sync","target":"a"}      (target null: every node)
//! {"node":"a","epoch":1718000000123456,"t":"state","seq":7,"presences":[
//!    {"ch":"presence.room","pid":"8f3a0c1200000004","uid":"jim","info":{"name":"Jim"}}],
//!  "subs":{"news":3}}
//! {"node":"a","epoch":1718000000123456,"t":"bye"}
//! ```
//!
//! - `ops`: a batch of changes to the sender's own presences (`put` adds or
//!   replaces, `del` removes), its subscriber counts (`subs`, below) and
//!   messages published on the sender, in the order they happened. `seq`
//!   counts the sender's `ops` frames: a receiver that sees `seq` jump has
//!   missed a frame and asks for a state.
//! - `subs`: the sender's number of subscriptions to `ch` that are not
//!   memberships (plain pub/sub subscribers, e.g. Hotsock standard
//!   channels or anonymous SocketCluster sockets; hidden users' do not
//!   count), sent whenever it changes; `n` 0 means none. Receivers count
//!   them in the channel's connections and occupancy, so a channel whose
//!   only subscribers are on another node exists everywhere.
//! - `hb`: heartbeat, with the last `ops` seq sent (so a lost last frame is
//!   noticed too), the sender's wall clock in ms (its own echo measures the
//!   bus lag), its number of open connections and, while it closes its
//!   clients to leave, `"leaving":true` (it reports no events any more).
//! - `sync`: asks `target` (or every node) to publish its full state.
//! - `state`: all presences of the sender as of `ops` frame `seq`, and its
//!   non-zero subscriber counts (`subs`, omitted when empty).
//! - `bye`: the sender is shutting down; drop its presences and
//!   subscriber counts now.
//!
//! `ops` also carry, in the same order as the sender's publishes:
//! `{"op":"direct",…}` ([`WireDirect`]: send to a user, broadcast, send to
//! everyone present, asked on the sender's HTTP API and delivered by each
//! node to its own connections) and `{"op":"privacy","uid":"jim",
//! "visible":false}` (a privacy choice stored in the shared store). A
//! node's connections are replicated as presences of the pseudo-channel
//! [`CONNS_CHANNEL`], so user presence is cluster-wide, and its reports
//! about them as `{"op":"report","event":{…}}`.
//! Messages (`msg`, `direct`, `privacy`) published while the sender's bus
//! link is down are kept and sent after its next `state` (see
//! [`super::backlog`]), in publish order.
//!
//! A presence is identified by (`ch`, `pid`): `pid` is the connection id on
//! the sender (16 hex digits) or `lease:<id>` for a lease. Message `data`
//! is the published JSON as a string, so it reaches remote subscribers
//! byte for byte as it was published.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::ids::ConnId;
use crate::presence::{ChannelMessage, DirectMessage, MessageSender};

/// One bus message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// The sender's node id.
    pub node: String,
    /// The sender's epoch (grows with each restart of that node).
    pub epoch: u64,
    /// What the frame says.
    #[serde(flatten)]
    pub body: Body,
}

/// The kinds of frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum Body {
    /// Changes to the sender's presences and its published messages.
    Ops {
        /// Number of this `ops` frame (1, 2, …) in the sender's epoch.
        seq: u64,
        /// The changes, in order.
        ops: Vec<Op>,
    },
    /// Liveness, with the last `ops` seq sent.
    Hb {
        /// The last `ops` seq sent.
        seq: u64,
        /// The sender's wall clock, ms since the Unix epoch.
        sent: u64,
        /// Open connections on the sender.
        #[serde(default)]
        conns: usize,
        /// The sender is closing its clients to leave: it no longer
        /// reports the cluster's events, whatever its age.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        leaving: bool,
    },
    /// Asks a node (or every node when None) for its full state.
    Sync {
        /// The node asked, or None for all.
        target: Option<String>,
    },
    /// The sender's full state as of `ops` frame `seq`.
    State {
        /// The last `ops` seq included.
        seq: u64,
        /// Every presence of the sender.
        presences: Vec<PresenceRecord>,
        /// Per channel, the sender's subscriptions that are not
        /// memberships (only channels that have some).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        subs: BTreeMap<String, usize>,
    },
    /// The sender is leaving the cluster.
    Bye,
}

/// One change in an `ops` frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    /// Adds or replaces a presence.
    Put(PresenceRecord),
    /// Removes a presence.
    Del {
        /// Channel.
        ch: String,
        /// Presence id (connection id or `lease:<id>`).
        pid: String,
        /// Member key.
        uid: String,
    },
    /// The sender's subscriptions to a channel that are not memberships
    /// are now `n` (0: none).
    Subs {
        /// Channel.
        ch: String,
        /// How many.
        n: usize,
    },
    /// A message published on the sender.
    Msg(WireMessage),
    /// A direct message sent through the sender's HTTP API, for the
    /// receivers' own connections (see [`WireDirect`]).
    Direct(WireDirect),
    /// A user's privacy choice changed on the sender (already stored in
    /// the shared store): receivers apply it to their in-memory copy.
    Privacy {
        /// The user id.
        uid: String,
        /// The choice; None: back to the default.
        #[serde(default)]
        visible: Option<bool>,
    },
    /// An application message a backend sent on the sender
    /// (`POST /api/bus/publish`), for the receivers' event-stream readers
    /// of its topic.
    App {
        /// The message id (ULID), the same on every node.
        id: String,
        /// The topic.
        topic: String,
        /// The payload.
        #[serde(default)]
        data: serde_json::Value,
    },
    /// An operator disconnects connections (`POST /api/users/{uid}/disconnect`,
    /// `POST /api/connections/{id}/disconnect` on the sender): each node
    /// closes its own with `reason`.
    Kick {
        /// Whose connections.
        to: KickTarget,
        /// What the clients are told.
        reason: String,
    },
    /// An event the sender reported to its backends about its own
    /// connections (`connection_opened`, `connection_closed`,
    /// `client_message`: the webhook JSON, id included), for the
    /// receivers' event-stream readers; their webhooks were the sender's.
    Report {
        /// The event.
        event: serde_json::Value,
    },
}

impl Op {
    /// True for what is delivered once (`msg`, `direct`, `privacy`, `app`,
    /// `report`), false for changes to the sender's state (`put`, `del`,
    /// `subs`), which a `state` frame repairs when one is lost.
    pub fn is_message(&self) -> bool {
        matches!(
            self,
            Op::Msg(_)
                | Op::Direct(_)
                | Op::Privacy { .. }
                | Op::App { .. }
                | Op::Report { .. }
                | Op::Kick { .. }
        )
    }
}

/// The pseudo-channel under which a node replicates its open connections
/// (`pid`: connection id, `uid`: user or "" for an anonymous one, `info`:
/// the protocol), so every node knows who is online anywhere even without
/// memberships, and can report a lost node's connections as closed. It
/// never reaches the core: a NUL character is in no channel name.
///
/// ```text
/// {"op":"put","ch":"\u0000conns","pid":"8f3a0c1200000004","uid":"jim","info":"hotsock"}
/// ```
pub const CONNS_CHANNEL: &str = "\u{0}conns";

/// Who a forwarded direct message is for, on each receiving node.
///
/// ```text
/// "to":{"user":"jim"}            every connection of user jim
/// "to":"all"                     every connection
/// "to":{"present":"content:42"}  lease holders of content:42 not subscribed to it
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectTarget {
    /// Every connection of one user.
    User(String),
    /// Every connection.
    All,
    /// Everyone present to a channel through a lease but not subscribed to
    /// it (its subscribers get the channel message, replicated as `msg`).
    Present(String),
}

/// Which connections an operator disconnects.
///
/// ```text
/// {"op":"kick","to":{"user":"jim"},"reason":"account suspended"}
/// {"op":"kick","to":{"connection":"8f3a0c1200000004"},"reason":"…"}
/// {"op":"kick","to":{"membership":{"user":"jim","channel":"room"}},"reason":"…"}
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KickTarget {
    /// Every connection of one user.
    User(String),
    /// One connection (by id).
    Connection(String),
    /// One user's subscriptions to one channel: they end, the connections
    /// stay open.
    Membership {
        /// The user.
        user: String,
        /// The channel.
        channel: String,
    },
}

/// A direct message forwarded to the other nodes.
///
/// ```text
/// {"op":"direct","to":{"user":"jim"},"id":"01J0…","event":"note","data":"{\"a\":1}"}
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireDirect {
    /// The receivers.
    pub to: DirectTarget,
    /// ULID (the same on every node).
    pub id: String,
    /// Event name.
    pub event: String,
    /// The payload's JSON text, or None.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl WireDirect {
    /// The wire form of a core direct message.
    pub fn from_message(to: DirectTarget, msg: &DirectMessage) -> Self {
        WireDirect {
            to,
            id: msg.id.clone(),
            event: msg.event.clone(),
            data: msg.data.as_ref().map(|d| d.get().to_string()),
        }
    }

    /// The core message, or None if `data` is not valid JSON.
    pub fn to_message(&self) -> Option<DirectMessage> {
        let data = match &self.data {
            Some(text) => Some(RawValue::from_string(text.clone()).ok()?),
            None => None,
        };
        Some(DirectMessage {
            id: self.id.clone(),
            event: self.event.clone(),
            data,
        })
    }
}

/// A presence: one connection (or lease) as a member of one channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresenceRecord {
    /// Channel.
    pub ch: String,
    /// Presence id (connection id or `lease:<id>`).
    pub pid: String,
    /// Member key.
    pub uid: String,
    /// Member data.
    pub info: Value,
}

/// A channel message as sent between nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireMessage {
    /// ULID.
    pub id: String,
    /// Channel.
    pub ch: String,
    /// Event name.
    pub event: String,
    /// The payload's JSON text, or None.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The sending client, or None for a server publish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<WireSender>,
}

/// The client that sent a message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireSender {
    /// Its connection id on the publishing node.
    pub conn: String,
    /// Its user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Its member data.
    pub info: Value,
    /// Whether the sender receives its own message (it is never on another
    /// node, so this only matters for the publishing node).
    pub echo: bool,
}

impl WireMessage {
    /// The wire form of a core message.
    pub fn from_message(msg: &ChannelMessage) -> Self {
        WireMessage {
            id: msg.id.clone(),
            ch: msg.channel.to_string(),
            event: msg.event.clone(),
            data: msg.data.as_ref().map(|d| d.get().to_string()),
            sender: msg.sender.as_ref().map(|s| WireSender {
                conn: s.conn.to_string(),
                uid: s.user_id.as_ref().map(|u| u.to_string()),
                info: (*s.info).clone(),
                echo: s.echo,
            }),
        }
    }

    /// The core message, or None if `data` is not valid JSON.
    pub fn to_message(&self) -> Option<ChannelMessage> {
        let data = match &self.data {
            Some(text) => Some(RawValue::from_string(text.clone()).ok()?),
            None => None,
        };
        Some(ChannelMessage {
            id: self.id.clone(),
            channel: Arc::from(self.ch.as_str()),
            event: self.event.clone(),
            data,
            sender: self.sender.as_ref().map(|s| MessageSender {
                conn: pid_to_conn(&s.conn),
                user_id: s.uid.as_deref().map(Arc::from),
                info: Arc::new(s.info.clone()),
                echo: s.echo,
            }),
        })
    }
}

/// The connection id a presence id stands for on this node: the id itself
/// for a connection, a stable hash for anything else (a lease), which
/// keeps remote presences of one node apart.
pub fn pid_to_conn(pid: &str) -> ConnId {
    if let Some(id) = ConnId::parse(pid) {
        return id;
    }
    // FNV-1a, 64 bit.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pid.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ConnId(hash)
}

impl Frame {
    /// The JSON bytes sent on the bus.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing these types cannot fail: every map key is a string.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a bus message.
    pub fn decode(bytes: &[u8]) -> Result<Frame, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("malformed cluster frame: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roundtrip(text: &str) -> Frame {
        let frame = Frame::decode(text.as_bytes()).unwrap();
        let again = Frame::decode(&frame.encode()).unwrap();
        assert_eq!(frame, again);
        frame
    }

    #[test]
    fn ops_frame_from_the_doc() {
        let frame = roundtrip(
            r#"{"node":"a","epoch":1718000000123456,"t":"ops","seq":7,"ops":[
               {"op":"put","ch":"presence.room","pid":"8f3a0c1200000004","uid":"jim","info":{"name":"Jim"}},
               {"op":"del","ch":"presence.room","pid":"8f3a0c1200000003","uid":"ann"},
               {"op":"subs","ch":"news","n":3},
               {"op":"msg","id":"01J0","ch":"presence.room","event":"chat","data":"{\"text\":\"hi\"}",
                "sender":{"conn":"8f3a0c1200000004","uid":"jim","info":{"name":"Jim"},"echo":false}}]}"#,
        );
        assert_eq!(frame.node, "a");
        let Body::Ops { seq, ops } = frame.body else {
            panic!("not ops")
        };
        assert_eq!(seq, 7);
        assert_eq!(
            ops[0],
            Op::Put(PresenceRecord {
                ch: "presence.room".into(),
                pid: "8f3a0c1200000004".into(),
                uid: "jim".into(),
                info: json!({"name": "Jim"}),
            })
        );
        assert_eq!(
            ops[2],
            Op::Subs {
                ch: "news".into(),
                n: 3
            }
        );
        assert!(!ops[2].is_message() && !ops[0].is_message() && ops[3].is_message());
        let Op::Msg(msg) = &ops[3] else {
            panic!("not msg")
        };
        let core = msg.to_message().unwrap();
        assert_eq!(core.data.as_ref().unwrap().get(), r#"{"text":"hi"}"#);
        let sender = core.sender.unwrap();
        assert_eq!(sender.conn, ConnId(0x8f3a_0c12_0000_0004));
        assert_eq!(sender.user_id.as_deref(), Some("jim"));
    }

    /// Found by the fuzz_cluster_frames property test: serde_json's fast
    /// float parser read `11000000000000000e8` and `1.1e24` (its own
    /// re-encoding) as two different f64s, so member data changed on its
    /// way through the bus. The `float_roundtrip` feature parses exactly.
    #[test]
    fn member_data_numbers_survive_the_bus_exactly() {
        let frame = roundtrip(
            r#"{"node":"a","epoch":4,"t":"ops","seq":8,"ops":[
               {"op":"put","ch":"c","pid":"p","uid":"u","info":{"n":[11000000000000000e8,0.1,5e-324]}}]}"#,
        );
        let Body::Ops { ops, .. } = frame.body else {
            panic!("not ops")
        };
        let Op::Put(record) = &ops[0] else {
            panic!("not put")
        };
        assert_eq!(record.info, json!({"n": [1.1e24, 0.1, 5e-324]}));
    }

    #[test]
    fn other_frames_from_the_doc() {
        assert_eq!(
            roundtrip(r#"{"node":"a","epoch":1,"t":"hb","seq":7,"sent":1718000004000,"conns":12}"#)
                .body,
            Body::Hb {
                seq: 7,
                sent: 1_718_000_004_000,
                conns: 12,
                leaving: false,
            }
        );
        assert_eq!(
            roundtrip(r#"{"node":"b","epoch":2,"t":"sync","target":null}"#).body,
            Body::Sync { target: None }
        );
        assert_eq!(
            roundtrip(r#"{"node":"a","epoch":1,"t":"bye"}"#).body,
            Body::Bye
        );
        let state = roundtrip(
            r#"{"node":"a","epoch":1,"t":"state","seq":7,"presences":[{"ch":"c","pid":"lease:x","uid":"u","info":null}]}"#,
        );
        assert!(
            matches!(state.body, Body::State { seq: 7, ref presences, ref subs } if presences.len() == 1 && subs.is_empty())
        );
    }

    #[test]
    fn message_data_survives_byte_for_byte() {
        let raw = r#"{"b":1,  "a":[2,3]}"#;
        let msg = ChannelMessage {
            id: "01J".into(),
            channel: Arc::from("room"),
            event: "e".into(),
            data: Some(RawValue::from_string(raw.into()).unwrap()),
            sender: None,
        };
        let wire = WireMessage::from_message(&msg);
        let frame = Frame {
            node: "n".into(),
            epoch: 1,
            body: Body::Ops {
                seq: 1,
                ops: vec![Op::Msg(wire)],
            },
        };
        let back = Frame::decode(&frame.encode()).unwrap();
        let Body::Ops { ops, .. } = back.body else {
            panic!()
        };
        let Op::Msg(m) = &ops[0] else { panic!() };
        assert_eq!(m.to_message().unwrap().data.unwrap().get(), raw);
    }

    #[test]
    fn state_carries_subscriber_counts() {
        let frame = roundtrip(
            r#"{"node":"a","epoch":1,"t":"state","seq":7,"presences":[],"subs":{"news":3}}"#,
        );
        let Body::State { subs, .. } = frame.body else {
            panic!("not state")
        };
        assert_eq!(subs, BTreeMap::from([("news".to_string(), 3)]));
        // A heartbeat of an older node that still carries counts parses.
        let old = roundtrip(
            r#"{"node":"a","epoch":1,"t":"hb","seq":7,"sent":1,"conns":12,"subs":{"news":3}}"#,
        );
        assert!(matches!(
            old.body,
            Body::Hb {
                seq: 7,
                conns: 12,
                ..
            }
        ));
    }

    #[test]
    fn direct_and_privacy_ops_from_the_doc() {
        let frame = roundtrip(
            r#"{"node":"a","epoch":1,"t":"ops","seq":2,"ops":[
               {"op":"direct","to":{"user":"jim"},"id":"01J0","event":"note","data":"{\"a\":1}"},
               {"op":"direct","to":"all","id":"01J1","event":"e"},
               {"op":"direct","to":{"present":"content:42"},"id":"01J2","event":"e"},
               {"op":"privacy","uid":"jim","visible":false},
               {"op":"put","ch":"\u0000conns","pid":"8f3a0c1200000004","uid":"jim","info":null}]}"#,
        );
        let Body::Ops { ops, .. } = frame.body else {
            panic!("not ops")
        };
        let Op::Direct(d) = &ops[0] else {
            panic!("not direct")
        };
        assert_eq!(d.to, DirectTarget::User("jim".into()));
        assert_eq!(d.to_message().unwrap().data.unwrap().get(), r#"{"a":1}"#);
        assert!(matches!(&ops[1], Op::Direct(d) if d.to == DirectTarget::All && d.data.is_none()));
        assert!(
            matches!(&ops[2], Op::Direct(d) if d.to == DirectTarget::Present("content:42".into()))
        );
        assert_eq!(
            ops[3],
            Op::Privacy {
                uid: "jim".into(),
                visible: Some(false)
            }
        );
        assert!(matches!(&ops[4], Op::Put(r) if r.ch == CONNS_CHANNEL));
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert!(Frame::decode(b"not json").is_err());
        assert!(Frame::decode(br#"{"node":"a","epoch":1,"t":"what"}"#).is_err());
        assert!(Frame::decode(br#"{"node":"a","t":"bye"}"#).is_err());
    }

    #[test]
    fn pids_map_to_connection_ids() {
        assert_eq!(pid_to_conn("00000000000000ff"), ConnId(255));
        assert_eq!(pid_to_conn("lease:x"), pid_to_conn("lease:x"));
        assert_ne!(pid_to_conn("lease:x"), pid_to_conn("lease:y"));
    }
}
