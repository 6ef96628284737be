//! A mailbox's messages as an IMAP session numbers them: shared,
//! copy-on-write, cheap to clone.
//!
//! A [`MessageList`] is the rows of a mailbox by UID (message sequence
//! number `n` is the row at index `n - 1`). The store keeps one current
//! list per selected mailbox ([`UserStore::select_list`],
//! [`UserStore::changes_and_list`]) and hands out clones: a clone is one
//! reference count, so ten thousand sessions with the same mailbox
//! selected share one copy of its rows. The rows sit in chunks of at most
//! [`CHUNK`] behind their own `Arc`s; changing a list (a session that must
//! still show a message another session expunged, a new version after a
//! STORE) copies only the chunks it touches, so versions share everything
//! else.
//!
//! Rows in a list carry no file name (bodies are opened by UID through
//! the store): see [`MessageList::from_rows`].
//!
//! This module must never reorder rows: UIDs strictly ascend through the
//! list, which every lookup relies on.
//!
//! [`UserStore::select_list`]: super::UserStore::select_list
//! [`UserStore::changes_and_list`]: super::UserStore::changes_and_list

use std::sync::Arc;

use super::index::MessageRow;

/// Rows per chunk: small enough that copying one on a change is cheap,
/// large enough that the chunk table of a big mailbox stays small.
pub const CHUNK: usize = 256;

/// A mailbox's messages by UID, shared copy-on-write (see the module
/// docs). Equality compares the rows.
#[derive(Clone, Debug, Default)]
pub struct MessageList {
    inner: Arc<Chunks>,
}

#[derive(Clone, Debug, Default)]
struct Chunks {
    /// Non-empty chunks, UIDs ascending across them.
    chunks: Vec<Arc<Vec<MessageRow>>>,
    /// `ends[k]`: the number of rows in `chunks[..=k]`.
    ends: Vec<usize>,
}

impl Chunks {
    fn len(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }

    fn start(&self, k: usize) -> usize {
        if k == 0 { 0 } else { self.ends[k - 1] }
    }

    /// The chunk holding row `i` (< len) and the index within it.
    fn locate(&self, i: usize) -> (usize, usize) {
        let k = self.ends.partition_point(|&e| e <= i);
        (k, i - self.start(k))
    }

    fn recount(&mut self, from: usize) {
        self.chunks.retain(|c| !c.is_empty());
        self.ends.truncate(from.min(self.chunks.len()));
        let mut n = self.ends.last().copied().unwrap_or(0);
        for c in &self.chunks[self.ends.len()..] {
            n += c.len();
            self.ends.push(n);
        }
    }
}

impl PartialEq for MessageList {
    fn eq(&self, other: &MessageList) -> bool {
        self.ptr_eq(other) || (self.len() == other.len() && self.iter().eq(other.iter()))
    }
}

impl Eq for MessageList {}

impl MessageList {
    /// A list of `rows` (sorted by UID, as the index returns them), with
    /// their file names dropped: sessions keep many rows, and bodies are
    /// opened by UID.
    pub fn from_rows(rows: impl IntoIterator<Item = MessageRow>) -> MessageList {
        let mut b = ListBuilder::default();
        rows.into_iter().for_each(|r| b.push(r));
        b.finish()
    }

    /// The number of messages.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether there is no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether both are the same shared list (no copy between them).
    pub fn ptr_eq(&self, other: &MessageList) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The row at index `i` (message sequence number `i + 1`).
    pub fn get(&self, i: usize) -> Option<&MessageRow> {
        if i >= self.len() {
            return None;
        }
        let (k, j) = self.inner.locate(i);
        Some(&self.inner.chunks[k][j])
    }

    /// The highest UID, 0 when empty.
    pub fn max_uid(&self) -> u32 {
        self.inner
            .chunks
            .last()
            .and_then(|c| c.last())
            .map_or(0, |r| r.uid)
    }

    /// The number of rows whose UID is below `uid`: the index of `uid` if
    /// it is in the list, else where it would go.
    pub fn rank(&self, uid: u32) -> usize {
        let c = &self.inner;
        let k = c
            .chunks
            .partition_point(|ch| ch.last().is_some_and(|r| r.uid < uid));
        if k == c.chunks.len() {
            return c.len();
        }
        c.start(k) + c.chunks[k].partition_point(|r| r.uid < uid)
    }

    /// The index of the message with `uid`.
    pub fn index_of(&self, uid: u32) -> Option<usize> {
        let i = self.rank(uid);
        self.get(i).filter(|r| r.uid == uid).map(|_| i)
    }

    /// The row with `uid`.
    pub fn by_uid(&self, uid: u32) -> Option<&MessageRow> {
        self.index_of(uid).and_then(|i| self.get(i))
    }

    /// Every row, by UID.
    pub fn iter(&self) -> impl Iterator<Item = &MessageRow> + '_ {
        self.inner.chunks.iter().flat_map(|c| c.iter())
    }

    /// The rows at indexes `from..to` (clamped to the list).
    pub fn range(&self, from: usize, to: usize) -> impl Iterator<Item = &MessageRow> + '_ {
        let to = to.min(self.len());
        let from = from.min(to);
        let (k, j) = if from < self.len() {
            self.inner.locate(from)
        } else {
            (self.inner.chunks.len(), 0)
        };
        self.inner.chunks[k..]
            .iter()
            .flat_map(|c| c.iter())
            .skip(j)
            .take(to - from)
    }

    /// Replaces the row at index `i` (same UID): copies its chunk if it is
    /// shared.
    pub fn set(&mut self, i: usize, row: MessageRow) {
        let (k, j) = self.inner.locate(i);
        debug_assert_eq!(self.inner.chunks[k][j].uid, row.uid);
        let inner = Arc::make_mut(&mut self.inner);
        Arc::make_mut(&mut inner.chunks[k])[j] = slim(row);
    }

    /// Removes the row at index `i`.
    pub fn remove(&mut self, i: usize) -> MessageRow {
        let (k, j) = self.inner.locate(i);
        let inner = Arc::make_mut(&mut self.inner);
        let row = Arc::make_mut(&mut inner.chunks[k]).remove(j);
        inner.recount(k);
        row
    }

    /// Removes the rows with these UIDs (those present).
    pub fn remove_uids(&mut self, uids: &[u32]) {
        let mut doomed: Vec<usize> = uids.iter().filter_map(|u| self.index_of(*u)).collect();
        if doomed.is_empty() {
            return;
        }
        doomed.sort_unstable();
        doomed.dedup();
        let first = self.inner.locate(doomed[0]).0;
        let inner = Arc::make_mut(&mut self.inner);
        // From the back, so the indexes of the rest stay valid.
        for &i in doomed.iter().rev() {
            let (k, j) = inner.locate(i);
            Arc::make_mut(&mut inner.chunks[k]).remove(j);
        }
        inner.recount(first);
    }

    /// Appends a row whose UID is above every UID in the list (a new
    /// message); returns false, and does nothing, otherwise.
    pub fn push(&mut self, row: MessageRow) -> bool {
        if !self.is_empty() && row.uid <= self.max_uid() {
            return false;
        }
        let inner = Arc::make_mut(&mut self.inner);
        match inner.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => {
                Arc::make_mut(last).push(slim(row));
                if let Some(e) = inner.ends.last_mut() {
                    *e += 1;
                }
            }
            _ => {
                let n = inner.len() + 1;
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(slim(row));
                inner.chunks.push(Arc::new(chunk));
                inner.ends.push(n);
            }
        }
        true
    }

    /// Brings the list up to date with changes read from the index:
    /// `vanished` UIDs go, `changed` rows replace theirs or, above the
    /// highest UID, are appended. Changed rows below the highest UID that
    /// the list does not have are ignored (they were expunged meanwhile).
    pub fn apply(&mut self, changed: Vec<MessageRow>, vanished: &[u32]) {
        self.remove_uids(vanished);
        for row in changed {
            match self.index_of(row.uid) {
                Some(i) => {
                    if self.get(i) != Some(&row) {
                        self.set(i, row);
                    }
                }
                None => {
                    self.push(row);
                }
            }
        }
    }
}

/// Builds a [`MessageList`] row by row (rows by ascending UID), without
/// holding them all twice.
#[derive(Debug, Default)]
pub(crate) struct ListBuilder {
    chunks: Chunks,
    current: Vec<MessageRow>,
}

impl ListBuilder {
    pub(crate) fn push(&mut self, row: MessageRow) {
        if self.current.len() == CHUNK {
            self.flush();
        }
        if self.current.capacity() == 0 {
            self.current.reserve_exact(CHUNK);
        }
        self.current.push(slim(row));
    }

    fn flush(&mut self) {
        if !self.current.is_empty() {
            let n = self.chunks.len() + self.current.len();
            self.chunks
                .chunks
                .push(Arc::new(std::mem::take(&mut self.current)));
            self.chunks.ends.push(n);
        }
    }

    pub(crate) fn finish(mut self) -> MessageList {
        self.flush();
        debug_assert!(is_sorted(self.chunks.chunks.iter().flat_map(|c| c.iter())));
        MessageList {
            inner: Arc::new(self.chunks),
        }
    }
}

fn is_sorted<'a>(mut rows: impl Iterator<Item = &'a MessageRow>) -> bool {
    let Some(mut last) = rows.next().map(|r| r.uid) else {
        return true;
    };
    rows.all(|r| {
        let ok = r.uid > last;
        last = r.uid;
        ok
    })
}

/// A row without its file name (see [`MessageList::from_rows`]).
fn slim(mut row: MessageRow) -> MessageRow {
    if !row.file_name.is_empty() {
        row.file_name = String::new();
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::flags::{Flags, SystemFlags};
    use proptest::prelude::*;

    fn row(uid: u32) -> MessageRow {
        MessageRow {
            uid,
            file_name: format!("cur/{uid}:2,"),
            flags: Flags::default(),
            modseq: 1,
            size: u64::from(uid),
            internaldate: 0,
            savedate: 0,
            email_id: format!("M{uid}"),
        }
    }

    fn list(uids: impl IntoIterator<Item = u32>) -> MessageList {
        MessageList::from_rows(uids.into_iter().map(row))
    }

    fn uids(l: &MessageList) -> Vec<u32> {
        l.iter().map(|r| r.uid).collect()
    }

    #[test]
    fn lookups_across_chunks() {
        let l = list((1..=1000).map(|u| u * 2));
        assert_eq!(l.len(), 1000);
        assert_eq!(l.inner.chunks.len(), 1000usize.div_ceil(CHUNK));
        assert_eq!(l.max_uid(), 2000);
        assert_eq!(l.get(0).unwrap().uid, 2);
        assert_eq!(l.get(CHUNK).unwrap().uid, 2 * (CHUNK as u32 + 1));
        assert_eq!(l.get(999).unwrap().uid, 2000);
        assert!(l.get(1000).is_none());
        assert_eq!(l.index_of(600), Some(299));
        assert_eq!(l.index_of(601), None);
        assert_eq!(l.rank(601), 300);
        assert_eq!(l.rank(0), 0);
        assert_eq!(l.rank(5000), 1000);
        assert_eq!(
            l.range(255, 258).map(|r| r.uid).collect::<Vec<_>>(),
            [512, 514, 516]
        );
        assert_eq!(l.range(998, 5000).count(), 2);
        assert_eq!(l.range(1000, 1000).count(), 0);
        assert!(l.iter().all(|r| r.file_name.is_empty()));
    }

    #[test]
    fn changes_copy_only_the_touched_chunk() {
        let shared = list(1..=1000);
        let mut mine = shared.clone();
        assert!(mine.ptr_eq(&shared));
        let mut seen = mine.get(10).unwrap().clone();
        seen.flags = Flags::system(SystemFlags::SEEN);
        mine.set(10, seen);
        assert!(!mine.ptr_eq(&shared));
        assert_ne!(mine, shared);
        assert!(Arc::ptr_eq(&mine.inner.chunks[1], &shared.inner.chunks[1]));
        assert!(!Arc::ptr_eq(&mine.inner.chunks[0], &shared.inner.chunks[0]));
        assert_eq!(shared.get(10).unwrap().flags.system, SystemFlags::NONE);
    }

    #[test]
    fn removing_and_pushing() {
        let mut l = list(1..=600);
        l.remove_uids(&[1, 300, 600, 9999]);
        assert_eq!(l.len(), 597);
        assert_eq!(l.index_of(2), Some(0));
        assert_eq!(l.index_of(301), Some(298));
        assert_eq!(l.max_uid(), 599);
        // A whole chunk goes: no empty chunk is left behind.
        let gone: Vec<u32> = (2..=256).collect();
        l.remove_uids(&gone);
        assert!(l.inner.chunks.iter().all(|c| !c.is_empty()));
        assert_eq!(l.get(0).unwrap().uid, 257);
        assert!(!l.push(row(599)));
        assert!(l.push(row(700)));
        assert_eq!(l.index_of(700), Some(l.len() - 1));
        let r = l.remove(0);
        assert_eq!(r.uid, 257);
        assert_eq!(l.get(0).unwrap().uid, 258);
    }

    proptest! {
        #[test]
        fn behaves_like_a_vector(
            start in 0u32..700,
            ops in proptest::collection::vec((0u8..4, 1u32..900), 0..120),
        ) {
            let mut model: Vec<u32> = (1..=start).collect();
            let mut l = list(1..=start);
            let before = l.clone();
            for (op, x) in ops {
                match op {
                    0 => {
                        if let Some(i) = model.iter().position(|&u| u == x) {
                            model.remove(i);
                        }
                        l.remove_uids(&[x]);
                    }
                    1 if !model.is_empty() => {
                        let i = x as usize % model.len();
                        prop_assert_eq!(l.remove(i).uid, model.remove(i));
                    }
                    2 => {
                        let next = model.last().copied().unwrap_or(0) + 1 + x % 3;
                        model.push(next);
                        prop_assert!(l.push(row(next)));
                    }
                    _ => {
                        let mut r = row(x);
                        r.modseq = 7;
                        l.apply(vec![r], &[x.wrapping_add(1)]);
                        if let Some(i) = model.iter().position(|&u| u == x.wrapping_add(1)) {
                            model.remove(i);
                        }
                        if model.last().is_none_or(|&m| x > m) {
                            model.push(x);
                        }
                    }
                }
                prop_assert_eq!(uids(&l), model.clone());
                prop_assert_eq!(l.len(), model.len());
                for (i, u) in model.iter().enumerate() {
                    prop_assert_eq!(l.index_of(*u), Some(i));
                    prop_assert_eq!(l.get(i).map(|r| r.uid), Some(*u));
                }
            }
            // The original is untouched by every change to the copy.
            prop_assert_eq!(uids(&before), (1..=start).collect::<Vec<_>>());
        }
    }
}
