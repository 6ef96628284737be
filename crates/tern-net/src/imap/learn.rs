//! Spam learning from the mailbox: a message a user moves (or copies)
//! into their `Junk` mailbox is spam, one moved out of `Junk` (anywhere
//! but `Trash`) is ham; the configured learner (rspamd's controller,
//! [`crate::filter::rspamd::Rspamd::learn`]) is told, in the background.
//!
//! A mailbox is `Junk` by its special use (`\Junk`) or its name. Learning
//! never delays or fails the IMAP command: the files are opened through
//! the mail store now, and sent on a separate task.

use tern_filter::rspamd::Learn;
use tern_store::mailbox::{CopyResult, MailboxId, SpecialUse, UserStore};

/// Receives (what, the message) for each message to learn from.
#[derive(Clone)]
pub struct Learner(std::sync::Arc<dyn Fn(Learn, std::fs::File) + Send + Sync>);

impl Learner {
    /// A learner calling `f`.
    pub fn new(f: impl Fn(Learn, std::fs::File) + Send + Sync + 'static) -> Learner {
        Learner(std::sync::Arc::new(f))
    }
}

impl std::fmt::Debug for Learner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Learner")
    }
}

fn is_junk(special: Option<SpecialUse>, name: &str) -> bool {
    special == Some(SpecialUse::Junk) || name.eq_ignore_ascii_case("junk")
}

fn is_trash(special: Option<SpecialUse>, name: &str) -> bool {
    special == Some(SpecialUse::Trash) || name.eq_ignore_ascii_case("trash")
}

/// After a COPY or MOVE from `from` to `to` (by name), hands the copies to
/// `learner` when they crossed the Junk border.
pub(crate) fn after_copy(
    learner: &Learner,
    store: &UserStore,
    from: MailboxId,
    to: &str,
    result: &CopyResult,
) {
    let Ok(list) = store.list() else { return };
    let find = |pred: &dyn Fn(&tern_store::mailbox::ListEntry) -> bool| {
        list.iter()
            .find(|e| pred(e))
            .map(|e| (e.id, e.special_use, e.name.as_str().to_owned()))
    };
    let Some((_, src_use, src_name)) = find(&|e| e.id == Some(from)) else {
        return;
    };
    let Some((Some(dst_id), dst_use, dst_name)) = find(&|e| e.name.as_str() == to) else {
        return;
    };
    let kind = match (is_junk(src_use, &src_name), is_junk(dst_use, &dst_name)) {
        (false, true) => Learn::Spam,
        (true, false) if !is_trash(dst_use, &dst_name) => Learn::Ham,
        _ => return,
    };
    for (_, uid) in &result.uids {
        match store.open_message(dst_id, *uid) {
            Ok(file) => (learner.0)(kind, file),
            Err(e) => tracing::debug!(error = %e, uid, "cannot open a message to learn from"),
        }
    }
}
