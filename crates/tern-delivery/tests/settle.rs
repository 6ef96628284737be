//! The connection of a finished delivery is held [`Unsettled`] until the
//! caller has recorded the results: against `tern_testkit`'s SMTP and LMTP
//! peers, which know whether a client has acted on its final reply, the
//! server hears nothing more (no QUIT, no next transaction) before
//! `settle`, QUIT (or a cached reuse) after it, and a connection dropped
//! unsettled ends inside RFC 1047's window.

use std::time::Duration;

use tern_delivery::lmtp::{LmtpTarget, deliver_lmtp_unsettled};
use tern_delivery::outbound::{
    ConnectionCache, MessageData, OutboundMessage, OutboundSettings, Unsettled,
    deliver_to_domain_unsettled,
};
use tern_dns::StaticResolver;
use tern_queue::AttemptResult;
use tern_smtp::client::ClientTimeouts;
use tern_testkit::smtp::{RunningPeer, SmtpPeer};
use tern_types::dsn::BodyType;

mod common;
use common::{sender, stored};

const HELO: &str = "node.tern.test";

fn message(data: &[u8]) -> OutboundMessage<'_> {
    OutboundMessage {
        sender: sender("alice@example.org"),
        body: BodyType::SevenBit,
        smtputf8: false,
        ret: None,
        envid: None,
        data: MessageData::Bytes(data),
    }
}

fn timeouts() -> ClientTimeouts {
    let t = Duration::from_secs(5);
    ClientTimeouts {
        greeting: t,
        command: t,
        tls_handshake: t,
        mail: t,
        rcpt: t,
        data_init: t,
        data_block: t,
        data_termination: t,
    }
}

fn settings(port: u16) -> OutboundSettings {
    let mut s = OutboundSettings::new(HELO);
    s.port = port;
    s.timeouts = timeouts();
    s.connect_timeout = Duration::from_secs(2);
    s
}

fn resolver() -> StaticResolver {
    StaticResolver::new()
        .with_mx("example.test", &[(10, "mx.example.test")])
        .with_ips("mx.example.test", &["127.0.0.1".parse().unwrap()])
}

/// Polls (at most 2 s) until `peer` has seen `n` QUITs.
async fn quits(peer: &RunningPeer, n: usize) {
    for _ in 0..100 {
        if peer.seen().iter().filter(|l| *l == "QUIT").count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{n} QUITs expected: {:?}", peer.seen());
}

/// Polls (at most 2 s) until the peer's last transaction was cut.
async fn last_cut(peer: &RunningPeer) {
    for _ in 0..100 {
        if peer.transactions().last().is_some_and(|t| t.cut_after_dot) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not cut: {:?}", peer.transactions().last());
}

/// What the peer's client has said since its last final reply: nothing
/// while the delivery is unsettled.
fn assert_held(peer: &RunningPeer, open: &Unsettled<'_>) {
    assert!(open.is_open());
    assert_eq!(peer.unsettled(), [format!("{}HLO {HELO}", peer_kind(peer))]);
    assert!(
        !peer.seen().iter().any(|l| l == "QUIT"),
        "{:?}",
        peer.seen()
    );
}

fn peer_kind(peer: &RunningPeer) -> &'static str {
    if peer.seen().iter().any(|l| l.starts_with("LHLO")) {
        "L"
    } else {
        "E"
    }
}

#[tokio::test]
async fn lmtp_says_quit_only_once_settled_and_a_drop_cuts_in_the_window() {
    let peer = SmtpPeer::lmtp("box.lmtp.test")
        .extension("PIPELINING")
        .bind("127.0.0.1:0".parse().unwrap())
        .await;
    let target = LmtpTarget::Tcp("127.0.0.1".into(), peer.addr.port());
    let rcpts = [stored(3, "u@lmtp.test")];
    let data = b"Subject: one\r\n\r\nbody\r\n";
    let (done, open) =
        deliver_lmtp_unsettled(&target, HELO, &message(data), &rcpts, &timeouts()).await;
    assert!(matches!(
        done.results[..],
        [(3, AttemptResult::Delivered(_))]
    ));
    // The reply is in, and the server has heard nothing since.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_held(&peer, &open);
    open.settle().await;
    quits(&peer, 1).await;
    assert!(peer.unsettled().is_empty());
    let first = &peer.transactions()[0];
    assert!(first.replied && first.quit && !first.in_window());

    // Dropped unsettled (the record failed, the node died): cut right
    // after the reply, which is RFC 1047's window.
    let (done, open) =
        deliver_lmtp_unsettled(&target, HELO, &message(data), &rcpts, &timeouts()).await;
    assert!(matches!(
        done.results[..],
        [(3, AttemptResult::Delivered(_))]
    ));
    drop(open);
    last_cut(&peer).await;
    let second = &peer.transactions()[1];
    assert!(second.replied && !second.quit && second.in_window());
    assert_eq!(peer.seen().iter().filter(|l| *l == "QUIT").count(), 1);
}

#[tokio::test]
async fn smtp_without_a_cache_says_quit_only_once_settled() {
    let peer = SmtpPeer::new("mx.example.test")
        .extension("PIPELINING")
        .bind("127.0.0.1:0".parse().unwrap())
        .await;
    let rcpts = [stored(0, "bob@example.test")];
    let data = b"Subject: two\r\n\r\nbody\r\n";
    let (done, open) = deliver_to_domain_unsettled(
        &settings(peer.addr.port()),
        &resolver(),
        "example.test",
        &message(data),
        &rcpts,
        1,
        None,
    )
    .await;
    assert!(matches!(
        done.results[..],
        [(0, AttemptResult::Delivered(_))]
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_held(&peer, &open);
    open.settle().await;
    quits(&peer, 1).await;
    assert!(peer.transactions()[0].quit);
}

#[tokio::test]
async fn smtp_with_a_cache_goes_back_to_it_only_once_settled() {
    let peer = SmtpPeer::new("mx.example.test")
        .extension("PIPELINING")
        .bind("127.0.0.1:0".parse().unwrap())
        .await;
    let cache = ConnectionCache::new(Duration::from_secs(30), 4);
    let settings = settings(peer.addr.port());
    let rcpts = [stored(0, "bob@example.test")];
    let data = b"Subject: three\r\n\r\nbody\r\n";
    let (resolver, msg) = (resolver(), message(data));
    let deliver = || {
        deliver_to_domain_unsettled(
            &settings,
            &resolver,
            "example.test",
            &msg,
            &rcpts,
            1,
            Some(&cache),
        )
    };
    let (done, open) = deliver().await;
    assert!(matches!(
        done.results[..],
        [(0, AttemptResult::Delivered(_))]
    ));
    // Not in the cache yet: no other delivery can start a transaction on
    // it before this one is recorded.
    assert_eq!(cache.idle_count(), 0);
    assert_held(&peer, &open);
    open.settle().await;
    assert_eq!(cache.idle_count(), 1);
    // The next message reuses it; that MAIL FROM settles the first one in
    // the server's eyes.
    let (done, open) = deliver().await;
    assert!(matches!(
        done.results[..],
        [(0, AttemptResult::Delivered(_))]
    ));
    assert_eq!(
        peer.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let t = peer.transactions();
    assert_eq!(t.len(), 2);
    assert!(t[0].replied && !t[0].in_window());
    assert_held(&peer, &open);
    open.settle().await;
    assert_eq!(cache.idle_count(), 1);
    cache.close_all().await;
    quits(&peer, 1).await;
}
