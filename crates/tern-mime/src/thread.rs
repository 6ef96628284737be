//! THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 §3) over a set
//! of messages, and the IMAP rendering of the result (`(1 2 (3 4)(5))`).
//! Nothing here recurses on thread depth: a hostile mailbox with a reply
//! chain thousands deep cannot overflow the stack.
//!
//! The caller builds one [`ThreadMessage`] per message (with
//! [`crate::Message::thread_message`] or by hand from cached fields) and
//! gets a typed forest back ([`Threads`]). Ties between equal sent dates are broken by
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

/// A forest of threads, stored flat: a thread 20 000 replies deep costs
/// no stack to build, render or drop.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Threads {
    /// Every node; [`ThreadNode::children`] are indexes into this.
    pub nodes: Vec<ThreadNode>,
    /// The top-level threads, in order.
    pub roots: Vec<usize>,
}

/// One message (or missing parent) in [`Threads`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadNode {
    /// The caller's number; `None` for a dummy, the placeholder parent of
    /// siblings whose real parent is not in the set.
    pub number: Option<u32>,
    /// Replies, oldest first (indexes into [`Threads::nodes`]).
    pub children: Vec<usize>,
}

enum Step {
    Node(usize),
    Text(&'static [u8]),
}

impl Threads {
    fn push(&mut self, number: Option<u32>) -> usize {
        self.nodes.push(ThreadNode {
            number,
            children: Vec::new(),
        });
        self.nodes.len() - 1
    }

    /// Appends the `thread-list` data of a THREAD response,
    /// `(1 2 (3)(4))…` (RFC 5256 §4): a message's only child follows it,
    /// several children are each parenthesised, a dummy is just its
    /// parenthesised children.
    pub fn render(&self, out: &mut Vec<u8>) {
        let mut stack: Vec<Step> = Vec::new();
        for &r in self.roots.iter().rev() {
            stack.push(Step::Text(b")"));
            stack.push(Step::Node(r));
            stack.push(Step::Text(b"("));
        }
        while let Some(step) = stack.pop() {
            let i = match step {
                Step::Text(t) => {
                    out.extend_from_slice(t);
                    continue;
                }
                Step::Node(i) => i,
            };
            let node = &self.nodes[i];
            if let Some(n) = node.number {
                out.extend(n.to_string().as_bytes());
                match node.children.as_slice() {
                    [] => continue,
                    [only] => {
                        out.push(b' ');
                        stack.push(Step::Node(*only));
                        continue;
                    }
                    _ => out.push(b' '),
                }
            }
            for &c in node.children.iter().rev() {
                stack.push(Step::Text(b")"));
                stack.push(Step::Node(c));
                stack.push(Step::Text(b"("));
            }
        }
    }
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
            crate::header::last_value(h, name)
                .map(message_ids)
                .unwrap_or_default()
        };
        let (base_subject, is_reply) =
            crate::sort::base_subject(crate::header::last_value(h, b"subject").unwrap_or(b""));
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
pub fn ordered_subject(msgs: &[ThreadMessage]) -> Threads {
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
    let mut t = Threads::default();
    for g in groups {
        let root = t.push(Some(msgs[g[0]].number));
        for &i in &g[1..] {
            let c = t.push(Some(msgs[i].number));
            t.nodes[root].children.push(c);
        }
        t.roots.push(root);
    }
    t
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
        if a == b {
            return true;
        }
        if self.c[a].children.is_empty() {
            // A childless container is nobody's ancestor: the common case
            // (a new message) needs no walk up a long chain.
            return false;
        }
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

    /// Every container reachable from `roots`, parents before children.
    fn preorder(&self, roots: &[usize]) -> Vec<usize> {
        let mut order = Vec::new();
        let mut stack = roots.to_vec();
        while let Some(x) = stack.pop() {
            order.push(x);
            stack.extend(self.c[x].children.iter().copied());
        }
        order
    }

    /// Step 4: dummies without children go; a dummy's children take its
    /// place, except at the root where a dummy with several children
    /// stays.
    fn prune(&mut self, roots: Vec<usize>) -> Vec<usize> {
        for x in self.preorder(&roots).into_iter().rev() {
            // Children are done before their parents.
            let kids = std::mem::take(&mut self.c[x].children);
            let mut kept = Vec::with_capacity(kids.len());
            for k in kids {
                if self.c[k].msg.is_some() {
                    kept.push(k);
                } else {
                    let grandchildren = std::mem::take(&mut self.c[k].children);
                    for &g in &grandchildren {
                        self.c[g].parent = Some(x);
                    }
                    kept.extend(grandchildren);
                }
            }
            self.c[x].children = kept;
        }
        let mut out = Vec::new();
        for r in roots {
            if self.c[r].msg.is_some() {
                out.push(r);
                continue;
            }
            match self.c[r].children.as_slice() {
                [] => {}
                [only] => {
                    let only = *only;
                    self.c[only].parent = None;
                    out.push(only);
                }
                _ => out.push(r),
            }
        }
        out
    }

    /// Sorts every set of siblings under `roots`, and `roots`, by date.
    /// Dummies only occur at the root and have only messages as
    /// children, so sorting all children first makes every key final.
    fn sort(&mut self, roots: &mut [usize]) {
        for x in self.preorder(roots) {
            let mut kids = std::mem::take(&mut self.c[x].children);
            kids.sort_by_key(|&k| self.key(k));
            self.c[x].children = kids;
        }
        roots.sort_by_key(|&r| self.key(r));
    }

    fn threads(&self, roots: &[usize]) -> Threads {
        let mut t = Threads::default();
        let mut stack: Vec<(usize, Option<usize>)> =
            roots.iter().rev().map(|&r| (r, None)).collect();
        while let Some((x, parent)) = stack.pop() {
            let node = t.push(self.c[x].msg.map(|m| self.msgs[m].number));
            match parent {
                Some(p) => t.nodes[p].children.push(node),
                None => t.roots.push(node),
            }
            stack.extend(self.c[x].children.iter().rev().map(|&k| (k, Some(node))));
        }
        t
    }
}

/// THREAD=REFERENCES (RFC 5256 §3, steps 1–6).
pub fn references(msgs: &[ThreadMessage]) -> Threads {
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
    let mut roots = a.prune(roots);
    // Step 5: sort the root set by date (dummies by their first child).
    a.sort(&mut roots);
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
    a.sort(&mut final_roots);
    a.threads(&final_roots)
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

    fn show(t: &Threads) -> String {
        let mut out = Vec::new();
        t.render(&mut out);
        String::from_utf8(out).unwrap()
    }

    /// Builds a forest from `(number or 0 for a dummy, parent index)`.
    fn forest(nodes: &[(u32, Option<usize>)]) -> Threads {
        let mut t = Threads::default();
        for &(n, parent) in nodes {
            let i = t.push((n != 0).then_some(n));
            match parent {
                Some(p) => t.nodes[p].children.push(i),
                None => t.roots.push(i),
            }
        }
        t
    }

    #[test]
    fn rendering() {
        // RFC 5256 §4: (3 6 (4 23)(44 7 96)), after a lone (2).
        let t = forest(&[
            (2, None),
            (3, None),
            (6, Some(1)),
            (4, Some(2)),
            (23, Some(3)),
            (44, Some(2)),
            (7, Some(5)),
            (96, Some(6)),
        ]);
        assert_eq!(show(&t), "(2)(3 6 (4 23)(44 7 96))");
        assert_eq!(
            show(&forest(&[(0, None), (3, Some(0)), (5, Some(0))])),
            "((3)(5))"
        );
        assert_eq!(show(&Threads::default()), "");
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
    fn long_chains_stay_fast() {
        let n = 20_000;
        let msgs: Vec<ThreadMessage> = (0..n)
            .map(|i| ThreadMessage {
                number: i + 1,
                message_id: Some(format!("<{i}>")),
                references: if i == 0 {
                    vec![]
                } else {
                    vec!["<0>".into(), format!("<{}>", i - 1)]
                },
                in_reply_to: None,
                base_subject: "s".into(),
                is_reply: i > 0,
                date: i64::from(i),
            })
            .collect();
        let start = std::time::Instant::now();
        let t = references(&msgs);
        assert_eq!(t.roots.len(), 1);
        let mut depth = 1;
        let mut node = t.roots[0];
        while let Some(&c) = t.nodes[node].children.first() {
            depth += 1;
            node = c;
        }
        assert_eq!(depth, n as usize);
        assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
        let mut out = Vec::new();
        t.render(&mut out);
        assert!(out.starts_with(b"(1 2 3 "));
        assert!(out.ends_with(b" 19999 20000)"));
    }

    #[test]
    fn ids() {
        assert_eq!(
            message_ids(b" <a@b>\r\n <c\r\n @d> junk <>"),
            vec!["<a@b>".to_string(), "<c@d>".to_string()]
        );
    }
}
