//! Roles from the partition table: becoming a partition's primary (its replicators),
//! following as a backup, stepping down, and what a failed write does to the role.

use super::*;

impl Replicas {
    /// Take up the roles the control plane's table gives this node.
    pub async fn apply_table(self: &Arc<Self>, table: PartitionTable) {
        if table.parts.len() != self.parts.len() {
            if !table.parts.is_empty() {
                tracing::error!(
                    cluster = table.parts.len(),
                    here = self.parts.len(),
                    "the cluster's grid has {} partitions but this node was started with --partitions {}: it takes no \
                     part in the grid; restart it with --partitions {} (and a new --data-dir if it already holds data)",
                    table.parts.len(),
                    self.parts.len(),
                    table.parts.len()
                );
            }
            return;
        }
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table.clone());
        for (p, info) in table.parts.into_iter().enumerate() {
            let p = p as u32;
            let Ok(mut st) = self.lock(p).await else { continue };
            if st.info == info && st.role != Role::None {
                continue;
            }
            st.info = info.clone();
            if info.primary == self.me {
                if st.role == Role::Primary(info.epoch) {
                    self.follow_replicas(p, &mut st);
                } else if st.meta.fence > info.epoch {
                    tracing::debug!(
                        partition = p,
                        epoch = info.epoch,
                        fence = st.meta.fence,
                        "a newer primary is being chosen"
                    );
                    self.demote(p, &mut st, Role::Backup);
                } else if let Some(why) = self.must_not_lead(&st, info.epoch) {
                    tracing::info!(partition = p, epoch = info.epoch, "{why}; asking for a new primary");
                    self.step_aside(p, &mut st, info.epoch);
                } else {
                    self.become_primary(p, &mut st, info.epoch).await;
                }
            } else if info.replicas.contains(&self.me) {
                self.demote(p, &mut st, Role::Backup);
            } else {
                self.demote(p, &mut st, Role::None);
            }
        }
    }

    /// Why this node must not lead `epoch` although the table names it, if it must not:
    /// its replicas may hold entries at positions its own log lacks or reuses.
    fn must_not_lead(&self, st: &State, epoch: u64) -> Option<&'static str> {
        if st.abandoned == Some(epoch) {
            // It stepped down from this epoch after a failed log write: taking it up again
            // (say when the row's in-sync set changes) would reuse positions its replicas
            // may hold other entries at.
            Some("stepped down from this epoch after a failed log write")
        } else if self.is_rebuilt() && st.meta.fence < epoch {
            // The table named this node before its store was lost: the data of this epoch
            // is on the other replicas, one of which must lead.
            Some("store rebuilt")
        } else if st.meta.last_epoch == epoch && st.led != Some(epoch) {
            // This node led this epoch before it restarted. Replicas may hold an entry it
            // sent but never wrote itself, so it must not append at this epoch again: a
            // new epoch (and the most up-to-date replica) it is.
            Some("led this epoch before a restart")
        } else {
            None
        }
    }

    /// Stop acting as primary of `p` and ask the control plane for a new one (this node
    /// may lack entries of `epoch` that its replicas have).
    fn step_aside(&self, p: u32, st: &mut State, epoch: u64) {
        self.demote(p, st, Role::Backup);
        if let Some(net) = self.net.get() {
            net.relinquish(p, epoch);
        }
    }

    pub(super) async fn become_primary(self: &Arc<Self>, p: u32, st: &mut State, epoch: u64) {
        // Replicators of an earlier epoch may still be running (a primary that learnt it
        // was fenced only flags itself a backup; a replicator blocked in a call notices
        // when the call ends). Kept, one would stand in for its replica's replicator of
        // this epoch and then end, leaving the replica without one for good: found by the
        // fault campaign (seed 6004), a replica never caught up after its primary was
        // fenced and chosen again.
        for (_, h) in st.replicators.drain() {
            h.abort();
        }
        self.parts[p as usize].tail.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let mut meta = st.meta;
        meta.fence = epoch;
        st.meta = meta;
        st.role = Role::Primary(epoch);
        st.led = Some(epoch);
        let last = st.meta.last;
        self.parts[p as usize].progress.send_replace(Progress {
            epoch,
            primary: true,
            last,
            matched: BTreeMap::from([(self.me.clone(), last)]),
            replicas: st.info.replicas.clone(),
            isr: st.info.isr.clone(),
            leases: BTreeMap::new(),
        });
        // A no-op entry of the new epoch: earlier entries commit with it.
        if let Err(e) = self.append_local(p, st, epoch, vec![Op::Noop]).await {
            tracing::warn!(partition = p, error = %e, "could not start an epoch");
            st.role = Role::Backup;
            return;
        }
        tracing::debug!(partition = p, epoch, lsn = st.meta.last, "primary of partition");
        self.follow_replicas(p, st);
    }

    /// Start a replicator per other replica (stop those of replicas no longer listed).
    pub(super) fn follow_replicas(self: &Arc<Self>, p: u32, st: &mut State) {
        let Role::Primary(epoch) = st.role else { return };
        let wanted: Vec<String> = st.info.replicas.iter().filter(|n| **n != self.me).cloned().collect();
        st.replicators.retain(|n, h| {
            let keep = wanted.contains(n) && !h.is_finished();
            if !keep {
                h.abort();
            }
            keep
        });
        for n in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = st.replicators.entry(n) {
                let this = self.clone();
                let target = slot.key().clone();
                slot.insert(tokio::spawn(async move { this.replicate(p, epoch, target).await }));
            }
        }
        let (replicas, isr) = (st.info.replicas.clone(), st.info.isr.clone());
        self.parts[p as usize].progress.send_modify(|pr| {
            pr.replicas = replicas;
            pr.isr = isr;
        });
    }

    /// The primary's log write failed: its log ends at `on_disk`. In a cluster it steps
    /// down (replicas may hold entries it does not, and it must not reuse their lsns);
    /// alone it is the only copy, so it stays primary and takes the positions back.
    pub(super) fn write_failed(&self, p: u32, st: &mut State, on_disk: PartMeta) {
        if self.clustered {
            tracing::error!(partition = p, "stepping down as primary after a failed log write");
            match st.role {
                Role::Primary(epoch) => {
                    st.abandoned = Some(epoch);
                    self.step_aside(p, st, epoch);
                }
                _ => self.demote(p, st, Role::Backup),
            }
        } else {
            self.parts[p as usize].tail.lock().unwrap_or_else(|e| e.into_inner()).clear();
            self.parts[p as usize].progress.send_modify(|pr| pr.last = on_disk.last);
        }
        st.meta = on_disk;
    }

    pub(super) fn demote(&self, p: u32, st: &mut State, to: Role) {
        for (_, h) in st.replicators.drain() {
            h.abort();
        }
        self.parts[p as usize].tail.lock().unwrap_or_else(|e| e.into_inner()).clear();
        st.role = to;
        let me = self.me.clone();
        self.parts[p as usize].progress.send_modify(|pr| {
            pr.primary = false;
            pr.matched.retain(|n, _| *n == me);
            pr.leases.clear();
        });
    }

    /// Node shutdown: stop every replicator and wait until they have stopped. Roles stay
    /// as they are (the node serves no more writes); the next start takes them up again
    /// from the table.
    pub async fn stop_replicators(&self) {
        let mut stopping = Vec::new();
        for part in &self.parts {
            let mut st = part.state.lock().await;
            for (_, h) in st.replicators.drain() {
                h.abort();
                stopping.push(h);
            }
        }
        for h in stopping {
            let _ = h.await;
        }
    }
}
