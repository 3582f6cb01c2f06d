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
//!   (openraft's `millis_since_quorum_ack`; heartbeats go out every 100 ms, and openraft
//!   counts an acknowledgement only if it comes back within that interval, so a link whose
//!   round trip, or a follower whose log write, takes longer than 100 ms for 3 s makes a
//!   leader that reaches everyone dormant too; its commits stall then anyway);
//! - a follower or learner that no leader in touch with the cluster has sent an entry, a
//!   heartbeat or a snapshot it accepted for [`FOLLOWER_QUIET`] (`peer.rs` does not count
//!   a leader that gossips `dormant`: without that, the one follower a cut-off leader still
//!   reaches would serve its stale view with it). Longer: an election after a leader's
//!   death takes 0.6-2.4 s here, and the survivors keep serving through it.
//!
//! It serves again as soon as contact is back. The cause given is the likely one; a
//! follower of a cluster that cannot elect a leader at all (its voters' stores rebuilt)
//! shows the same.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a leader may go without a quorum's acknowledgement.
pub const LEADER_QUIET: Duration = Duration::from_secs(3);
/// How long a follower or learner may go without a message from a leader.
pub const FOLLOWER_QUIET: Duration = Duration::from_secs(10);
/// A spell outside the cluster (not a member, dormant for another reason) shorter than
/// this does not start a follower's wait again: a view that flickers gives no extra time.
const FLICKER: Duration = Duration::from_secs(1);

/// What this node's Raft is doing, as far as contact goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Leader of two or more voters.
    Leading,
    /// Follower or learner (a candidate too: it has no leader yet); `elected` when Raft
    /// knows a leader.
    Following { elected: bool },
    /// Anything else (the only voter, not a member, dormant for another reason): no
    /// contact is expected.
    Other,
}

/// Contact lost, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    Leader(Duration),
    Follower { quiet: Duration, elected: bool },
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, quiet) = match self {
            Lost::Leader(d) => ("no quorum of voters has acknowledged this leader", d),
            Lost::Follower { quiet, elected: true } => {
                ("no leader in touch with the cluster has reached this node's Raft", quiet)
            }
            Lost::Follower { quiet, elected: false } => ("no leader has been elected that reaches this node", quiet),
        };
        write!(
            f,
            "{what} for {:.1} s, though gossip sees a majority of the voters. The likely cause: peer connections \
             (TLS over TCP, --peer-listen) do not get through while gossip (UDP, --gossip-listen) does; open the \
             peer port between every pair of nodes, both ways",
            quiet.as_secs_f64()
        )
    }
}

/// The last contact and since when the node has held its part.
pub struct RaftContact {
    inner: Mutex<Track>,
}

struct Track {
    held: Held,
    /// When the node took its current part.
    since: Instant,
    /// When it last came into the cluster after a spell outside of at least [`FLICKER`].
    member_since: Instant,
    heard: Option<Instant>,
    /// What the last check found.
    lost: Option<Lost>,
}

impl Default for RaftContact {
    fn default() -> Self {
        let now = Instant::now();
        let t = Track { held: Held::Other, since: now, member_since: now, heard: None, lost: None };
        RaftContact { inner: Mutex::new(t) }
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
        if std::mem::discriminant(&t.held) != std::mem::discriminant(&held) {
            match (t.held, held) {
                (Held::Other, _) if now.saturating_duration_since(t.since) >= FLICKER => t.member_since = now,
                // A leader in touch that hands over was in touch until now; one out of
                // touch gets no fresh wait as a follower (until a leader reaches it).
                (Held::Leading, Held::Following { .. }) if t.lost.is_none() => t.heard = Some(now),
                (Held::Leading, Held::Following { .. }) => {
                    let spent = now.checked_sub(FOLLOWER_QUIET + Duration::from_millis(1));
                    t.member_since = spent.map_or(t.member_since, |at| at.min(t.member_since));
                    t.heard = t.heard.filter(|h| *h < t.member_since);
                }
                _ => {}
            }
            t.since = now;
        }
        t.held = held;
        let lost = match held {
            Held::Other => None,
            Held::Leading => {
                let quiet = quorum_ack.unwrap_or(now.saturating_duration_since(t.since));
                (quiet > LEADER_QUIET).then_some(Lost::Leader(quiet))
            }
            Held::Following { elected } => {
                let last = t.heard.map_or(t.member_since, |h| h.max(t.member_since));
                let quiet = now.saturating_duration_since(last);
                (quiet > FOLLOWER_QUIET).then_some(Lost::Follower { quiet, elected })
            }
        };
        t.lost = lost;
        lost
    }

    /// What the last [`RaftContact::check`] found.
    pub fn lost(&self) -> Option<Lost> {
        self.lock().lost
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Track> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const F: Held = Held::Following { elected: true };

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
        assert_eq!(c.check(t0, F, None), None);
        c.heard_from_leader(t0 + 3 * S);
        assert_eq!(c.check(t0 + 12 * S, F, None), None, "heard 9 s ago");
        assert_eq!(c.check(t0 + 14 * S, F, None), Some(Lost::Follower { quiet: 11 * S, elected: true }));
        c.heard_from_leader(t0 + 14 * S);
        assert_eq!(c.check(t0 + 15 * S, F, None), None, "in touch again");
    }

    #[test]
    fn the_wait_starts_again_when_the_node_takes_another_part() {
        let c = RaftContact::default();
        let t0 = Instant::now();
        assert_eq!(c.check(t0, Held::Other, None), None);
        // Dormant for 30 s (not a member), then a follower that has heard from no one yet:
        // it gets the whole wait from when it became one.
        assert_eq!(c.check(t0 + 30 * S, F, None), None);
        assert_eq!(c.check(t0 + 39 * S, F, None), None);
        assert!(c.check(t0 + 41 * S, F, None).is_some());
        // A follower that becomes leader is judged as a leader from then on.
        assert_eq!(c.check(t0 + 42 * S, Held::Leading, None), None);
    }

    #[test]
    fn a_short_spell_outside_gives_a_follower_no_fresh_wait() {
        let c = RaftContact::default();
        let t0 = Instant::now();
        assert_eq!(c.check(t0, F, None), None);
        c.heard_from_leader(t0 + S);
        assert_eq!(c.check(t0 + 8 * S, Held::Other, None), None);
        assert_eq!(c.check(t0 + 8 * S + S / 2, F, None), None);
        assert_eq!(c.check(t0 + 12 * S, F, None), Some(Lost::Follower { quiet: 11 * S, elected: true }));
    }

    #[test]
    fn a_leader_that_hands_over_is_judged_by_how_it_left() {
        let t0 = Instant::now();
        // In touch: its wait as a follower starts when it hands over.
        let c = RaftContact::default();
        assert_eq!(c.check(t0, Held::Leading, Some(Duration::from_millis(50))), None);
        assert_eq!(c.check(t0 + 5 * S, F, None), None);
        assert_eq!(c.check(t0 + 14 * S, F, None), None);
        assert!(c.check(t0 + 16 * S, F, None).is_some());
        // Out of touch: it stays so as a follower until a leader reaches it.
        let c = RaftContact::default();
        assert_eq!(c.check(t0 + 20 * S, Held::Leading, None), None);
        assert!(c.check(t0 + 24 * S, Held::Leading, None).is_some());
        let unelected = Held::Following { elected: false };
        assert!(matches!(c.check(t0 + 25 * S, unelected, None), Some(Lost::Follower { elected: false, .. })));
        c.heard_from_leader(t0 + 26 * S);
        assert_eq!(c.check(t0 + 26 * S, F, None), None);
    }

    #[test]
    fn the_reason_says_what_is_missing_and_names_the_ports() {
        let msg = Lost::Follower { quiet: Duration::from_millis(10_400), elected: false }.to_string();
        assert!(msg.starts_with("no leader has been elected that reaches this node for 10.4 s"), "{msg}");
        assert!(msg.contains("--peer-listen") && msg.contains("open the peer port"), "{msg}");
        let msg = Lost::Leader(Duration::from_millis(3_100)).to_string();
        assert!(msg.starts_with("no quorum of voters has acknowledged this leader for 3.1 s"), "{msg}");
    }
}
