//! THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 §3) over a set
//! of messages, and the IMAP rendering of the result (`(1 2 (3 4)(5))`).
//!
//! The caller builds one [`ThreadMessage`] per message (with
//! [`crate::Message::thread_message`] or by hand from cached fields) and
//! gets a typed forest back. Ties between equal sent dates are broken by
//! the order of the input slice (which should be sequence order, RFC 5256
//! §2.2). Pure and deterministic; work is O(n log n) plus reference
//! chain lengths, with loop checks bounded by tree depth.

use std::collections::HashMap;

use crate::search::fold;

/// What threading needs to know about one message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ThreadMessage {
    /// The number to print (sequence number or UID).
    pub number: u32,
    /// `Message-ID` (`<...>`), if any.
    pub message_id: Option<String>,
    /// `References` ids in order.
    pub references: Vec<String>,
    /// The first id of `In-Reply-To`, used when `references` is empty.
    pub in_reply_to: Option<String>,
    /// Base subject (see [`crate::sort::base_subject`]).
    pub base_subject: String,
    /// Whether the subject was a reply or forward (`Re:`, `Fwd:`…).
    pub is_reply: bool,
    /// Sent date, or internal date when there is none (seconds, UTC).
    pub date: i64,
}

/// One node of a thread tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Thread {
    /// A message and its replies.
    Message {
        /// The caller's number for this message.
        number: u32,
        /// Replies, oldest first.
        children: Vec<Thread>,
    },
    /// A placeholder parent for siblings whose parent is unknown.
    Dummy {
        /// The siblings, oldest first.
        children: Vec<Thread>,
    },
}

/// Message ids (`<...>`) in `raw`, in order, white space removed.
pub fn message_ids(raw: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(open) = raw[i..].iter().position(|&b| b == b'<') {
        let start = i + open;
        let Some(close) = raw[start..].iter().position(|&b| b == b'>') else {
            break;
        };
        let id: Vec<u8> = raw[start..=start + close]
            .iter()
            .copied()
            .filter(|b| !crate::header::is_ws(*b))
            .collect();
        if id.len() > 2 {
            out.push(String::from_utf8_lossy(&id).into_owned());
        }
        i = start + close + 1;
    }
    out
}

impl crate::Message<'_> {
    /// The threading input for this message, printed as `number`;
    /// `internal_date` stands in for a missing or invalid `Date:`.
    pub fn thread_message(&self, number: u32, internal_date: i64) -> ThreadMessage {
        let h = self.header();
        let ids = |name: &[u8]| {
            crate::header::first_value(h, name)
                .map(message_ids)
                .unwrap_or_default()
        };
        let (base_subject, is_reply) =
            crate::sort::base_subject(crate::header::first_value(h, b"subject").unwrap_or(b""));
        ThreadMessage {
            number,
            message_id: ids(b"message-id").into_iter().next(),
            references: ids(b"references"),
            in_reply_to: ids(b"in-reply-to").into_iter().next(),
            base_subject,
            is_reply,
            date: self.sent_date().map_or(internal_date, |d| d.timestamp),
        }
    }
}

/// THREAD=ORDEREDSUBJECT: messages grouped by base subject; in each
/// thread the first message (by sent date) is the parent of all others;
/// threads ordered by the date of their first message.
pub fn ordered_subject(msgs: &[ThreadMessage]) -> Vec<Thread> {
    let mut order: Vec<usize> = (0..msgs.len()).collect();
    let folded: Vec<String> = msgs.iter().map(|m| fold(&m.base_subject)).collect();
    order.sort_by(|&a, &b| {
        folded[a]
            .cmp(&folded[b])
            .then(msgs[a].date.cmp(&msgs[b].date))
            .then(a.cmp(&b))
    });
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match groups.last_mut() {
            Some(g) if folded[g[0]] == folded[i] => g.push(i),
            _ => groups.push(vec![i]),
        }
    }
    groups.sort_by_key(|g| (msgs[g[0]].date, g[0]));
    groups
        .into_iter()
        .map(|g| Thread::Message {
            number: msgs[g[0]].number,
            children: g[1..]
                .iter()
                .map(|&i| Thread::Message {
                    number: msgs[i].number,
                    children: Vec::new(),
                })
                .collect(),
        })
        .collect()
}

#[derive(Debug, Default, Clone)]
struct Container {
    msg: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

struct Arena<'m> {
    c: Vec<Container>,
    msgs: &'m [ThreadMessage],
}

impl Arena<'_> {
    fn new_container(&mut self) -> usize {
        self.c.push(Container::default());
        self.c.len() - 1
    }

    /// Whether `a` is `b` or one of `b`'s ancestors.
    fn is_ancestor_or_self(&self, a: usize, b: usize) -> bool {
        let mut cur = Some(b);
        while let Some(x) = cur {
            if x == a {
                return true;
            }
            cur = self.c[x].parent;
        }
        false
    }

    fn unlink(&mut self, child: usize) {
        if let Some(p) = self.c[child].parent.take() {
            self.c[p].children.retain(|&x| x != child);
        }
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.unlink(child);
        self.c[child].parent = Some(parent);
        self.c[parent].children.push(child);
    }

    /// Sort key: the message's (date, input index); a dummy uses its
    /// first child.
    fn key(&self, x: usize) -> (i64, usize) {
        let mut x = x;
        loop {
            if let Some(m) = self.c[x].msg {
                return (self.msgs[m].date, m);
            }
            match self.c[x].children.first() {
                Some(&c) => x = c,
                None => return (i64::MAX, usize::MAX),
            }
        }
    }

    /// The message that speaks for `x` (itself, or a dummy's first child).
    fn representative(&self, x: usize) -> Option<usize> {
        let mut x = x;
        loop {
            if let Some(m) = self.c[x].msg {
                return Some(m);
            }
            x = *self.c[x].children.first()?;
        }
    }

    fn prune(&mut self, list: Vec<usize>, root_level: bool) -> Vec<usize> {
        let mut out = Vec::new();
        for x in list {
            let children = std::mem::take(&mut self.c[x].children);
            let children = self.prune(children, false);
            self.c[x].children = children;
            if self.c[x].msg.is_some() {
                out.push(x);
                continue;
            }
            let n = self.c[x].children.len();
            if n == 0 {
                continue;
            }
            if !root_level || n == 1 {
                let kids = std::mem::take(&mut self.c[x].children);
                for &k in &kids {
                    self.c[k].parent = self.c[x].parent;
                }
                out.extend(kids);
            } else {
                out.push(x);
            }
        }
        out
    }

    fn sort_children(&mut self, x: usize) {
        let mut kids = std::mem::take(&mut self.c[x].children);
        for &k in &kids {
            self.sort_children(k);
        }
        kids.sort_by_key(|&k| self.key(k));
        self.c[x].children = kids;
    }

    fn tree(&self, x: usize) -> Thread {
        let children = self.c[x].children.iter().map(|&k| self.tree(k)).collect();
        match self.c[x].msg {
            Some(m) => Thread::Message {
                number: self.msgs[m].number,
                children,
            },
            None => Thread::Dummy { children },
        }
    }
}

/// THREAD=REFERENCES (RFC 5256 §3, steps 1–6).
pub fn references(msgs: &[ThreadMessage]) -> Vec<Thread> {
    let mut a = Arena {
        c: Vec::with_capacity(msgs.len() * 2),
        msgs,
    };
    let mut table: HashMap<&str, usize> = HashMap::new();
    // Step 1.
    for (i, m) in msgs.iter().enumerate() {
        // 1A: a container for this message; a missing or duplicate id
        // gets a container of its own.
        let me = match m.message_id.as_deref() {
            Some(id) => match table.get(id) {
                Some(&c) if a.c[c].msg.is_none() => c,
                Some(_) => a.new_container(),
                None => {
                    let c = a.new_container();
                    table.insert(id, c);
                    c
                }
            },
            None => a.new_container(),
        };
        a.c[me].msg = Some(i);
        let refs: Vec<&str> = if m.references.is_empty() {
            m.in_reply_to.iter().map(String::as_str).collect()
        } else {
            m.references.iter().map(String::as_str).collect()
        };
        let mut prev: Option<usize> = None;
        for r in refs {
            let c = match table.get(r) {
                Some(&c) => c,
                None => {
                    let c = a.new_container();
                    table.insert(r, c);
                    c
                }
            };
            // 1B: link consecutive references unless already linked or
            // it would make a loop.
            if let Some(p) = prev
                && a.c[c].parent.is_none()
                && !a.is_ancestor_or_self(c, p)
            {
                a.link(p, c);
            }
            prev = Some(c);
        }
        // 1C: the last reference becomes this message's parent.
        a.unlink(me);
        if let Some(p) = prev
            && !a.is_ancestor_or_self(me, p)
        {
            a.link(p, me);
        }
    }
    // Steps 2–3: the root set; the id table is no longer needed.
    drop(table);
    let roots: Vec<usize> = (0..a.c.len())
        .filter(|&x| a.c[x].parent.is_none())
        .collect();
    // Step 4: prune dummies.
    let mut roots = a.prune(roots, true);
    // Step 5: sort the root set by date (dummies by their first child).
    for &r in &roots {
        a.sort_children(r);
    }
    roots.sort_by_key(|&r| a.key(r));
    // Step 6: merge threads with the same base subject.
    let subject = |a: &Arena<'_>, x: usize| -> Option<(String, bool)> {
        let m = a.representative(x)?;
        let s = &a.msgs[m].base_subject;
        (!s.is_empty()).then(|| (fold(s), a.msgs[m].is_reply))
    };
    let mut by_subject: HashMap<String, usize> = HashMap::new();
    for &r in &roots {
        let Some((s, reply)) = subject(&a, r) else {
            continue;
        };
        match by_subject.get(&s) {
            None => {
                by_subject.insert(s, r);
            }
            Some(&old) => {
                let old_dummy = a.c[old].msg.is_none();
                let old_reply = subject(&a, old).is_some_and(|x| x.1);
                let r_dummy = a.c[r].msg.is_none();
                if !old_dummy && (r_dummy || (old_reply && !reply)) {
                    by_subject.insert(s, r);
                }
            }
        }
    }
    let mut removed = vec![false; a.c.len()];
    let mut replace: HashMap<usize, usize> = HashMap::new();
    for &r in &roots {
        if removed[r] {
            continue;
        }
        let Some((s, reply)) = subject(&a, r) else {
            continue;
        };
        let Some(&t) = by_subject.get(&s) else {
            continue;
        };
        if t == r {
            continue;
        }
        let t_dummy = a.c[t].msg.is_none();
        let r_dummy = a.c[r].msg.is_none();
        let t_reply = subject(&a, t).is_some_and(|x| x.1);
        if t_dummy && r_dummy {
            let kids = std::mem::take(&mut a.c[r].children);
            for k in kids {
                a.link(t, k);
            }
            removed[r] = true;
        } else if t_dummy || (!t_reply && reply && !r_dummy) {
            a.link(t, r);
            removed[r] = true;
        } else if r_dummy {
            a.link(r, t);
            removed[t] = true;
            by_subject.insert(s, r);
        } else {
            let d = a.new_container();
            removed.push(false);
            a.link(d, t);
            a.link(d, r);
            removed[r] = true;
            replace.insert(t, d);
            by_subject.insert(s, d);
        }
    }
    let mut final_roots: Vec<usize> = Vec::new();
    for r in roots {
        let r = *replace.get(&r).unwrap_or(&r);
        if !removed[r] && !final_roots.contains(&r) {
            final_roots.push(r);
        }
    }
    // Step 6 of the RFC: sort every set of siblings by date.
    for &r in &final_roots {
        a.sort_children(r);
    }
    final_roots.sort_by_key(|&r| a.key(r));
    final_roots.into_iter().map(|r| a.tree(r)).collect()
}

fn render_node(t: &Thread, out: &mut Vec<u8>) {
    match t {
        Thread::Message { number, children } => {
            out.extend(number.to_string().as_bytes());
            match children.as_slice() {
                [] => {}
                [only] => {
                    out.push(b' ');
                    render_node(only, out);
                }
                many => {
                    out.push(b' ');
                    for c in many {
                        out.push(b'(');
                        render_node(c, out);
                        out.push(b')');
                    }
                }
            }
        }
        Thread::Dummy { children } => {
            for c in children {
                out.push(b'(');
                render_node(c, out);
                out.push(b')');
            }
        }
    }
}

/// Appends the `thread-list` data of a THREAD response: `(1 2 (3)(4))…`.
pub fn render(threads: &[Thread], out: &mut Vec<u8>) {
    for t in threads {
        out.push(b'(');
        render_node(t, out);
        out.push(b')');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tm(n: u32, id: &str, refs: &[&str], subject: &str, date: i64) -> ThreadMessage {
        let (base_subject, is_reply) = crate::sort::base_subject(subject.as_bytes());
        ThreadMessage {
            number: n,
            message_id: (!id.is_empty()).then(|| id.to_string()),
            references: refs.iter().map(|s| s.to_string()).collect(),
            in_reply_to: None,
            base_subject,
            is_reply,
            date,
        }
    }

    fn show(t: &[Thread]) -> String {
        let mut out = Vec::new();
        render(t, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rendering() {
        let leaf = |n| Thread::Message {
            number: n,
            children: vec![],
        };
        // RFC 5256 §4: (3 6 (4 23)(44 7 96))
        let t = Thread::Message {
            number: 3,
            children: vec![Thread::Message {
                number: 6,
                children: vec![
                    Thread::Message {
                        number: 4,
                        children: vec![leaf(23)],
                    },
                    Thread::Message {
                        number: 44,
                        children: vec![Thread::Message {
                            number: 7,
                            children: vec![leaf(96)],
                        }],
                    },
                ],
            }],
        };
        assert_eq!(show(&[leaf(2), t]), "(2)(3 6 (4 23)(44 7 96))");
        let d = Thread::Dummy {
            children: vec![leaf(3), leaf(5)],
        };
        assert_eq!(show(&[d]), "((3)(5))");
    }

    #[test]
    fn references_chains_and_missing_parents() {
        let msgs = vec![
            tm(1, "<a>", &[], "topic", 10),
            tm(2, "<b>", &["<a>"], "Re: topic", 20),
            tm(3, "<c>", &["<a>", "<b>"], "Re: topic", 30),
            tm(4, "<d>", &["<a>"], "Re: topic", 40),
            // Two replies to a message we do not have: a dummy root.
            tm(5, "<e>", &["<zz>"], "Re: other", 50),
            tm(6, "<f>", &["<zz>"], "Re: other", 60),
            // One reply to a missing message: promoted to the root.
            tm(7, "<g>", &["<yy>"], "third", 70),
        ];
        assert_eq!(show(&references(&msgs)), "(1 (2 3)(4))((5)(6))(7)");
    }

    #[test]
    fn references_subject_merging() {
        // Same base subject, no references: a non-reply adopts replies;
        // two non-replies get a dummy parent.
        let msgs = vec![
            tm(1, "<a>", &[], "Lunch", 10),
            tm(2, "<b>", &[], "Re: lunch", 20),
            tm(3, "<c>", &[], "Plans", 30),
            tm(4, "<d>", &[], "plans", 40),
            tm(5, "<e>", &[], "", 50),
            tm(6, "<f>", &[], "", 60),
        ];
        assert_eq!(show(&references(&msgs)), "(1 2)((3)(4))(5)(6)");
    }

    #[test]
    fn references_duplicates_loops_and_date_order() {
        let msgs = vec![
            tm(1, "<a>", &["<b>"], "x", 30),
            tm(2, "<b>", &["<a>"], "y", 10),
            tm(3, "<a>", &[], "z", 20),
            tm(4, "", &["<b>"], "w", 5),
        ];
        // 1 is child of <b>(2); 2 would loop under 1, so stays a root
        // holding 1; the duplicate <a> (3) is its own thread; 4 under 2.
        assert_eq!(show(&references(&msgs)), "(2 (4)(1))(3)");
    }

    #[test]
    fn ordered_subject_groups() {
        let msgs = vec![
            tm(1, "", &[], "b", 10),
            tm(2, "", &[], "Re: a", 5),
            tm(3, "", &[], "A", 20),
            tm(4, "", &[], "re: b", 30),
            tm(5, "", &[], "c", 1),
        ];
        assert_eq!(show(&ordered_subject(&msgs)), "(5)(2 3)(1 4)");
        let msgs = vec![
            tm(1, "", &[], "a", 1),
            tm(2, "", &[], "a", 2),
            tm(3, "", &[], "a", 3),
        ];
        assert_eq!(show(&ordered_subject(&msgs)), "(1 (2)(3))");
    }

    #[test]
    fn ids() {
        assert_eq!(
            message_ids(b" <a@b>\r\n <c\r\n @d> junk <>"),
            vec!["<a@b>".to_string(), "<c@d>".to_string()]
        );
    }
}
