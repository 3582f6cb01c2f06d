//! The primary's replicator, one task per other replica: it streams the partition log
//! (or a snapshot when the log no longer reaches back far enough) and reports who is in
//! sync.

use super::*;

impl Replicas {
    /// An append or snapshot chunk to a replica (both answer an [`AppendReply`]) from this
    /// primary of partition `p` in `epoch`. A reply that took it gives a read lease,
    /// counted from before the request was sent.
    pub(super) async fn send<R: GridRpc<Reply = AppendReply>>(
        &self,
        (p, epoch): (u32, u64),
        node: &str,
        req: R,
    ) -> Result<AppendReply, String> {
        let net = self.net.get().ok_or("not connected")?;
        let sent = Instant::now();
        match tokio::time::timeout(RPC_TIMEOUT, rpc(net.as_ref(), node, req)).await {
            Ok(Ok(r)) => {
                if matches!(r, AppendReply::Ok { lease: true, .. }) {
                    let until = sent + LEASE.saturating_sub(LEASE_MARGIN);
                    self.parts[p as usize].progress.send_if_modified(|pr| {
                        let fresh = pr.epoch == epoch && pr.primary;
                        if fresh {
                            pr.leases.insert(node.to_string(), until);
                        }
                        // Nobody waits on a lease: no wake-up for it.
                        false
                    });
                }
                Ok(r)
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {RPC_TIMEOUT:?}")),
        }
    }

    /// Keep `target` in step with this primary's log of partition `p` while this node is
    /// its primary in `epoch`. About 95 lines: one loop whose five pieces of state (acked,
    /// backoff, proposed, caught_up, probe_at) every branch reads; the calls and what
    /// follows their replies are the methods below (splitting the loop would pass all five
    /// back and forth).
    pub(super) async fn replicate(self: Arc<Self>, p: u32, epoch: u64, target: String) {
        let part = &self.parts[p as usize];
        let mut rx = part.progress.subscribe();
        // What `target` is known to hold: (lsn, epoch of that entry).
        let mut acked: Option<(u64, u64)> = None;
        let mut backoff = Duration::from_millis(20);
        let mut proposed = Instant::now() - Duration::from_secs(10);
        // When `target` last held everything this primary had at the time (Kafka's
        // "last caught up"): under steady load a healthy replica keeps renewing it.
        let mut caught_up = Instant::now();
        // When a caught-up replica is asked again: a deadline, not a sleep restarted at
        // every change of the progress (other replicas' answers change it), so an idle
        // partition's probes, which renew its read leases, keep their pace.
        let mut probe_at = Instant::now() + PROBE_EVERY;
        loop {
            let pr = rx.borrow_and_update().clone();
            if pr.epoch != epoch || !pr.primary {
                return;
            }
            if acked.is_some_and(|(l, _)| l >= pr.last) {
                caught_up = Instant::now();
            } else if caught_up.elapsed() > LAG_LIMIT
                && pr.isr.contains(&target)
                && proposed.elapsed() > Duration::from_secs(1)
            {
                proposed = Instant::now();
                tracing::info!(partition = p, replica = %target, "replica is lagging; asking to drop it from the in-sync set");
                self.propose_isr(p, epoch, &target, false);
            }
            let reply = match acked {
                Some((l, le)) if l >= pr.last => {
                    // Caught up as far as is known. A replica outside the in-sync set is
                    // asked right away (and proposed below once it answers); one inside
                    // it now and then, or when there is more to send.
                    let joining = !pr.isr.contains(&target) && proposed.elapsed() > Duration::from_secs(1);
                    if !joining {
                        tokio::select! {
                            r = rx.changed() => {
                                if r.is_err() { return }
                                continue;
                            }
                            _ = tokio::time::sleep_until(probe_at.into()) => {}
                        }
                    }
                    // Ask whether it still holds what it acknowledged. A replica whose
                    // store was rebuilt (or that lost unsynced writes with the machine)
                    // answers a mismatch and is caught up again: what it acknowledged in
                    // an earlier life never makes it in sync.
                    let req = AppendReq { p, epoch, prev: (l, le), entries: vec![] };
                    self.send((p, epoch), &target, req).await.map(|r| (r, Some((l, le))))
                }
                None => {
                    let (last, last_epoch) = {
                        let st = part.state.lock().await;
                        (st.meta.last, st.meta.last_epoch)
                    };
                    let req = AppendReq { p, epoch, prev: (last, last_epoch), entries: vec![] };
                    self.send((p, epoch), &target, req).await.map(|r| (r, Some((last, last_epoch))))
                }
                Some(held) => match self.send_after(p, epoch, &target, held).await {
                    Some(reply) => reply,
                    None => continue,
                },
            };
            probe_at = Instant::now() + PROBE_EVERY;
            match reply {
                Ok((AppendReply::Ok { last, .. }, Some(end))) if last == end.0 => {
                    if last >= pr.last {
                        caught_up = Instant::now();
                        // It answered that it holds everything: only now may it join the
                        // in-sync set (never on an acknowledgement from before).
                        if !pr.isr.contains(&target) && proposed.elapsed() > Duration::from_secs(1) {
                            proposed = Instant::now();
                            self.propose_isr(p, epoch, &target, true);
                        }
                    }
                    acked = Some(end);
                    backoff = Duration::from_millis(20);
                    self.record_match(p, epoch, &target, last);
                }
                Ok((AppendReply::Ok { .. }, _)) => acked = None,
                Ok((AppendReply::Mismatch { last, last_epoch }, _)) => {
                    match self.after_mismatch(p, epoch, &target, (last, last_epoch), &mut backoff).await {
                        Ok(Some(held)) => acked = Some(held),
                        Ok(None) => {}
                        Err(fence) => return self.fenced(p, fence).await,
                    }
                }
                Ok((AppendReply::Fenced { fence }, _)) => return self.fenced(p, fence).await,
                Err(e) => {
                    tracing::trace!(partition = p, target, error = %e, "replication call failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// `target` holds the partition's log up to `last` (in this primary's epoch).
    fn record_match(&self, p: u32, epoch: u64, target: &str, last: u64) {
        // Waiting writers and the other replicators wake only when it moved.
        self.parts[p as usize]
            .progress
            .send_if_modified(|pr| pr.epoch == epoch && pr.matched.insert(target.to_string(), last) != Some(last));
    }

    /// Ask the leader to add `target` to the in-sync set (or drop it from it).
    fn propose_isr(&self, p: u32, epoch: u64, target: &str, in_sync: bool) {
        if let Some(net) = self.net.get() {
            if in_sync {
                net.in_sync(p, epoch, target.to_string());
            } else {
                net.out_of_sync(p, epoch, target.to_string());
            }
        }
    }

    /// Send `target` the entries after `held` (what it is known to hold), or a snapshot
    /// when the log no longer reaches back that far. None when the log could not be read
    /// (after a pause: the caller tries again).
    async fn send_after(
        &self,
        p: u32,
        epoch: u64,
        target: &str,
        (l, le): (u64, u64),
    ) -> Option<Result<(AppendReply, Option<(u64, u64)>), String>> {
        let read = match self.tail_from(p, l + 1) {
            Some(e) => Ok(e),
            None => self.blocking(move |s| plog::read_entries(s, p, l + 1, BATCH)).await,
        };
        let entries = match read {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "cannot read the partition log");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return None;
            }
        };
        if entries.is_empty() {
            // The log no longer reaches back that far.
            return Some(self.send_snapshot(p, epoch, target).await);
        }
        let end = entries.last().map(|e| (e.lsn, e.epoch));
        let req = AppendReq { p, epoch, prev: (l, le), entries };
        Some(self.send((p, epoch), target, req).await.map(|r| (r, end)))
    }

    /// `target` answered that it holds `(last, last_epoch)`, not what was sent after: what
    /// it holds now if this primary's log has that entry, else a snapshot. Ok(Some) is
    /// what it is known to hold from now on, Ok(None) that nothing is known yet (the
    /// snapshot was not taken; `backoff` grows), Err a fence this primary met.
    async fn after_mismatch(
        &self,
        p: u32,
        epoch: u64,
        target: &str,
        (last, last_epoch): (u64, u64),
        backoff: &mut Duration,
    ) -> Result<Option<(u64, u64)>, u64> {
        let part = &self.parts[p as usize];
        // What it holds now, not what it once acknowledged, counts.
        part.progress.send_modify(|pr| {
            if pr.epoch == epoch && pr.matched.get(target).is_some_and(|&m| m > last) {
                pr.matched.insert(target.to_string(), last);
            }
        });
        let mine = self.blocking(move |s| plog::entry_epoch(s, p, last)).await.ok().flatten();
        let my_last = part.progress.borrow().last;
        if last <= my_last && mine == Some(last_epoch) {
            return Ok(Some((last, last_epoch)));
        }
        match self.send_snapshot(p, epoch, target).await {
            Ok((AppendReply::Ok { last, .. }, Some(end))) if last == end.0 => {
                self.record_match(p, epoch, target, last);
                Ok(Some(end))
            }
            Ok((AppendReply::Fenced { fence }, _)) => Err(fence),
            other => {
                tracing::debug!(partition = p, target, ?other, "snapshot not taken");
                tokio::time::sleep(*backoff).await;
                *backoff = (*backoff * 2).min(Duration::from_secs(1));
                Ok(None)
            }
        }
    }

    /// Up to [`BATCH`] entries from `from` out of the in-memory tail, if it reaches back
    /// that far.
    pub(super) fn tail_from(&self, p: u32, from: u64) -> Option<Vec<Entry>> {
        let tail = self.parts[p as usize].tail.lock().unwrap_or_else(|e| e.into_inner());
        let first = tail.front()?.lsn;
        if from < first || from > tail.back()?.lsn {
            return None;
        }
        Some(tail.iter().skip((from - first) as usize).take(BATCH).cloned().collect())
    }

    /// Send the partition's data as it is now; returns the reply and the position sent.
    pub(super) async fn send_snapshot(
        &self,
        p: u32,
        epoch: u64,
        target: &str,
    ) -> Result<(AppendReply, Option<(u64, u64)>), String> {
        let (rows, at) = {
            let st = self.parts[p as usize].state.lock().await;
            let rows = self.blocking(move |s| plog::data_rows(s, p)).await.map_err(|e| e.to_string())?;
            (rows, (st.meta.last, st.meta.last_epoch))
        };
        let mut chunks: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new()];
        let mut size = 0;
        for row in rows {
            size += row.0.len() + row.1.len() + 8;
            if size > CHUNK_BYTES && !chunks.last().is_some_and(|c| c.is_empty()) {
                chunks.push(Vec::new());
                size = row.0.len() + row.1.len() + 8;
            }
            chunks.last_mut().expect("one chunk").push(row);
        }
        let n = chunks.len();
        let mut reply = AppendReply::Mismatch { last: 0, last_epoch: 0 };
        for (i, rows) in chunks.into_iter().enumerate() {
            let req = SnapshotReq { p, epoch, first: i == 0, rows, done: (i + 1 == n).then_some(at) };
            reply = self.send((p, epoch), target, req).await?;
            if !matches!(reply, AppendReply::Ok { .. }) {
                return Ok((reply, None));
            }
        }
        tracing::info!(partition = p, target, lsn = at.0, "sent a partition snapshot");
        Ok((reply, Some(at)))
    }

    /// A replica has promised a newer primary: stop acting as this one.
    pub(super) async fn fenced(&self, p: u32, fence: u64) {
        let Ok(mut st) = self.lock(p).await else { return };
        if fence > st.meta.fence {
            st.meta.fence = fence;
        }
        if matches!(st.role, Role::Primary(e) if e < fence) {
            tracing::info!(partition = p, fence, "a newer primary exists; this node steps down");
            // This task returns right after; the other replicators see `primary` turn
            // false at their next step (a new term as primary aborts any still running).
            st.role = Role::Backup;
            let me = self.me.clone();
            self.parts[p as usize].progress.send_modify(|pr| {
                pr.primary = false;
                pr.matched.retain(|n, _| *n == me);
                pr.leases.clear();
            });
        }
    }
}
