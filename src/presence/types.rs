//! The vocabulary of the presence core: identities, members, messages,
//! events, and the codec trait through which adapters encode events.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;
use serde_json::value::RawValue;

use crate::ids::ConnId;
use crate::outbox::Outbound;

/// Who a connection is. Comes from auth, never from an unchecked client field.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    /// The user id (Hotsock `uid`, SocketCluster `username`, JWT `sub`), or
    /// None for an anonymous connection.
    pub user_id: Option<Arc<str>>,
    /// Member data shown to others (Hotsock `umd`); `null` when unset.
    pub info: Arc<Value>,
}

impl Identity {
    /// An identity with a user id and member data.
    pub fn user(user_id: impl Into<Arc<str>>, info: Value) -> Self {
        Identity {
            user_id: Some(user_id.into()),
            info: Arc::new(info),
        }
    }

    /// An anonymous identity.
    pub fn anonymous() -> Self {
        Identity {
            user_id: None,
            info: Arc::new(Value::Null),
        }
    }
}

/// A member of a channel as everyone sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// The member key: the user id (or the connection id of an anonymous member).
    pub user_id: Arc<str>,
    /// The member's current data.
    pub info: Arc<Value>,
}

/// A borrowed view of a member, used while encoding under the channel lock.
#[derive(Clone, Copy, Debug)]
pub struct MemberView<'a> {
    /// The member key.
    pub user_id: &'a str,
    /// The member data.
    pub info: &'a Value,
}

impl MemberView<'_> {
    /// An owned copy.
    pub fn to_member(&self) -> Member {
        Member {
            user_id: Arc::from(self.user_id),
            info: Arc::new(self.info.clone()),
        }
    }
}

/// The current members of a channel in join order, borrowed from the
/// channel state so codecs can encode the full list without copying it.
#[derive(Clone, Copy)]
pub struct Members<'a> {
    pub(crate) map: &'a indexmap::IndexMap<Arc<str>, super::channel::MemberEntry>,
}

/// The list a subscriber of a channel that hides its members sees.
static NO_MEMBERS: std::sync::LazyLock<indexmap::IndexMap<Arc<str>, super::channel::MemberEntry>> =
    std::sync::LazyLock::new(indexmap::IndexMap::new);

impl<'a> Members<'a> {
    /// An empty list (a channel whose rule hides its members).
    pub fn none() -> Members<'static> {
        Members { map: &NO_MEMBERS }
    }

    /// Members in join order.
    pub fn iter(&self) -> impl Iterator<Item = MemberView<'a>> + 'a {
        self.map.iter().map(|(k, e)| MemberView {
            user_id: k,
            info: &e.info,
        })
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The member with this key, if present.
    pub fn get(&self, key: &str) -> Option<MemberView<'a>> {
        self.map.get_key_value(key).map(|(k, e)| MemberView {
            user_id: k,
            info: &e.info,
        })
    }

    /// True if there are no members.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Owned copies of all members.
    pub fn to_vec(&self) -> Vec<Member> {
        self.iter().map(|m| m.to_member()).collect()
    }
}

impl fmt::Debug for Members<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|m| m.user_id))
            .finish()
    }
}

/// What happened to a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// First presence of this user in the channel.
    Added,
    /// The member's data changed.
    Updated,
    /// Last presence of this user left the channel.
    Removed,
    /// Nothing others can see changed (e.g. a second tab with equal data).
    Unchanged,
}

/// Who sent a channel message, when a client (not the server) sent it.
#[derive(Clone, Debug)]
pub struct MessageSender {
    /// The sending connection.
    pub conn: ConnId,
    /// Its user id, if any.
    pub user_id: Option<Arc<str>>,
    /// Its member data.
    pub info: Arc<Value>,
    /// Whether the sender also receives the message.
    pub echo: bool,
}

/// A message published to a channel.
#[derive(Clone, Debug)]
pub struct ChannelMessage {
    /// ULID, unique and increasing per publishing node.
    pub id: String,
    /// The channel name.
    pub channel: Arc<str>,
    /// The event name.
    pub event: String,
    /// The payload as raw JSON, or None when the publisher sent none.
    pub data: Option<Box<RawValue>>,
    /// The sending client, or None for a server publish (HTTP API).
    pub sender: Option<MessageSender>,
}

/// A message sent straight to connections (send to user, to connection,
/// broadcast), not through a channel.
#[derive(Clone, Debug)]
pub struct DirectMessage {
    /// ULID.
    pub id: String,
    /// The event name.
    pub event: String,
    /// The payload as raw JSON, or None.
    pub data: Option<Box<RawValue>>,
}

/// An event the core delivers to a connection, borrowed for encoding.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// A member joined, changed or left a channel. `members` is the list
    /// after the change.
    Member {
        /// Added, Updated or Removed.
        change: MemberChange,
        /// The channel.
        channel: &'a str,
        /// The member concerned (for Removed: as it was).
        member: MemberView<'a>,
        /// All members after the change.
        members: Members<'a>,
    },
    /// A channel message.
    Message(&'a ChannelMessage),
    /// A direct message.
    Direct(&'a DirectMessage),
}

/// How a wire protocol renders core events. One codec instance is shared by
/// all connections of a front end; a broadcast is encoded at most once per
/// (codec, flavor) and the bytes are shared by all recipients.
pub trait Codec: Send + Sync + 'static {
    /// Encodes `event` for subscriptions of the given adapter-defined
    /// `flavor`, or returns None if such subscribers do not see this event.
    fn encode(&self, event: &Event<'_>, flavor: u8) -> Option<Outbound>;

    /// Encodes an invitation or an invitation answer for a connection of
    /// the given connection-level `flavor` ([`super::Connection::set_flavor`]),
    /// or returns None if the protocol cannot show invitations (the
    /// default). The invitation is then not delivered to that connection.
    fn encode_invitation(
        &self,
        _event: &super::invitations::InvitationEvent<'_>,
        _flavor: u8,
    ) -> Option<Outbound> {
        None
    }
}

/// Member limits of one channel, replacing the server-wide
/// [`Limits::max_members_per_channel`] and [`Limits::max_member_bytes`]
/// there (see [`super::Presence::set_channel_limits`]). For channels an
/// adapter reserves for its own use, e.g. a server-wide member list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelLimits {
    /// Distinct members.
    pub max_members: usize,
    /// Member-data bytes (JSON size of uid+umd per member).
    pub max_member_bytes: usize,
}

/// How a connection takes part in a channel.
#[derive(Clone, Debug)]
pub struct SubscribeOptions {
    /// Join as a member with this data (None: subscriber only, no presence).
    pub member_info: Option<Arc<Value>>,
    /// Join as this member instead of the connection's own key (its user
    /// id, or its connection id when anonymous): e.g. a Hotsock subscribe
    /// token's `uid`, which wins over the connect token's for its channel.
    pub member_key: Option<Arc<str>>,
    /// Whether this subscription receives member events.
    pub presence_events: bool,
    /// Whether this subscription receives channel messages.
    pub receive_messages: bool,
    /// Adapter-defined rendering variant passed to [`Codec::encode`].
    pub flavor: u8,
    /// Grants that hold for this subscribe only, on top of the
    /// connection's (a Hotsock subscribe token's `channels` claim).
    pub grant: Option<Arc<crate::auth::ChannelRules>>,
    /// The token itself asked for this subscribe (Hotsock `autoSubscribe`).
    pub automatic: bool,
    /// Whose rights the subscribe needs.
    pub rights: Rights,
    /// A secret the client gave for this channel (a Socket.IO topic
    /// `password`): told to the channel policy's backend check, nowhere else.
    pub password: Option<Arc<str>>,
}

/// Which channel's rights a subscribe is judged by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Rights {
    /// The channel's own (every client subscribe).
    #[default]
    Own,
    /// Another channel's: a protocol channel that carries that channel's
    /// presence (SocketCluster `presence>C` needs the rights on C).
    Of(Arc<str>),
    /// None: a channel only this connection is in, named after a secret
    /// only it was told (SocketCluster's `presence>socket/<own socket id>`).
    PrivateInbox,
    /// None: a channel the adapter reserved for its own protocol with
    /// [`super::Presence::set_channel_limits`] (sgc's server-wide member
    /// list); clients of every front end are refused it.
    Reserved,
}

impl Default for SubscribeOptions {
    /// A plain subscriber: messages, no presence.
    fn default() -> Self {
        SubscribeOptions {
            member_info: None,
            member_key: None,
            presence_events: false,
            receive_messages: true,
            flavor: 0,
            grant: None,
            automatic: false,
            rights: Rights::Own,
            password: None,
        }
    }
}

/// The state of a channel handed to the joiner atomically with the join.
#[derive(Debug)]
pub struct Snapshot<'a> {
    /// The channel.
    pub channel: &'a str,
    /// All members including the joiner.
    pub members: Members<'a>,
    /// What the join did to the joiner's member entry.
    pub change: MemberChange,
}

/// Limits the core enforces (from config).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Member-data budget per channel: sum over members of the JSON size of
    /// `{"uid":...,"umd":...}`.
    pub max_member_bytes: usize,
    /// Distinct members per channel.
    pub max_members_per_channel: usize,
    /// Channels one connection may be subscribed to.
    pub max_channels_per_connection: usize,
    /// Simultaneous connections of one user on this node.
    pub max_connections_per_user: usize,
    /// Outbound queue budget per connection, in bytes.
    pub outbox_bytes: usize,
    /// Subscribes and unsubscribes per second per connection (a burst of
    /// `max_channels_per_connection`); a user's connections together get
    /// four times as many.
    pub max_membership_changes_per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_member_bytes: 100_000,
            max_members_per_channel: 10_000,
            max_channels_per_connection: 100,
            max_connections_per_user: 100,
            outbox_bytes: 4 * 1024 * 1024,
            max_membership_changes_per_second: 10,
        }
    }
}

/// Why a subscribe failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscribeError {
    /// The connection is already subscribed to the channel.
    AlreadySubscribed,
    /// The connection is at its channel limit.
    TooManyChannels { limit: usize },
    /// Joining would exceed the channel's member-data budget.
    CapacityReached { limit: usize },
    /// The channel is at its member limit.
    MemberLimitReached { limit: usize },
    /// The channel policy did not admit the subscribe (see
    /// [`crate::policy`]); nothing was changed.
    Refused(crate::policy::Refusal),
    /// The channel name is not one every front end can use
    /// ([`crate::names::check_channel`]).
    InvalidChannel(String),
    /// Too many subscribes and unsubscribes per second, from this
    /// connection or its user.
    RateLimited { limit: u32 },
    /// The connection is closing.
    Closed,
}

impl fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubscribeError::AlreadySubscribed => {
                write!(f, "already subscribed to this channel")
            }
            SubscribeError::TooManyChannels { limit } => write!(
                f,
                "this connection is already in {limit} channels, the maximum; unsubscribe from one first"
            ),
            SubscribeError::CapacityReached { limit } => write!(
                f,
                "joining would push the channel's member data over {limit} bytes; use smaller member data or another channel"
            ),
            SubscribeError::MemberLimitReached { limit } => {
                write!(f, "the channel already has {limit} members, the maximum")
            }
            SubscribeError::Refused(r) => write!(f, "{r}"),
            SubscribeError::InvalidChannel(why) => write!(f, "{why}"),
            SubscribeError::RateLimited { limit } => write!(
                f,
                "more than {limit} subscribes and unsubscribes per second; slow down"
            ),
            SubscribeError::Closed => write!(f, "the connection is closing"),
        }
    }
}

impl std::error::Error for SubscribeError {}

/// Why a connection was refused by the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// The user already has the maximum number of connections.
    TooManyConnections { limit: usize },
    /// The token's user id is not one every front end and the API can
    /// name ([`crate::names::check_user_id`]).
    InvalidUserId(String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::TooManyConnections { limit } => write!(
                f,
                "this user already has {limit} open connections, the maximum; close one first"
            ),
            ConnectError::InvalidUserId(why) => {
                write!(f, "{why}; issue a token with another user id")
            }
        }
    }
}

impl std::error::Error for ConnectError {}

/// Why an update of member data failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateError {
    /// The connection is not a member of the channel.
    NotSubscribed,
    /// The new data would exceed the channel's member-data budget.
    CapacityReached { limit: usize },
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateError::NotSubscribed => write!(f, "not a member of this channel"),
            UpdateError::CapacityReached { limit } => write!(
                f,
                "the new member data would push the channel over {limit} bytes of member data"
            ),
        }
    }
}

impl std::error::Error for UpdateError {}
