//! A transaction to run and its per-recipient results.

use tern_types::dsn::{BodyType, Notify, Orcpt, Ret};
use tern_types::{ForwardPath, ReversePath};

use crate::reply::Reply;

/// The MAIL parameters of a message, as queued.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageParams {
    /// The message size in octets (for the SIZE pre-check and `SIZE=`).
    pub size: Option<u64>,
    /// The body type it was received with.
    pub body: BodyType,
    /// It was received with SMTPUTF8 (its header may hold UTF-8).
    pub smtputf8: bool,
    /// DSN `RET=`.
    pub ret: Option<Ret>,
    /// DSN `ENVID=` (decoded; encoded as xtext on the wire).
    pub envid: Option<tern_types::dsn::EnvId>,
}

/// One recipient of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address.
    pub address: ForwardPath,
    /// DSN `NOTIFY=`.
    pub notify: Option<Notify>,
    /// DSN `ORCPT=` (decoded; encoded on the wire).
    pub orcpt: Option<Orcpt>,
}

impl Recipient {
    /// A recipient without DSN parameters.
    pub fn new(address: ForwardPath) -> Recipient {
        Recipient {
            address,
            notify: None,
            orcpt: None,
        }
    }
}

/// One message to send on this connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The reverse path.
    pub from: ReversePath,
    /// The MAIL parameters.
    pub params: MessageParams,
    /// The recipients (at least one); results refer to them by index.
    pub rcpts: Vec<Recipient>,
}

/// What became of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptResult {
    /// The server took responsibility (2xx to the end of data).
    Delivered(Reply),
    /// Try again later (a 4xx, a 421, a broken connection, a timeout).
    Deferred(Reply),
    /// Permanent failure (a 5xx, or a pre-check): bounce.
    Failed(Reply),
}

impl RcptResult {
    /// The reply behind the result.
    pub fn reply(&self) -> &Reply {
        match self {
            RcptResult::Delivered(r) | RcptResult::Deferred(r) | RcptResult::Failed(r) => r,
        }
    }
}

/// The result for the recipient at `index` in [`Transaction::rcpts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptOutcome {
    /// Index into the transaction's recipients.
    pub index: usize,
    /// The result.
    pub result: RcptResult,
    /// The reply came from the server (false: Tern made it up — a
    /// pre-check, a lost connection, a timeout, a protocol error; a DSN
    /// should not present it as the remote server's words).
    pub from_server: bool,
}

/// The outcome of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionResult {
    /// One entry per recipient, in order.
    pub rcpts: Vec<RcptOutcome>,
    /// The reply to the end of data, when the message was sent.
    pub message_reply: Option<Reply>,
    /// The server advertised DSN, so NOTIFY/ORCPT/RET/ENVID went with
    /// the message (otherwise "relayed" notices may be due, RFC 3461 4.1).
    pub dsn_passed_on: bool,
}
