//! Errors of the PostgreSQL queue store.
//!
//! Each database error says which operation failed. A store error must
//! never be turned into a positive SMTP reply.

use tern_queue::QueueId;
use tern_queue::store::StoreError;

/// What went wrong in the PostgreSQL queue store.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The connection URL could not be parsed.
    #[error("queue database: invalid url: {0}")]
    Url(#[source] tokio_postgres::Error),
    /// A statement or the connection failed.
    #[error("queue database: {op}: {source}")]
    Database {
        /// What the store was doing.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A schema migration failed (it was rolled back).
    #[error("queue database: migration {version} ({name}) failed: {source}")]
    Migration {
        /// The migration's version.
        version: i32,
        /// Its name.
        name: &'static str,
        /// The underlying error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database holds a newer schema than this Tern knows.
    #[error("queue database: schema version {found} is newer than this Tern's ({known})")]
    SchemaTooNew {
        /// The newest version recorded in the database.
        found: i32,
        /// The newest version this Tern has.
        known: i32,
    },
    /// No message has this id.
    #[error("queue: no message {0} in the queue")]
    NotFound(QueueId),
    /// The lease on this message was taken over after it expired.
    #[error("queue: the lease on {0} was lost (it expired and was taken over)")]
    LeaseLost(QueueId),
    /// Another node committed a message with the same id (the session
    /// answers 451 and the client retries with a fresh id).
    #[error("queue: message id {0} is already taken")]
    IdTaken(QueueId),
    /// An envelope or a recipient state could not be encoded or decoded.
    #[error("queue: message {id}: cannot {op} stored data: {source}")]
    Codec {
        /// The message concerned.
        id: QueueId,
        /// `"encode"` or `"decode"`.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// The configuration is unusable.
    #[error("queue: {0}")]
    Config(&'static str),
    /// `[queue] password_file` cannot be read.
    #[error("queue: password_file {}: {source}", path.display())]
    PasswordFile {
        /// The file named.
        path: std::path::PathBuf,
        /// Why it cannot be read.
        #[source]
        source: std::io::Error,
    },
    /// A stored row holds something no Tern writes (a bad id or length).
    #[error("queue: message {id}: invalid stored {what}")]
    Invalid {
        /// The message (or the raw id text) concerned.
        id: String,
        /// What is invalid.
        what: &'static str,
    },
}

impl PgError {
    /// A mapper for `map_err` naming the operation that failed.
    pub(crate) fn db(op: &'static str) -> impl Fn(tokio_postgres::Error) -> PgError {
        move |source| PgError::Database { op, source }
    }
}

impl StoreError for PgError {
    fn is_not_found(&self) -> bool {
        matches!(self, PgError::NotFound(_))
    }

    fn is_lease_lost(&self) -> bool {
        matches!(self, PgError::LeaseLost(_))
    }
}
