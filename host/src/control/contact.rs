//! Whether this node's Raft is in touch with the cluster, beside what gossip shows. A
//! node's mode comes from gossip (it serves while it sees a majority of the voters), but
//! gossip and Raft take different paths: gossip is UDP on `--gossip-listen`, Raft and the
//! grid are TLS over TCP on `--peer-listen`. A firewall that passes the one and not the
//! other, or a cut of one direction, leaves a node that sees a majority and reaches none.
//! Tried on real nodes (network namespaces, nftables dropping only TCP): a leader cut off
//! that way went on calling itself leader for as long as the cut lasted, beside the leader
//! the others elected, and served its stale view. So a member whose Raft has had no
//! contact for a while turns dormant, as one that sees no majority does:
//! - a leader of two or more voters that no quorum has acknowledged for [`LEADER_QUIET`]
//!   (openraft's `millis_since_quorum_ack`; heartbeats go out every 100 ms);
//! - a follower or learner that no leader has sent an entry, a heartbeat or a snapshot
//!   it accepted for [`FOLLOWER_QUIET`] (longer: an election after a leader's death takes
//!   0.6-2.4 s here, and the survivors keep serving through it).
//!
//! It serves again as soon as contact is back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a leader may go without a quorum's acknowledgement.
pub const LEADER_QUIET: Duration = Duration::from_secs(3);
/// How long a follower or learner may go without a message from a leader.
pub const FOLLOWER_QUIET: Duration = Duration::from_secs(10);

/// What this node's Raft is doing, as far as contact goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Leader of two or more voters.
    Leading,
    /// Follower or learner (a candidate too: it has no leader yet).
    Following,
    /// Anything else (the only voter, not a member, dormant for another reason): no
    /// contact is expected.
    Other,
}

/// Contact lost, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    Leader(Duration),
    Follower(Duration),
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fix = "though gossip sees a majority of the voters: their peer connections (TLS over TCP, \
                   --peer-listen) do not get through while gossip (UDP, --gossip-listen) does. Open the peer \
                   port between every pair of nodes, both ways";
        match self {
            Lost::Leader(d) => {
                write!(f, "no quorum of voters has acknowledged this leader for {:.1} s, {fix}", d.as_secs_f64())
            }
            Lost::Follower(d) => {
                write!(f, "no leader has reached this node's Raft for {:.1} s, {fix}", d.as_secs_f64())
            }
        }
    }
}

/// The last contact and since when the node has held its part.
pub struct RaftContact {
    inner: Mutex<Track>,
}

struct Track {
    held: Held,
    since: Instant,
    heard: Option<Instant>,
}

impl Default for RaftContact {
    fn default() -> Self {
        RaftContact { inner: Mutex::new(Track { held: Held::Other, since: Instant::now(), heard: None }) }
    }
}

impl RaftContact {
    /// A leader's entries, heartbeat or snapshot were accepted here.
    pub fn heard_from_leader(&self, now: Instant) {
        self.lock().heard = Some(now);
    }

    /// This tick's check: `held` as Raft and gossip say now, `quorum_ack` openraft's time
    /// since a quorum last acknowledged this node as leader (`None`: never, or not leader).
    pub fn check(&self, now: Instant, held: Held, quorum_ack: Option<Duration>) -> Option<Lost> {
        let mut t = self.lock();
        if t.held != held {
            t.held = held;
            t.since = now;
        }
        let in_part = now.saturating_duration_since(t.since);
        match held {
            Held::Other => None,
            Held::Leading => {
                let quiet = quorum_ack.unwrap_or(in_part);
                (quiet > LEADER_QUIET).then_some(Lost::Leader(quiet))
            }
            Held::Following => {
                let last = t.heard.map_or(t.since, |h| h.max(t.since));
                let quiet = now.saturating_duration_since(last);
                (quiet > FOLLOWER_QUIET).then_some(Lost::Follower(quiet))
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Track> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_leader_is_out_of_touch_once_no_quorum_acknowledged_it_for_a_while() {
        let c = RaftContact::default();
        let t0 = Instant::now();
        assert_eq!(c.check(t0, Held::Leading, None), None, "just elected");
        assert_eq!(c.check(t0 + 2 * S, Held::Leading, Some(Duration::from_millis(80))), None);
        assert_eq!(c.check(t0 + 4 * S, Held::Leading, Some(4 * S)), Some(Lost::Leader(4 * S)));
        // Never acknowledged: counted from when it became leader.
        let c = RaftContact::default();
        assert_eq!(c.check(t0, Held::Leading, None), None);
        assert_eq!(c.check(t0 + 5 * S, Held::Leading, None), Some(Lost::Leader(5 * S)));
        // The only voter needs no one (the caller says `Other`).
        assert_eq!(c.check(t0 + 60 * S, Held::Other, None), None);
    }

    #[test]
    fn a_follower_is_out_of_touch_once_no_leader_reached_it_for_a_while() {
        let c = RaftContact::default();
        let t0 = Instant::now();
        assert_eq!(c.check(t0, Held::Following, None), None);
        c.heard_from_leader(t0 + 3 * S);
        assert_eq!(c.check(t0 + 12 * S, Held::Following, None), None, "heard 9 s ago");
        assert_eq!(c.check(t0 + 14 * S, Held::Following, None), Some(Lost::Follower(11 * S)));
        c.heard_from_leader(t0 + 14 * S);
        assert_eq!(c.check(t0 + 15 * S, Held::Following, None), None, "in touch again");
    }

    #[test]
    fn the_wait_starts_again_when_the_node_takes_another_part() {
        let c = RaftContact::default();
        let t0 = Instant::now();
        assert_eq!(c.check(t0, Held::Other, None), None);
        // Dormant for 30 s (not a member), then a follower that has heard from no one yet:
        // it gets the whole wait from when it became one.
        assert_eq!(c.check(t0 + 30 * S, Held::Following, None), None);
        assert_eq!(c.check(t0 + 39 * S, Held::Following, None), None);
        assert!(c.check(t0 + 41 * S, Held::Following, None).is_some());
        // A follower that becomes leader is judged as a leader from then on.
        assert_eq!(c.check(t0 + 42 * S, Held::Leading, None), None);
    }

    #[test]
    fn the_reason_names_the_ports_and_the_fix() {
        let msg = Lost::Follower(Duration::from_millis(10_400)).to_string();
        assert!(msg.starts_with("no leader has reached this node's Raft for 10.4 s"), "{msg}");
        assert!(msg.contains("--peer-listen") && msg.contains("Open the peer port"), "{msg}");
    }
}
