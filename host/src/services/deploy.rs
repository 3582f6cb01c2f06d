//! The registry's admin operations: store a component, deploy (validate, plan, install),
//! scale, autoscale and delete services, and apply the cluster's desired state.

use super::*;

impl Registry {
    /// Validate, compile and store a component. Storing the same bytes twice is a no-op.
    pub async fn put_component(self: &Arc<Self>, bytes: bytes::Bytes) -> Result<Uploaded, AdminError> {
        let digest = digest_of(&bytes);
        let runtime = self.runtime.clone();
        let (d, b) = (digest.clone(), bytes.clone());
        // Compilation is CPU-heavy: keep it off the async workers.
        let info = tokio::task::spawn_blocking(move || runtime.inspect(&d, &b).map(|(_, info)| info))
            .await
            .map_err(internal)??;
        let key = digest.clone().into_bytes();
        let size = bytes.len();
        let created = self
            .grid
            .blocking(move |s| {
                if s.get(Table::Components, &key)?.is_some() {
                    return Ok(false);
                }
                s.write(vec![BatchOp::Put(Table::Components, key, bytes.to_vec())], Durability::Synced)?;
                Ok(true)
            })
            .await
            .map_err(internal)?;
        Ok(Uploaded { digest, size, created, info })
    }

    /// Whether a component is stored here: at once when a service runs it (its compiled
    /// unit is loaded), else a read of the store.
    pub async fn has_component(&self, digest: &str) -> Result<bool, AdminError> {
        if self.units.get(digest).is_some() {
            return Ok(true);
        }
        Ok(self.component_bytes(digest).await?.is_some())
    }

    pub async fn component_bytes(&self, digest: &str) -> Result<Option<Vec<u8>>, AdminError> {
        let key = digest.as_bytes().to_vec();
        self.grid.blocking(move |s| s.get(Table::Components, &key)).await.map_err(internal)
    }

    /// A stored component, compiled (through the cache) and described; shared with
    /// every service already running the same digest.
    pub(super) async fn load_unit(&self, digest: &str) -> Result<Arc<Unit>, AdminError> {
        if let Some(unit) = self.units.get(digest) {
            return Ok(unit);
        }
        let bytes = self.component_bytes(digest).await?.ok_or_else(|| {
            AdminError::BadRequest(format!(
                "component {digest} is not stored on this node; upload it first with PUT /v1/components"
            ))
        })?;
        let runtime = self.runtime.clone();
        let digest = digest.to_string();
        let unit = tokio::task::spawn_blocking(move || {
            let (component, info) = runtime.inspect(&digest, &bytes)?;
            Ok::<_, AdminError>(Arc::new(Unit { digest, component, info }))
        })
        .await
        .map_err(internal)??;
        Ok(self.units.share(unit))
    }

    /// In a cluster: reach other nodes' services through `routes` (set once).
    pub fn set_routes(&self, routes: super::route::Routes) {
        let _ = self.routes.set(routes);
    }

    /// In a cluster: whether this node is cut off from its majority (and serves nothing).
    pub fn dormant(&self) -> bool {
        self.routes.get().and_then(|r| r.peers.upgrade()).is_some_and(|p| p.dormant())
    }

    /// Whether this node is part of a cluster.
    pub(super) fn clustered(&self) -> bool {
        self.routes.get().is_some()
    }

    pub(super) async fn persist(&self, spec: &ServiceSpec) -> Result<(), AdminError> {
        let key = spec.name.clone().into_bytes();
        let value = serde_json::to_vec(spec).map_err(internal)?;
        self.grid
            .blocking(move |s| s.write(vec![BatchOp::Put(Table::Services, key, value)], Durability::Synced))
            .await
            .map_err(internal)
    }

    /// Create or replace a service.
    pub async fn put_service(self: &Arc<Self>, name: &str, req: spec::ServiceRequest) -> Result<Deploy, AdminError> {
        let _admin = self.admin.lock().await;
        let (deploy, versions) = self.plan_service(name, req).await?;
        self.persist(&deploy.spec).await?;
        self.table.install_all(versions);
        let spec = &deploy.spec;
        tracing::info!(service = name, digest = %spec.component, instances = spec.instances, "service deployed");
        Ok(deploy)
    }

    /// Check a deploy against the services this node knows, changing nothing (a clustered
    /// node then commits the spec through the control plane).
    pub async fn validate_service(
        self: &Arc<Self>,
        name: &str,
        req: spec::ServiceRequest,
    ) -> Result<Deploy, AdminError> {
        let _admin = self.admin.lock().await;
        Ok(self.plan_service(name, req).await?.0)
    }

    /// Validate a deploy and build every chain it changes. The caller holds the admin lock.
    pub(super) async fn plan_service(
        self: &Arc<Self>,
        name: &str,
        req: spec::ServiceRequest,
    ) -> Result<(Deploy, Vec<Arc<Deployed>>), AdminError> {
        let spec::Checked { instances, max_queue, limits, grants } =
            spec::check_request(name, &req).map_err(AdminError::BadRequest)?;
        if limits.fuel.is_some() && !self.runtime.meters_fuel() {
            return Err(AdminError::BadRequest(
                "limits.fuel needs fuel metering, which this node has off; start it with --fuel or drop limits.fuel"
                    .into(),
            ));
        }
        let unit = self.load_unit(&req.component).await?;
        check_memory(&unit.info, &limits)?;
        let denied = grants.denied(&unit.info.imports);
        if req.strict_imports && !denied.is_empty() {
            return Err(ungranted(&denied));
        }
        let old = self.get(name).map(|s| s.current().spec.clone());
        let previous = old.as_ref().map(|s| s.generation);
        // A redeploy of an autoscaled service keeps the count the autoscaler chose.
        let instances = match (&req.autoscale, &old) {
            (Some(a), Some(o)) if o.autoscale.is_some() => a.clamp(o.instances),
            _ => instances,
        };
        let spec = ServiceSpec {
            name: name.to_string(),
            component: req.component,
            instances,
            max_queue,
            queue_timeout_ms: req.queue_timeout_ms.unwrap_or(spec::DEFAULT_QUEUE_TIMEOUT_MS),
            limits,
            grants,
            strict_imports: req.strict_imports,
            config: req.config,
            bindings: req.bindings,
            fuse: req.fuse.unwrap_or(true),
            placement: req.placement,
            autoscale: req.autoscale,
            reuse: req.reuse,
            idempotent: req.idempotent,
            generation: previous.map_or(1, |g| g + 1),
            updated_at_ms: now_ms(),
        };
        // Resolve and build this service and every chain it is part of before anything
        // changes; a refusal leaves all as it was.
        let versions = self.rebuild(HashMap::from([(name.to_string(), Some((spec.clone(), unit)))]), false).await?;
        Ok((Deploy { spec, created: previous.is_none(), denied, not_serving: Vec::new() }, versions))
    }

    /// The spec a scale would store.
    pub fn scaled_spec(&self, name: &str, instances: u32, max_queue: Option<u32>) -> Result<ServiceSpec, AdminError> {
        let svc =
            self.get(name).ok_or_else(|| AdminError::NotFound(format!("no service named {name:?} is deployed")))?;
        let mut spec = svc.current().spec.clone();
        if let Some(a) = &spec.autoscale {
            return Err(AdminError::Autoscaled(format!(
                "service {name:?} is autoscaled ({}..={} instances); change its bounds with PUT /v1/services/{name} (\"autoscale\"), or PUT it with a fixed \"instances\" count instead",
                a.min, a.max
            )));
        }
        spec.instances = instances;
        if max_queue.is_some() {
            spec.max_queue = max_queue;
        }
        spec.generation += 1;
        spec.updated_at_ms = now_ms();
        Ok(spec)
    }

    /// The spec of a service that may be deleted (no chain needs it).
    pub fn deletable(&self, name: &str) -> Result<ServiceSpec, AdminError> {
        let svc =
            self.get(name).ok_or_else(|| AdminError::NotFound(format!("no service named {name:?} is deployed")))?;
        let users: Vec<String> = self
            .list()
            .iter()
            .filter(|s| &*s.name != name && s.current().serving.graph().is_some_and(|g| g.uses(name)))
            .map(|s| s.name.to_string())
            .collect();
        if !users.is_empty() {
            return Err(AdminError::Conflict(format!(
                "service {name:?} provides typed imports to [{}]; delete those first or bind them to another provider",
                users.join(", ")
            )));
        }
        Ok(svc.current().spec.clone())
    }

    /// The Service Manager's step in a cluster: make the table match the committed specs
    /// and this node's slots. A spec whose component cannot be loaded yet is skipped (and
    /// retried on the next call).
    pub async fn apply_desired(&self, specs: &BTreeMap<String, ServiceSpec>, slots: HashMap<String, u32>) {
        let _admin = self.admin.lock().await;
        self.table.set_slots(slots);
        let mut changes = HashMap::new();
        for (name, spec) in specs {
            if let Some(s) = self.get(name) {
                let cur = s.current();
                if &cur.spec == spec {
                    continue;
                }
                // Only the count changed (the autoscaler, a wake-up): the same chain
                // serves, so swap the spec without building anything.
                if (ServiceSpec { instances: spec.instances, ..cur.spec.clone() }) == *spec {
                    s.recount(spec.clone());
                    continue;
                }
            }
            match self.load_unit(&spec.component).await {
                Ok(unit) => {
                    changes.insert(name.clone(), Some((spec.clone(), unit)));
                }
                Err(e) => tracing::warn!(service = %name, error = %e, "cannot load service yet"),
            }
        }
        let gone: Vec<Arc<Service>> = self.list().into_iter().filter(|s| !specs.contains_key(&*s.name)).collect();
        for s in &gone {
            changes.insert(s.name.to_string(), None);
        }
        if !changes.is_empty() {
            match self.rebuild(changes, true).await {
                Ok(versions) => self.table.install_all(versions),
                Err(e) => tracing::error!(error = %e, "could not apply the committed services"),
            }
            for s in gone {
                self.table.remove(&s.name);
                tracing::info!(service = %s.name, "service removed");
            }
        }
        self.table.resize_all();
    }

    pub async fn scale(&self, name: &str, instances: u32, max_queue: Option<u32>) -> Result<ServiceSpec, AdminError> {
        let _admin = self.admin.lock().await;
        let spec = self.scaled_spec(name, instances, max_queue)?;
        let svc = self.get(name).expect("scaled_spec found it, and the admin lock is held");
        self.set_count(&svc, &spec).await?;
        tracing::info!(service = name, instances, "service scaled");
        Ok(spec)
    }

    /// Persist and apply `spec`, which differs from the service's current one only in its
    /// count (single mode; the caller holds the admin lock).
    pub(super) async fn set_count(&self, svc: &Service, spec: &ServiceSpec) -> Result<(), AdminError> {
        self.persist(spec).await?;
        let slots = self.table.slots_for(spec);
        svc.gate.resize(slots, spec.queue_for(slots));
        svc.recount(spec.clone());
        Ok(())
    }

    /// Set an autoscaled service's count on a single node (the autoscaler's decision, or a
    /// wake-up of a service at zero): persisted, then the gate resized; the chain stays.
    pub async fn autoscale_to(&self, name: &str, instances: u32) -> Result<ServiceSpec, AdminError> {
        let _admin = self.admin.lock().await;
        let svc =
            self.get(name).ok_or_else(|| AdminError::NotFound(format!("no service named {name:?} is deployed")))?;
        let old = svc.current();
        let Some(a) = old.spec.autoscale else {
            return Err(AdminError::Conflict(format!("service {name:?} is not autoscaled")));
        };
        if old.spec.instances == a.clamp(instances) {
            return Ok(old.spec.clone());
        }
        let spec = ServiceSpec { instances: a.clamp(instances), ..old.spec.clone() };
        self.set_count(&svc, &spec).await?;
        Ok(spec)
    }

    /// Remove a service. Requests in flight finish; queued ones are turned away. Its kv
    /// data is kept, so redeploying under the same name finds it again.
    pub async fn delete(&self, name: &str) -> Result<ServiceSpec, AdminError> {
        let _admin = self.admin.lock().await;
        self.deletable(name)?;
        let svc =
            self.get(name).ok_or_else(|| AdminError::NotFound(format!("no service named {name:?} is deployed")))?;
        let key = name.as_bytes().to_vec();
        self.grid
            .blocking(move |s| s.write(vec![BatchOp::Delete(Table::Services, key)], Durability::Synced))
            .await
            .map_err(internal)?;
        self.table.remove(name);
        tracing::info!(service = name, "service deleted");
        Ok(svc.current().spec.clone())
    }
}

/// A component whose memory starts above the service's limit could never serve: refuse it
/// at deploy, naming the smallest limit that works.
pub(super) fn check_memory(info: &crate::runtime::ComponentInfo, limits: &spec::Limits) -> Result<(), AdminError> {
    let limit = u64::from(limits.memory_mib) << 20;
    if info.min_memory_bytes <= limit {
        return Ok(());
    }
    let need = info.min_memory_bytes.div_ceil(1 << 20);
    Err(AdminError::BadRequest(format!(
        "the component starts with {need} MiB of linear memory ({} bytes) but limits.memory_mib is {}; \
         set limits.memory_mib to at least {need} (--memory-mib {need})",
        info.min_memory_bytes, limits.memory_mib
    )))
}

/// The refusal of a `strict_imports` deploy whose component imports what it is not granted.
pub(super) fn ungranted(denied: &[spec::DeniedImport]) -> AdminError {
    let list: Vec<String> = denied.iter().map(|d| format!("{} (needs {})", d.import, d.grant)).collect();
    AdminError::Ungranted(format!(
        "the component imports interfaces this service is not granted: {}; add the grant to the spec's \"grants\" to allow them, or drop \"strict_imports\" to deploy with them denied at use",
        list.join(", ")
    ))
}
