//! Spool errors.
//!
//! Every failure carries the operation and path it concerns so that a log
//! line says what to fix. [`SpoolError::is_disk_full`] lets the SMTP layer
//! answer `452 4.3.1` instead of a generic `451`. A spool error must never be
//! turned into a positive SMTP reply.

use std::io;
use std::path::PathBuf;

use crate::QueueId;

/// What went wrong in the spool.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A filesystem operation failed.
    #[error("spool: {op} {}: {source}", path.display())]
    Io {
        /// What the spool was doing (`"fdatasync"`, `"rename"`, …).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A queue file could not be read back; it has been moved to
    /// `corrupt/` (when `moved_to` is set) so that recovery goes on.
    #[error("spool: queue file for {id} is corrupt ({reason})")]
    Corrupt {
        /// The message concerned.
        id: QueueId,
        /// What is wrong with it.
        reason: String,
        /// Where the file now lives, if moving it aside succeeded.
        moved_to: Option<PathBuf>,
    },
    /// No committed message has this id.
    #[error("spool: no message {0} in the queue")]
    NotFound(QueueId),
    /// Another process (or another open [`Spool`](crate::Spool) in this
    /// one) holds the spool directory.
    #[error("spool: {} is already in use by another process", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The envelope could not be serialised.
    #[error("spool: cannot serialise envelope: {0}")]
    Envelope(#[source] serde_json::Error),
    /// The group-commit thread has stopped; nothing can be committed.
    #[error("spool: the commit thread is gone")]
    CommitterGone,
}

impl SpoolError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> SpoolError {
        SpoolError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when the disk or the user's quota is full (ENOSPC, EDQUOT):
    /// the SMTP layer answers `452 4.3.1` and the sender retries later.
    pub fn is_disk_full(&self) -> bool {
        match self {
            SpoolError::Io { source, .. } => is_disk_full(source),
            _ => false,
        }
    }

    /// True when a file operation failed because a path (typically a
    /// directory) does not exist (ENOENT).
    pub fn is_missing_path(&self) -> bool {
        matches!(self, SpoolError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// True when the error is about this message only and not about the
    /// spool as a whole (the message was lost or is unreadable).
    pub fn is_not_found(&self) -> bool {
        matches!(self, SpoolError::NotFound(_))
    }
}

/// ENOSPC is 28 and EDQUOT is 122 on Linux.
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(28 | 122))
}

/// `io::Error` is not `Clone`; a batch failure is reported to every waiter.
pub(crate) fn clone_io_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_detection() {
        let full = |e: io::Error| SpoolError::io("write", "/x", e).is_disk_full();
        assert!(full(io::Error::from_raw_os_error(28)));
        assert!(full(io::Error::from_raw_os_error(122)));
        assert!(full(io::Error::from(io::ErrorKind::StorageFull)));
        assert!(full(io::Error::from(io::ErrorKind::QuotaExceeded)));
        assert!(!full(io::Error::from_raw_os_error(5)));
        assert!(!full(io::Error::from(io::ErrorKind::PermissionDenied)));
        assert!(!SpoolError::CommitterGone.is_disk_full());
    }

    #[test]
    fn cloned_errors_keep_their_kind() {
        let e = io::Error::from_raw_os_error(28);
        assert!(is_disk_full(&clone_io_error(&e)));
        let e = io::Error::other("boom");
        assert_eq!(clone_io_error(&e).kind(), io::ErrorKind::Other);
    }
}
