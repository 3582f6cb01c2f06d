//! The replica side of replication: appends and snapshot chunks from a primary, fences,
//! epoch confirmations and listings, each admitted only from a primary at least as new as
//! this replica promised.

use super::*;

impl Replicas {
    /// Lock partition `p` for a primary of `epoch`, or the reply refusing it: a replica
    /// takes entries only from a primary at least as new as it promised, and a node that
    /// was primary of an older epoch steps down.
    pub(super) async fn admit(&self, p: u32, epoch: u64) -> Result<tokio::sync::MutexGuard<'_, State>, AppendReply> {
        if p >= self.count() {
            return Err(AppendReply::Fenced { fence: u64::MAX });
        }
        let Ok(mut st) = self.lock(p).await else {
            return Err(AppendReply::Mismatch { last: 0, last_epoch: 0 });
        };
        if epoch < st.meta.fence {
            return Err(AppendReply::Fenced { fence: st.meta.fence });
        }
        if matches!(st.role, Role::Primary(e) if e < epoch) {
            self.demote(p, &mut st, Role::Backup);
        }
        if self.gives_lease(&st, epoch) {
            st.lease = Some((epoch, Instant::now() + LEASE));
        }
        Ok(st)
    }

    /// Whether an append from a primary of `epoch` comes with a read lease: not while a
    /// fence for a newer one waits, and not from a store rebuilt empty (it may have
    /// promised a newer epoch in its earlier life, which its fence no longer shows).
    fn gives_lease(&self, st: &State, epoch: u64) -> bool {
        epoch >= st.fencing && !self.is_rebuilt()
    }

    /// How long a fence for `epoch` must wait: until the lease this replica gave an older
    /// primary ran out, and until [`LEASE`] after this process started, since leases an
    /// earlier life of it gave are not known (also when its store was rebuilt empty).
    /// A lease given to a primary of `primary_fenced` or older is not waited for: the
    /// leader fenced that primary first, and a primary older than it was deposed by a
    /// fenced majority that left it too few leases to answer with.
    fn lease_wait(&self, st: &State, req: &FenceReq) -> Duration {
        if req.epoch <= st.meta.fence {
            return Duration::ZERO;
        }
        let mut until = self.started + LEASE;
        let counts = |e: u64| e < req.epoch && req.primary_fenced.is_none_or(|f| e > f);
        if let Some((_, t)) = st.lease.filter(|(e, _)| counts(*e)) {
            until = until.max(t);
        }
        until.saturating_duration_since(Instant::now())
    }

    pub async fn on_append(self: &Arc<Self>, req: AppendReq) -> AppendReply {
        let p = req.p;
        let mut st = match self.admit(p, req.epoch).await {
            Ok(st) => st,
            Err(refusal) => return refusal,
        };
        if (st.meta.last, st.meta.last_epoch) != req.prev {
            return AppendReply::Mismatch { last: st.meta.last, last_epoch: st.meta.last_epoch };
        }
        let consecutive = req.entries.iter().enumerate().all(|(i, e)| e.lsn == req.prev.0 + 1 + i as u64);
        if !consecutive {
            return AppendReply::Mismatch { last: st.meta.last, last_epoch: st.meta.last_epoch };
        }
        let mut meta = st.meta;
        meta.fence = meta.fence.max(req.epoch);
        if let Some(e) = req.entries.last() {
            meta.last = e.lsn;
            meta.last_epoch = e.epoch;
        }
        if meta != st.meta {
            let batch = plog::append_ops(p, &req.entries, &meta, self.keep);
            // At once when the store can take it without waiting (`--sync never`, and
            // `batch`, which then awaits its group sync without holding a thread): the
            // pool's two thread switches were most of a quorum write's cost above its
            // round trip (docs/BENCHMARKS.md, the grid section). Either way only after an
            // append whose caller went away has landed (an older batch must not land
            // after this one and put older values and an older log end back). The
            // position in memory moves only once the entries are on the disk: a caller
            // that goes away during the sync leaves it where it was (the primary sends
            // the entries again; writing them twice is harmless).
            Self::settle(&mut st).await;
            let written = match self.storage.write_now(&batch) {
                Some(Ok(mut wait)) => wait.wait().await.map_err(KvError::from),
                Some(Err(e)) => Err(KvError::from(e)),
                None => self.pooled(&mut st, move |s| s.write(batch, Durability::Acked)).await,
            };
            if let Err(e) = written {
                tracing::warn!(partition = p, error = %e, "could not apply replicated entries");
                return AppendReply::Mismatch { last: st.meta.last, last_epoch: st.meta.last_epoch };
            }
            st.meta = meta;
            tracing::debug!(partition = p, epoch = req.epoch, prev = ?req.prev, last = meta.last, "appended");
        }
        // As `admit` decided, under the same lock.
        AppendReply::Ok { last: st.meta.last, lease: self.gives_lease(&st, req.epoch) }
    }

    pub async fn on_snapshot(self: &Arc<Self>, req: SnapshotReq) -> AppendReply {
        let p = req.p;
        let mut st = match self.admit(p, req.epoch).await {
            Ok(st) => st,
            Err(refusal) => return refusal,
        };
        let mut meta = st.meta;
        meta.fence = meta.fence.max(req.epoch);
        if req.first {
            // Until the last chunk lands this copy is empty, also after a crash.
            meta.last = 0;
            meta.last_epoch = 0;
        }
        if let Some((last, last_epoch)) = req.done {
            meta.last = last;
            meta.last_epoch = last_epoch;
        }
        let first = req.first;
        let rows = req.rows;
        let write = self
            .pooled(&mut st, move |s| {
                let mut ops = if first { plog::clear_ops(s, p)? } else { Vec::new() };
                ops.extend(
                    rows.into_iter().map(|(k, v)| crate::grid::BatchOp::Put(Table::Kv, plog::data_key(p, &k), v)),
                );
                ops.push(plog::meta_op(p, &meta));
                s.write(ops, Durability::Acked)
            })
            .await;
        if let Err(e) = write {
            tracing::warn!(partition = p, error = %e, "could not install a snapshot chunk");
            return AppendReply::Mismatch { last: st.meta.last, last_epoch: st.meta.last_epoch };
        }
        st.meta = meta;
        if req.done.is_some() {
            tracing::info!(partition = p, lsn = meta.last, "installed a partition snapshot");
        }
        AppendReply::Ok { last: meta.last, lease: self.gives_lease(&st, req.epoch) }
    }

    pub async fn on_fence(self: &Arc<Self>, req: FenceReq) -> FenceReply {
        let p = req.p;
        let refused = FenceReply { last: 0, last_epoch: 0, fence: u64::MAX };
        // A partition this grid does not have is refused, never another one fenced.
        if p >= self.count() {
            return refused;
        }
        // A read lease given to an older primary is waited out first (the lock is not held
        // meanwhile: that primary's appends still land, and the answer reports them).
        let mut st = loop {
            let Ok(mut st) = self.lock(p).await else { return refused };
            let wait = self.lease_wait(&st, &req);
            if wait.is_zero() {
                break st;
            }
            st.fencing = st.fencing.max(req.epoch);
            drop(st);
            tracing::debug!(partition = p, epoch = req.epoch, ?wait, "a fence waits for a read lease to run out");
            tokio::time::sleep(wait).await;
        };
        if req.epoch > st.meta.fence {
            let mut meta = st.meta;
            meta.fence = req.epoch;
            let op = plog::meta_op(p, &meta);
            if self.blocking(move |s| s.write(vec![op], Durability::Synced)).await.is_err() {
                return refused;
            }
            st.meta = meta;
            if matches!(st.role, Role::Primary(e) if e < req.epoch) {
                self.demote(p, &mut st, Role::Backup);
            }
        }
        tracing::debug!(
            partition = p,
            epoch = req.epoch,
            last = st.meta.last,
            last_epoch = st.meta.last_epoch,
            fence = st.meta.fence,
            "fence"
        );
        FenceReply { last: st.meta.last, last_epoch: st.meta.last_epoch, fence: st.meta.fence }
    }

    pub async fn on_confirm(&self, p: u32, epoch: u64) -> bool {
        if p >= self.count() {
            return false;
        }
        match self.lock(p).await {
            Ok(st) => st.meta.fence <= epoch,
            Err(_) => false,
        }
    }

    pub async fn on_list(&self, req: ListReq) -> Result<Vec<Vec<u8>>, OpFail> {
        let ListReq { parts, prefix, after, limit } = req;
        let count = self.count();
        self.blocking(move |s| {
            let mut out = Vec::new();
            for p in parts.into_iter().filter(|&p| p < count) {
                out.extend(plog::list(s, p, &prefix, after.as_deref(), limit as usize)?);
            }
            Ok(out)
        })
        .await
        .map_err(|e| OpFail::Unavailable(e.to_string()))
    }

    /// Serve one grid request on this node (what arrives on `POST /grid`).
    pub async fn serve(self: &Arc<Self>, req: GridRequest) -> GridReply {
        match req {
            GridRequest::Append(a) => GridReply::Append(self.on_append(a).await),
            GridRequest::Snapshot(s) => GridReply::Append(self.on_snapshot(s).await),
            GridRequest::Fence(f) => GridReply::Fence(self.on_fence(f).await),
            GridRequest::Confirm(c) => GridReply::Confirm(self.on_confirm(c.p, c.epoch).await),
            GridRequest::Op(o) => GridReply::Op(self.execute(o.p, o.op, o.consistency).await),
            GridRequest::List(l) => GridReply::List(self.on_list(l).await),
            GridRequest::Status(_) => GridReply::Status(self.status().await),
        }
    }

    pub async fn status(&self) -> Vec<PartStatus> {
        let mut out = Vec::with_capacity(self.parts.len());
        for part in &self.parts {
            let Ok(st) = self.lock(part.id).await else { continue };
            let role = match st.role {
                Role::None if st.meta.last == 0 => continue,
                Role::None => "none",
                Role::Backup => "backup",
                Role::Primary(_) => "primary",
            };
            let pr = part.progress.borrow().clone();
            let matched = if st.role == Role::Primary(pr.epoch) { pr.matched.into_iter().collect() } else { vec![] };
            out.push(PartStatus { p: part.id, role: role.into(), epoch: st.meta.fence, last: st.meta.last, matched });
        }
        out
    }
}
