//! Which formation of its cluster a node's Raft state belongs to. Nodes that hold one
//! cluster's certificates and gossip key can still form that cluster more than once (see
//! `foreign.rs`); Raft messages between two such formations would overrule each other's
//! logs (a node added by both leaders crashed openraft's core when that was tried). So
//! each formation has an id, made by the node that bootstraps it, kept in the node's store
//! (`Table::Meta`), and carried by every Raft message ([`Fenced`]). A node without one takes
//! the id of the first Raft message it accepts (a node joining, or whose store was
//! rebuilt); from then on it refuses Raft messages of another formation. A message without
//! one is taken as before: a cluster formed by an earlier release has no id (making one
//! later could split its own members, if a leader that made one lost its place before
//! they took it) and is not fenced.
//!
//! The sending side: a node that refused this node's messages as another formation's is
//! noted ([`Formation::note_refused`]); Raft backs off from it as from an unreachable node,
//! and the leader takes such a learner out of its configuration (`manager.rs`), since it
//! follows the other formation and would never acknowledge this one's entries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::grid::{BatchOp, Durability, Grid, Table};

/// The `Table::Meta` key of this node's formation id.
const FORMATION_KEY: &[u8] = b"formation";

/// A Raft message and the formation of the node that sent it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Fenced<T> {
    pub formation: Option<String>,
    pub rpc: T,
}

/// Why a Raft message was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    #[error(
        "{sender} belongs to another formation of this cluster ({theirs}; this node {mine}): the nodes formed the \
         cluster more than once, and Raft messages between the formations are refused (GET /v1/cluster names \
         the other formation's nodes as foreign; the log of either says the fix)"
    )]
    Other { sender: String, theirs: String, mine: String },
    #[error("{sender} sent a formation id that is not one ({0:?}): expected f- and 16 hex digits", .id)]
    Malformed { sender: String, id: String },
    #[error("this node could not keep its formation id: {0}")]
    Store(String),
}

/// How long a node that refused this node's Raft messages counts as refusing.
const REFUSAL_MEMORY: Duration = Duration::from_secs(30);

/// Where this node's id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Made here, to bootstrap a cluster.
    Made,
    /// Taken from a Raft message.
    Taken,
}

/// This node's formation id, and the store that keeps it.
pub struct Formation {
    grid: Arc<Grid>,
    id: RwLock<Option<(String, Origin)>>,
    /// Taking or making an id (a store write), and a bootstrap: one at a time, so two
    /// senders cannot both be taken, and no message is taken while a bootstrap runs.
    adopting: tokio::sync::Mutex<()>,
    /// Nodes that refused this node's Raft messages as another formation's, and when last.
    refused_by: Mutex<BTreeMap<String, Instant>>,
    log: crate::ratelog::RateLimited,
}

fn well_formed(id: &str) -> bool {
    id.len() == 18 && id.starts_with("f-") && id[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

impl Formation {
    /// The id kept in `grid`'s store, if any.
    pub async fn open(grid: Arc<Grid>) -> anyhow::Result<Arc<Formation>> {
        let kept = grid
            .blocking(|s| s.get(Table::Meta, FORMATION_KEY))
            .await
            .map_err(|e| anyhow::anyhow!("reading this node's formation id: {e}"))?;
        let id = kept.map(|b| String::from_utf8_lossy(&b).into_owned()).and_then(|v| match v.split_once(' ') {
            Some(("made", id)) => Some((id.to_string(), Origin::Made)),
            Some(("taken", id)) => Some((id.to_string(), Origin::Taken)),
            _ => None,
        });
        Ok(Arc::new(Formation {
            grid,
            id: RwLock::new(id),
            adopting: Default::default(),
            refused_by: Default::default(),
            log: crate::ratelog::RateLimited::new(Duration::from_secs(30)),
        }))
    }

    pub fn id(&self) -> Option<String> {
        self.id.read().unwrap_or_else(|e| e.into_inner()).as_ref().map(|(id, _)| id.clone())
    }

    /// At start, with whether this node's Raft is a member of anything: an id made here for
    /// a bootstrap that never happened (the node stopped between the two) is dropped, so
    /// the node can join whichever cluster takes it.
    pub async fn drop_unused(&self, initialized: bool) -> Result<(), FenceError> {
        let _one = self.adopting.lock().await;
        let made = matches!(*self.id.read().unwrap_or_else(|e| e.into_inner()), Some((_, Origin::Made)));
        if made && !initialized {
            self.forget().await?;
            tracing::info!("dropped a formation id made for a bootstrap that did not happen");
        }
        Ok(())
    }

    /// Bootstrap a cluster with `init` (Raft's `initialize`) under an id made here: made
    /// now if this node has none, and dropped again if `init` fails. Refused when this node
    /// took another formation's id from a Raft message meanwhile: it joins that one.
    /// No Raft message is taken while this runs.
    pub async fn bootstrap<E: std::fmt::Display>(
        &self,
        init: impl std::future::Future<Output = Result<(), E>>,
    ) -> Result<String, String> {
        let _one = self.adopting.lock().await;
        let current = self.id.read().unwrap_or_else(|e| e.into_inner()).clone();
        let (id, new) = match current {
            Some((id, Origin::Taken)) => {
                return Err(format!("this node took formation {id} from a Raft message: it joins that cluster"));
            }
            Some((id, Origin::Made)) => (id, false),
            None => {
                let mut b = [0u8; 8];
                getrandom::fill(&mut b).map_err(|e| format!("the system's random source failed: {e}"))?;
                let id = format!("f-{}", hex::encode(b));
                self.keep(&id, Origin::Made).await.map_err(|e| e.to_string())?;
                (id, true)
            }
        };
        if let Err(e) = init.await {
            if new {
                self.forget().await.map_err(|e| e.to_string())?;
            }
            return Err(e.to_string());
        }
        tracing::info!(formation = %id, "this node's cluster formation has its id");
        Ok(id)
    }

    /// Whether a Raft message of `theirs` from `sender` may be taken: yes when it names no
    /// formation, when this node has none yet (it takes the sender's, for good), or when
    /// both are the same.
    pub async fn admit(&self, sender: &str, theirs: Option<&str>) -> Result<(), FenceError> {
        let Some(theirs) = theirs else { return Ok(()) };
        if !well_formed(theirs) {
            return Err(FenceError::Malformed { sender: sender.to_string(), id: theirs.chars().take(64).collect() });
        }
        match self.id() {
            Some(mine) if mine == theirs => return Ok(()),
            Some(mine) => return Err(self.refuse(sender, theirs, mine)),
            None => {}
        }
        let _one = self.adopting.lock().await;
        match self.id() {
            Some(mine) if mine == theirs => Ok(()),
            Some(mine) => Err(self.refuse(sender, theirs, mine)),
            None => {
                self.keep(theirs, Origin::Taken).await?;
                tracing::info!(formation = theirs, from = sender, "this node joined a cluster formation");
                Ok(())
            }
        }
    }

    /// `node` refused a Raft message of this node's as another formation's (logged when it
    /// starts to).
    pub fn note_refused(&self, node: &str) {
        let now = Instant::now();
        let last = self.refused_by.lock().unwrap_or_else(|e| e.into_inner()).insert(node.to_string(), now);
        if last.is_none_or(|t| now.duration_since(t) > REFUSAL_MEMORY) {
            tracing::warn!(
                node,
                "{node} refuses this node's Raft messages: it follows another formation of the cluster"
            );
        }
    }

    /// Nodes that refused this node's Raft messages as another formation's within the
    /// last 30 s.
    pub fn refusing(&self) -> BTreeSet<String> {
        let mut refused = self.refused_by.lock().unwrap_or_else(|e| e.into_inner());
        refused.retain(|_, t| t.elapsed() <= REFUSAL_MEMORY);
        refused.keys().cloned().collect()
    }

    fn refuse(&self, sender: &str, theirs: &str, mine: String) -> FenceError {
        let e = FenceError::Other { sender: sender.to_string(), theirs: theirs.to_string(), mine };
        if let Some(dropped) = self.log.allow("fence") {
            tracing::error!(dropped, "refused Raft messages: {e}");
        }
        e
    }

    async fn forget(&self) -> Result<(), FenceError> {
        let delete = vec![BatchOp::Delete(Table::Meta, FORMATION_KEY.to_vec())];
        self.grid
            .blocking(move |s| s.write(delete, Durability::Synced))
            .await
            .map_err(|e| FenceError::Store(e.to_string()))?;
        *self.id.write().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }

    /// Write `id` to the store (synced), then hold it.
    async fn keep(&self, id: &str, origin: Origin) -> Result<(), FenceError> {
        let value = format!("{} {id}", if origin == Origin::Made { "made" } else { "taken" });
        let put = vec![BatchOp::Put(Table::Meta, FORMATION_KEY.to_vec(), value.into_bytes())];
        self.grid
            .blocking(move |s| s.write(put, Durability::Synced))
            .await
            .map_err(|e| FenceError::Store(e.to_string()))?;
        *self.id.write().unwrap_or_else(|e| e.into_inner()) = Some((id.to_string(), origin));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Arc<Grid> {
        Arc::new(Grid::new(Arc::new(crate::grid::MemoryStorage::default())))
    }

    const A: &str = "f-00000000000000aa";
    const B: &str = "f-00000000000000bb";

    #[tokio::test]
    async fn a_node_takes_the_first_formation_and_refuses_any_other() {
        let g = grid();
        let f = Formation::open(g.clone()).await.unwrap();
        assert_eq!(f.id(), None);
        f.admit("n2", None).await.expect("no id on either side: taken as before");
        assert_eq!(f.id(), None, "a message without an id gives none");
        f.admit("n2", Some(A)).await.unwrap();
        assert_eq!(f.id().as_deref(), Some(A));
        f.admit("n2", Some(A)).await.unwrap();
        f.admit("n4", None).await.expect("a sender without an id is taken");
        let e = f.admit("n3", Some(B)).await.unwrap_err();
        assert_eq!(e, FenceError::Other { sender: "n3".into(), theirs: B.into(), mine: A.into() });
        assert!(
            e.to_string().contains(&format!("n3 belongs to another formation of this cluster ({B}; this node {A})"))
        );
        let e = f.admit("n3", Some("f-x")).await.unwrap_err();
        assert!(matches!(e, FenceError::Malformed { .. }), "{e}");
        // Kept across a restart (the store is opened again), and a taken id is not one to
        // bootstrap with, nor dropped at start.
        let again = Formation::open(g).await.unwrap();
        assert_eq!(again.id().as_deref(), Some(A));
        again.drop_unused(false).await.unwrap();
        assert_eq!(again.id().as_deref(), Some(A));
        let e = again.bootstrap(async { Ok::<(), String>(()) }).await.unwrap_err();
        assert!(e.contains(&format!("took formation {A}")), "{e}");
    }

    #[tokio::test]
    async fn a_bootstrap_makes_an_id_and_a_failed_one_leaves_none() {
        let g = grid();
        let f = Formation::open(g.clone()).await.unwrap();
        let e = f.bootstrap(async { Err::<(), _>("not allowed") }).await.unwrap_err();
        assert_eq!(e, "not allowed");
        assert_eq!(f.id(), None, "no id left by a bootstrap that failed");
        let id = f.bootstrap(async { Ok::<(), String>(()) }).await.unwrap();
        assert!(well_formed(&id), "{id}");
        assert_eq!(f.bootstrap(async { Ok::<(), String>(()) }).await.unwrap(), id, "a second keeps it");
        let again = Formation::open(g.clone()).await.unwrap();
        assert_eq!(again.id(), Some(id.clone()));
        again.drop_unused(true).await.unwrap();
        assert_eq!(again.id(), Some(id.clone()), "kept by a node whose Raft is a member");
        again.drop_unused(false).await.unwrap();
        assert_eq!(again.id(), None, "made for a bootstrap that never happened: dropped");
        assert_eq!(Formation::open(g).await.unwrap().id(), None);
        let other = Formation::open(grid()).await.unwrap().bootstrap(async { Ok::<(), String>(()) }).await.unwrap();
        assert_ne!(other, id, "two formations, two ids");
    }

    #[tokio::test]
    async fn refusals_are_remembered_for_a_while() {
        let f = Formation::open(grid()).await.unwrap();
        f.note_refused("n3");
        f.note_refused("n3");
        f.note_refused("n4");
        assert_eq!(f.refusing(), BTreeSet::from(["n3".to_string(), "n4".to_string()]));
        f.refused_by.lock().unwrap().insert("n3".into(), Instant::now() - REFUSAL_MEMORY - Duration::from_secs(1));
        assert_eq!(f.refusing(), BTreeSet::from(["n4".to_string()]));
    }
}
