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

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

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
    #[error("this node could not keep the formation id {0} in its store: {1}")]
    Store(String, String),
}

/// This node's formation id, and the store that keeps it.
pub struct Formation {
    grid: Arc<Grid>,
    id: RwLock<Option<String>>,
    /// Taking an id is a store write: one at a time, so two senders cannot both be taken.
    adopting: tokio::sync::Mutex<()>,
    /// Nodes that refused this node's Raft messages as another formation's.
    refused_by: Mutex<BTreeSet<String>>,
    log: crate::ratelog::RateLimited,
}

impl Formation {
    /// The id kept in `grid`'s store, if any.
    pub async fn open(grid: Arc<Grid>) -> anyhow::Result<Arc<Formation>> {
        let kept = grid
            .blocking(|s| s.get(Table::Meta, FORMATION_KEY))
            .await
            .map_err(|e| anyhow::anyhow!("reading this node's formation id: {e}"))?;
        let id = kept.map(|b| String::from_utf8_lossy(&b).into_owned());
        Ok(Arc::new(Formation {
            grid,
            id: RwLock::new(id),
            adopting: Default::default(),
            refused_by: Default::default(),
            log: crate::ratelog::RateLimited::new(Duration::from_secs(30)),
        }))
    }

    pub fn id(&self) -> Option<String> {
        self.id.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// This node's id, made now (random) if it has none: for the node that bootstraps a
    /// cluster.
    pub async fn ensure(&self) -> Result<String, FenceError> {
        let _one = self.adopting.lock().await;
        if let Some(id) = self.id() {
            return Ok(id);
        }
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).map_err(|e| FenceError::Store(String::new(), e.to_string()))?;
        let id = format!("f-{}", hex::encode(b));
        self.keep(&id).await?;
        tracing::info!(formation = %id, "this node's cluster formation has its id");
        Ok(id)
    }

    /// Whether a Raft message of `theirs` from `sender` may be taken: yes when either side
    /// has no id (a node without one takes the sender's first), or both have the same.
    pub async fn admit(&self, sender: &str, theirs: Option<&str>) -> Result<(), FenceError> {
        let Some(theirs) = theirs else { return Ok(()) };
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
                self.keep(theirs).await?;
                tracing::info!(formation = theirs, from = sender, "this node joined a cluster formation");
                Ok(())
            }
        }
    }

    /// `node` refused a Raft message of this node's as another formation's.
    pub fn note_refused(&self, node: &str) {
        let new = self.refused_by.lock().unwrap_or_else(|e| e.into_inner()).insert(node.to_string());
        if new {
            tracing::warn!(
                node,
                "{node} refuses this node's Raft messages: it follows another formation of the cluster"
            );
        }
    }

    /// Nodes that refused this node's Raft messages as another formation's, taken (a node
    /// that refuses again is noted again).
    pub fn take_refused(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.refused_by.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn refuse(&self, sender: &str, theirs: &str, mine: String) -> FenceError {
        let e = FenceError::Other { sender: sender.to_string(), theirs: theirs.to_string(), mine };
        if let Some(dropped) = self.log.allow("fence") {
            tracing::error!(dropped, "refused Raft messages: {e}");
        }
        e
    }

    /// Write `id` to the store (synced), then hold it.
    async fn keep(&self, id: &str) -> Result<(), FenceError> {
        let put = vec![BatchOp::Put(Table::Meta, FORMATION_KEY.to_vec(), id.as_bytes().to_vec())];
        self.grid
            .blocking(move |s| s.write(put, Durability::Synced))
            .await
            .map_err(|e| FenceError::Store(id.to_string(), e.to_string()))?;
        *self.id.write().unwrap_or_else(|e| e.into_inner()) = Some(id.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Arc<Grid> {
        Arc::new(Grid::new(Arc::new(crate::grid::MemoryStorage::default())))
    }

    #[tokio::test]
    async fn a_node_takes_the_first_formation_and_refuses_any_other() {
        let g = grid();
        let f = Formation::open(g.clone()).await.unwrap();
        assert_eq!(f.id(), None);
        f.admit("n2", None).await.expect("no id on either side: taken as before");
        assert_eq!(f.id(), None, "a message without an id gives none");
        f.admit("n2", Some("f-a")).await.unwrap();
        assert_eq!(f.id().as_deref(), Some("f-a"));
        f.admit("n2", Some("f-a")).await.unwrap();
        f.admit("n4", None).await.expect("a sender without an id is taken");
        let e = f.admit("n3", Some("f-b")).await.unwrap_err();
        assert_eq!(e, FenceError::Other { sender: "n3".into(), theirs: "f-b".into(), mine: "f-a".into() });
        assert!(e.to_string().contains("n3 belongs to another formation of this cluster (f-b; this node f-a)"));
        // Kept across a restart (the store is opened again).
        let again = Formation::open(g).await.unwrap();
        assert_eq!(again.id().as_deref(), Some("f-a"));
        assert_eq!(again.ensure().await.unwrap(), "f-a", "ensure keeps an id it has");
    }

    #[tokio::test]
    async fn refusals_are_noted_until_taken() {
        let f = Formation::open(grid()).await.unwrap();
        f.note_refused("n3");
        f.note_refused("n3");
        f.note_refused("n4");
        assert_eq!(f.take_refused(), BTreeSet::from(["n3".to_string(), "n4".to_string()]));
        assert!(f.take_refused().is_empty());
    }

    #[tokio::test]
    async fn ensure_makes_one_id_and_keeps_it() {
        let g = grid();
        let f = Formation::open(g.clone()).await.unwrap();
        let id = f.ensure().await.unwrap();
        assert!(id.starts_with("f-") && id.len() == 18, "{id}");
        assert_eq!(f.ensure().await.unwrap(), id);
        assert_eq!(Formation::open(g).await.unwrap().id(), Some(id.clone()));
        let other = Formation::open(grid()).await.unwrap().ensure().await.unwrap();
        assert_ne!(other, id, "two formations, two ids");
    }
}
