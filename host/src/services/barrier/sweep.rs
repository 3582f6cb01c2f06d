//! Every node's sweep of the barriers: take over one whose driver's lease ran out (or
//! that an earlier run of this node drove), forget ended ones after a while, and the
//! admin API's views of them.

use super::*;

impl Registry {
    /// Every node: run the barrier engine's sweep until `stop`, then stop its drives.
    pub async fn sweep_barriers(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let engine = self.barrier_engine.clone();
        drop(self);
        engine.run(stop).await;
    }

    /// Barriers still running (`GET /v1/barriers`), up to `limit`.
    pub async fn pending_barriers(&self, limit: usize) -> Result<Vec<String>, KvError> {
        self.barrier_engine.pending(limit).await
    }

    /// One barrier (`GET /v1/barriers/{id}`), `None` if there is none.
    pub async fn barrier_report(&self, id: &str) -> Result<Option<super::report::BarrierReport>, KvError> {
        self.barrier_engine.report(id).await
    }
}

impl BarrierEngine {
    /// Take over barriers nobody drives, and forget ended ones after a while, until
    /// `stop` turns true; then stop every drive of this engine (see [`Self::shutdown`]).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut rounds = 0u64;
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
            }
            // Between rounds the engine holds the registry only weakly.
            let Some(registry) = self.registry.upgrade() else { break };
            if registry.dormant() {
                continue;
            }
            if let Err(e) = self.take_over_stalled(registry).await {
                tracing::debug!(error = %e, "barrier sweep did not finish; next round");
            }
            rounds += 1;
            if rounds % 60 == 1
                && let Err(e) = self.forget_ended().await
            {
                tracing::debug!(error = %e, "could not drop ended barriers; later");
            }
        }
        self.shutdown().await;
    }

    pub(super) async fn take_over_stalled(self: &Arc<Self>, registry: Arc<Registry>) -> Result<(), KvError> {
        let me = self.table.me();
        let my_node = me.split('/').next().unwrap_or_default().to_string();
        let mut after = None;
        loop {
            let keys = self.grid.kv_list_keys(NAMESPACE, "pending/", after.as_deref(), 500).await?;
            let Some(last) = keys.last().cloned() else { return Ok(()) };
            for key in &keys {
                let id = &key["pending/".len()..];
                if self.table.active.lock().unwrap_or_else(|e| e.into_inner()).contains(id) {
                    continue;
                }
                let Some(bytes) = self.grid.kv_get(NAMESPACE, &record_key(id), Consistency::Quorum).await? else {
                    // The record is written beside its index entry: give it time to land.
                    if self.unrecorded_expired(key).await? {
                        self.grid.kv_delete(NAMESPACE, key, Consistency::Quorum).await?;
                    }
                    continue;
                };
                let Some(mut record) = decode(&bytes) else {
                    tracing::error!(barrier = %id, "unreadable barrier record; dropping it from the pending index");
                    self.grid.kv_delete(NAMESPACE, key, Consistency::Quorum).await?;
                    continue;
                };
                if let Some(at) = record.ended() {
                    // Its driver ended it but did not get to tidy the index.
                    let done = format!("done/{id}");
                    self.grid.kv_set(NAMESPACE, &done, at.to_string().into_bytes(), Consistency::Quorum).await?;
                    self.grid.kv_delete(NAMESPACE, key, Consistency::Quorum).await?;
                    continue;
                }
                let restarted = record.owner.split('/').next() == Some(my_node.as_str()) && record.owner != me;
                if record.lease_until_ms > now_ms() && !restarted {
                    continue;
                }
                if !self.table.claim(id) {
                    continue;
                }
                let previous = std::mem::take(&mut record.owner);
                record.takeovers += 1;
                let mut stored = bytes;
                match self.save(&mut record, &mut stored).await {
                    Ok(()) => {
                        self.table.taken_over.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(barrier = %id, from = %previous, service = %record.service, "took over a barrier");
                        self.spawn_drive(registry.clone(), record, stored);
                    }
                    Err(_) => self.table.release(id),
                }
            }
            after = Some(last);
        }
    }

    pub(super) async fn forget_ended(&self) -> Result<(), KvError> {
        let cutoff = now_ms().saturating_sub(KEEP_ENDED.as_millis() as u64);
        let mut after = None;
        loop {
            let keys = self.grid.kv_list_keys(NAMESPACE, "done/", after.as_deref(), 500).await?;
            let Some(last) = keys.last().cloned() else { return Ok(()) };
            for key in &keys {
                let at = self.grid.kv_get(NAMESPACE, key, Consistency::One).await?;
                let at: u64 = at.and_then(|b| String::from_utf8(b).ok()?.parse().ok()).unwrap_or(0);
                if at >= cutoff {
                    continue;
                }
                // The entry is written beside the record's end, so it may be older than the
                // end that counts: a driver that lost the barrier at that write left it for a
                // barrier still running (or ended later by the node that took it over).
                // The record's own end decides; the entry stays while the record runs (its
                // end writes the entry again, which a delete here could undo).
                let id = &key["done/".len()..];
                let record = self.grid.kv_get(NAMESPACE, &record_key(id), Consistency::Quorum).await?;
                match record.as_deref().and_then(decode).map(|r| r.ended()) {
                    Some(None) => {}
                    Some(Some(ended)) if ended >= cutoff => {
                        let when = ended.to_string().into_bytes();
                        self.grid.kv_set(NAMESPACE, key, when, Consistency::Quorum).await?;
                    }
                    _ => {
                        self.grid.kv_delete(NAMESPACE, &record_key(id), Consistency::Quorum).await?;
                        self.grid.kv_delete(NAMESPACE, key, Consistency::Quorum).await?;
                    }
                }
            }
            after = Some(last);
        }
    }

    /// Whether the `pending` index entry `key`, whose record is not there, is older than
    /// [`UNRECORDED_GRACE`] (its value is when the barrier was created; an entry without
    /// one is old).
    async fn unrecorded_expired(&self, key: &str) -> Result<bool, KvError> {
        let value = self.grid.kv_get(NAMESPACE, key, Consistency::Quorum).await?;
        let created: Option<u64> = value.and_then(|b| String::from_utf8(b).ok()?.parse().ok());
        Ok(created.is_none_or(|at| at.saturating_add(UNRECORDED_GRACE.as_millis() as u64) <= now_ms()))
    }

    /// Barriers still running, up to `limit`.
    pub async fn pending(&self, limit: usize) -> Result<Vec<String>, KvError> {
        let keys = self.grid.kv_list_keys(NAMESPACE, "pending/", None, limit).await?;
        Ok(keys.into_iter().map(|k| k["pending/".len()..].to_string()).collect())
    }

    /// One barrier (`GET /v1/barriers/{id}`), `None` if there is none.
    pub async fn report(&self, id: &str) -> Result<Option<super::report::BarrierReport>, KvError> {
        if id.is_empty() || id.len() > 64 {
            return Ok(None);
        }
        let bytes = self.grid.kv_get(NAMESPACE, &record_key(id), Consistency::Quorum).await?;
        Ok(bytes.as_deref().and_then(decode).map(|r| super::report::report(&r)))
    }
}
