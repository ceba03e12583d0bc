//! Calls answered by the backend (`--rpc-url`): a client's request that
//! expects an answer (a SocketCluster custom event with a `cid`, a
//! Socket.IO event with an acknowledgment, a Hotsock `rollcall.call`) is
//! POSTed to the backend with the caller's identity, and the backend's
//! answer, which may carry a new auth token, goes back to the client.
//!
//! ```text
//! POST <rpc-url>  X-Rollcall-Signature: sha256=…  (with --webhook-secret)
//! {"id":"01M8…","event":"login","data":{"password":"…"},"user_id":null,"connection":"762686d600000004","protocol":"socketcluster"}
//! 200 {"data":{"welcome":"alice"},"auth_token":"<JWT>"}   the answer (auth_token optional)
//! 200 {"error":"wrong password"}                           a refusal, as the protocol's error
//! ```

use std::time::Duration;

use hyper::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http_client::{Body, HttpClient, HttpError, Target, UserInfo};

/// Largest answer read from the backend.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// Where and how calls go.
#[derive(Clone, Debug)]
pub struct RpcConfig {
    /// The backend's URL (http:// or https://).
    pub url: String,
    /// How long a call may take.
    pub timeout: Duration,
    /// HMAC-SHA256 key for the signature header (`--webhook-secret`).
    pub secret: Option<String>,
    /// Extra roots for https (`--tls-ca-file`).
    pub ca_file: Option<std::path::PathBuf>,
    /// The event names that are calls (`--rpc-events`: names, `*` globs,
    /// `#regex:`).
    pub events: Vec<String>,
}

/// One call.
#[derive(Clone, Debug, Serialize)]
pub struct RpcCall {
    /// ULID of the call.
    pub id: String,
    /// The client's event name.
    pub event: String,
    /// The client's data.
    pub data: Value,
    /// The caller's user id (None: anonymous).
    pub user_id: Option<String>,
    /// The caller's connection id.
    pub connection: String,
    /// The caller's front end.
    pub protocol: &'static str,
}

impl RpcCall {
    /// A call from `conn`, with the caller's identity as the core knows it.
    pub fn new(event: String, data: Value, conn: &crate::presence::Connection) -> Self {
        RpcCall {
            id: crate::ids::ulid(),
            event,
            data,
            user_id: conn.user_id().map(|u| u.to_string()),
            connection: conn.id().to_string(),
            protocol: conn.protocol(),
        }
    }
}

/// What the backend answered.
#[derive(Clone, Debug, PartialEq)]
pub enum RpcAnswer {
    /// The answer, and a new auth token for the caller if the backend gave one.
    Data {
        /// The answer's data.
        data: Value,
        /// A new auth token (a signed JWT the server verifies as any other).
        auth_token: Option<String>,
    },
    /// A refusal or a failure, with what the client should be told.
    Error(String),
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    data: Value,
    auth_token: Option<String>,
    error: Option<String>,
}

/// The RPC client.
#[derive(Debug)]
pub struct Rpc {
    events: Vec<crate::auth::Pattern>,
    target: Target,
    client: HttpClient,
    timeout: Duration,
    secret: Option<String>,
}

impl Rpc {
    /// A client for `config` (errors name `--rpc-url`).
    pub fn new(config: &RpcConfig) -> Result<Rpc, String> {
        let target = Target::parse("--rpc-url", &config.url, UserInfo::BasicAuth)?;
        let client = HttpClient::for_targets([&target], config.ca_file.as_deref())?;
        let events = config
            .events
            .iter()
            .map(|e| {
                crate::auth::Pattern::parse(e).map_err(|why| format!("--rpc-events: {e:?} {why}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Rpc {
            events,
            target,
            client,
            timeout: config.timeout,
            secret: config.secret.clone(),
        })
    }

    /// Whether a client's `event` is a call for the backend.
    pub fn answers(&self, event: &str) -> bool {
        self.events.iter().any(|p| p.matches(event))
    }

    /// Asks the backend; never longer than the timeout.
    pub async fn call(&self, call: &RpcCall) -> RpcAnswer {
        let body = serde_json::to_vec(call).unwrap_or_default();
        let signature = self
            .secret
            .as_deref()
            .map(|secret| super::webhooks::sign(secret, &body));
        let mut headers = Vec::new();
        if let Some(sig) = &signature {
            headers.push((super::webhooks::SIGNATURE_HEADER, sig.as_str()));
        }
        let sent = self
            .client
            .send(
                &self.target,
                Method::POST,
                &headers,
                Some(Body::json(body)),
                MAX_ANSWER_BYTES,
                self.timeout,
            )
            .await;
        let answer = match sent {
            Err(HttpError::Timeout { .. }) => {
                return RpcAnswer::Error(format!(
                    "the backend did not answer {:?} within {} ms; try again later",
                    call.event,
                    self.timeout.as_millis()
                ));
            }
            Err(e) => {
                tracing::warn!(event = %call.event, error = %e, "RPC call failed");
                return RpcAnswer::Error(format!(
                    "the backend could not be asked about {:?}; try again later",
                    call.event
                ));
            }
            Ok(answer) => answer,
        };
        if answer.status != 200 {
            return RpcAnswer::Error(format!(
                "the backend answered {:?} with HTTP {}; try again later",
                call.event, answer.status
            ));
        }
        match serde_json::from_slice::<Reply>(&answer.body) {
            Ok(Reply {
                error: Some(why), ..
            }) => RpcAnswer::Error(why),
            Ok(Reply {
                data, auth_token, ..
            }) => RpcAnswer::Data { data, auth_token },
            Err(_) => RpcAnswer::Error(format!(
                "the backend's answer to {:?} is not {{\"data\": …}} or {{\"error\": …}} JSON",
                call.event
            )),
        }
    }
}

/// A session's call in flight: the future its reader waits on (reading
/// pauses, so later frames keep their order), and where the answer lands
/// for the frame, handled again, to find.
#[derive(Debug, Default)]
pub struct CallSlot {
    pending: Option<crate::policy::Pending>,
    /// Made by the first call: most sessions never make one.
    answer: Option<std::sync::Arc<std::sync::Mutex<Option<RpcAnswer>>>>,
}

impl CallSlot {
    /// Starts `call`; the reader gets the wait from [`CallSlot::take_pending`].
    pub fn start(&mut self, rpc: std::sync::Arc<Rpc>, call: RpcCall) {
        let landing = self.answer.get_or_insert_default().clone();
        self.pending = Some(crate::policy::Pending::new(async move {
            let answer = rpc.call(&call).await;
            *landing.lock().unwrap_or_else(|p| p.into_inner()) = Some(answer);
        }));
    }

    /// The wait for the call just started, if any.
    pub fn take_pending(&mut self) -> Option<crate::policy::Pending> {
        self.pending.take()
    }

    /// The answer, once the call is done.
    pub fn take_answer(&mut self) -> Option<RpcAnswer> {
        self.answer
            .as_ref()?
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}
