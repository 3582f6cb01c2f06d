//! The platform's host imports: kv, invoke, barrier, log, config, context.
//!
//! Guest mistakes and platform refusals are the inner WIT `error`; the outer
//! `wasmtime::Result` is reserved for traps, which this module never raises.

use super::bindings::nanogrid::service::{barrier, config, context, invoke, kv, log, types};
use super::bindings::{GuestError, Request, Response};
use super::state::StoreState;
use crate::grid::KvError;

type Outer<T> = wasmtime::Result<T>;

impl types::Host for StoreState {}

fn internal(e: KvError) -> GuestError {
    match e {
        KvError::Unavailable(m) => GuestError::Unavailable(m),
        // The disk of the node holding the key's primary is full: the write was refused;
        // a retry succeeds once that disk has room.
        KvError::Storage(crate::grid::StorageError::Full(full)) => GuestError::Unavailable(full.to_string()),
        // In the store, not synced: unknown outcome, which is what `unavailable` means
        // for a write.
        KvError::Storage(crate::grid::StorageError::Unsynced(m)) => GuestError::Unavailable(m),
        e => GuestError::Internal(e.to_string()),
    }
}

impl StoreState {
    fn check_key(&self, key: &str) -> Result<(), GuestError> {
        let max = self.call.limits.max_key_bytes;
        if key.len() > max {
            return Err(GuestError::Invalid(format!("kv key is {} bytes; the limit is {max}", key.len())));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), GuestError> {
        let max = self.call.limits.max_value_bytes;
        if value.len() > max {
            return Err(GuestError::Invalid(format!("kv value is {} bytes; the limit is {max}", value.len())));
        }
        Ok(())
    }
}

fn level(c: kv::Consistency) -> crate::grid::part::Consistency {
    use crate::grid::part::Consistency as C;
    match c {
        kv::Consistency::One => C::One,
        kv::Consistency::Quorum => C::Quorum,
        kv::Consistency::All => C::All,
    }
}

/// Time a kv call into the run's trace (by consistency), when it is traced.
async fn timed<T>(
    run: Option<&std::sync::Arc<crate::trace::RunTrace>>,
    what: &'static str,
    f: impl std::future::Future<Output = T>,
) -> T {
    let Some(run) = run else { return f.await };
    let started = std::time::Instant::now();
    let out = f.await;
    run.kv(what, started.elapsed().as_micros() as u64);
    out
}

fn level_name(c: kv::Consistency) -> &'static str {
    match c {
        kv::Consistency::One => "one",
        kv::Consistency::Quorum => "quorum",
        kv::Consistency::All => "all",
    }
}

impl kv::Host for StoreState {
    async fn get(&mut self, key: String, read: kv::Consistency) -> Outer<Result<Option<Vec<u8>>, GuestError>> {
        if let Err(e) = self.check_key(&key) {
            return Ok(Err(e));
        }
        let call = &self.call;
        let f = call.grid.kv_get(&call.service, &key, level(read));
        Ok(timed(call.trace.run.as_ref(), level_name(read), f).await.map_err(internal))
    }

    async fn set(&mut self, key: String, value: Vec<u8>, write: kv::Consistency) -> Outer<Result<(), GuestError>> {
        if let Err(e) = self.check_key(&key).and_then(|_| self.check_value(&value)) {
            return Ok(Err(e));
        }
        let call = &self.call;
        let f = call.grid.kv_set(&call.service, &key, value, level(write));
        Ok(timed(call.trace.run.as_ref(), level_name(write), f).await.map_err(internal))
    }

    async fn delete(&mut self, key: String, write: kv::Consistency) -> Outer<Result<(), GuestError>> {
        if let Err(e) = self.check_key(&key) {
            return Ok(Err(e));
        }
        let call = &self.call;
        let f = call.grid.kv_delete(&call.service, &key, level(write));
        Ok(timed(call.trace.run.as_ref(), level_name(write), f).await.map_err(internal))
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Outer<Result<bool, GuestError>> {
        if let Err(e) = self.check_key(&key).and_then(|_| self.check_value(&new)) {
            return Ok(Err(e));
        }
        let call = &self.call;
        let f = call.grid.kv_compare_and_swap(&call.service, &key, expected, new);
        Ok(timed(call.trace.run.as_ref(), "cas", f).await.map_err(internal))
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> Outer<Result<Vec<String>, GuestError>> {
        if let Err(e) = self.check_key(&prefix) {
            return Ok(Err(e));
        }
        let limit = limit.min(self.call.limits.max_list_keys) as usize;
        let call = &self.call;
        let f = call.grid.kv_list_keys(&call.service, &prefix, after.as_deref(), limit);
        Ok(timed(call.trace.run.as_ref(), "list", f).await.map_err(internal))
    }
}

impl invoke::Host for StoreState {
    async fn call(&mut self, service: String, req: Request) -> Outer<Result<Response, GuestError>> {
        let call = self.call.clone();
        Ok(call.invoker.invoke(&call, service, req).await)
    }

    async fn call_all(&mut self, calls: Vec<(String, Request)>) -> Outer<Vec<Result<Response, GuestError>>> {
        let max = self.call.limits.max_fanout;
        if calls.len() > max {
            let err = GuestError::Denied(format!("call-all with {} calls; the limit is {max}", calls.len()));
            return Ok(calls.iter().map(|_| Err(err.clone())).collect());
        }
        let call = self.call.clone();
        let futures = calls.into_iter().map(|(service, req)| call.invoker.invoke(&call, service, req));
        Ok(futures::future::join_all(futures).await)
    }
}

impl barrier::Host for StoreState {
    async fn fan_out(&mut self, calls: Vec<(String, Request)>, then: Request) -> Outer<Result<String, GuestError>> {
        let max = self.call.limits.max_fanout;
        if calls.len() > max {
            return Ok(Err(GuestError::Denied(format!("fan-out with {} calls; the limit is {max}", calls.len()))));
        }
        // A continuation HTTP cannot carry could never be delivered: refuse now. (A call
        // that cannot be made is answered `invalid` in the barrier's results.)
        if let Err(e) = check_request(&then) {
            return Ok(Err(GuestError::Invalid(format!("the continuation request: {e}"))));
        }
        let call = self.call.clone();
        Ok(call.invoker.fan_out(&call, calls, then).await)
    }

    async fn results(&mut self, id: String) -> Outer<super::state::BarrierResults> {
        let call = self.call.clone();
        Ok(call.invoker.barrier_results(&call, id).await)
    }
}

impl log::Host for StoreState {
    fn log(&mut self, level: log::Level, message: String) -> Outer<()> {
        let service = &*self.call.service;
        let request_id = &*self.call.request_id;
        let message = log_line(&message);
        match level {
            log::Level::Trace => tracing::trace!(target: "guest", service, request_id, "{message}"),
            log::Level::Debug => tracing::debug!(target: "guest", service, request_id, "{message}"),
            log::Level::Info => tracing::info!(target: "guest", service, request_id, "{message}"),
            log::Level::Warn => tracing::warn!(target: "guest", service, request_id, "{message}"),
            log::Level::Error => tracing::error!(target: "guest", service, request_id, "{message}"),
        }
        Ok(())
    }
}

/// Guest text is data: at most 4096 characters, on one line (a newline or other control
/// character is escaped), so one call can neither flood the log nor forge lines of it.
fn log_line(message: &str) -> String {
    let capped = message.chars().take(4096);
    if !message.chars().take(4096).any(char::is_control) {
        return capped.collect();
    }
    capped.flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

impl config::Host for StoreState {
    fn get(&mut self, key: String) -> Outer<Option<String>> {
        Ok(self.call.config.get(&key).cloned())
    }

    fn get_all(&mut self) -> Outer<Vec<(String, String)>> {
        Ok(self.call.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

impl context::Host for StoreState {
    fn request_id(&mut self) -> Outer<String> {
        Ok(self.call.request_id.to_string())
    }

    fn service_name(&mut self) -> Outer<String> {
        Ok(self.call.service.to_string())
    }

    fn trace_id(&mut self) -> Outer<String> {
        Ok(self.call.trace.trace_id().map(|t| t.to_string()).unwrap_or_default())
    }
}

/// Whether HTTP can carry a request a guest built for `invoke`, `call-all` or a barrier:
/// a method token, a path starting with '/' (no spaces or control characters: they must be
/// percent-encoded), and header names and values HTTP allows. The error names the part.
pub fn check_request(req: &Request) -> Result<(), String> {
    if http::Method::from_bytes(req.method.as_bytes()).is_err() {
        return Err(format!("method {:?} is not an HTTP method", req.method));
    }
    if !req.path.starts_with('/') || req.path.parse::<http::uri::PathAndQuery>().is_err() {
        return Err(format!(
            "path {:?} is not an HTTP path: it must start with '/' and percent-encode spaces and control characters",
            req.path
        ));
    }
    for (k, v) in &req.headers {
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            return Err(format!("header name {k:?} is not valid in HTTP"));
        }
        if http::HeaderValue::from_str(v).is_err() {
            return Err(format!("the value of header {k:?} is not valid in HTTP (no control characters)"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
        let headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Request { method: method.into(), path: path.into(), headers, body: vec![] }
    }

    #[test]
    fn requests_http_cannot_carry_are_named() {
        assert_eq!(check_request(&req("GET", "/a/b?c=d%20e", &[("x-a", "1")])), Ok(()));
        for (r, part) in [
            (req("GET", "/a b", &[]), "path"),
            (req("GET", "a", &[]), "path"),
            (req("GET", "", &[]), "path"),
            (req("G T", "/", &[]), "method"),
            (req("GET", "/", &[("bad name", "v")]), "header name"),
            (req("GET", "/", &[("x", "line\nbreak")]), "value of header"),
        ] {
            let e = check_request(&r).unwrap_err();
            assert!(e.contains(part), "{e}");
        }
    }

    #[test]
    fn a_guest_log_line_stays_one_capped_line() {
        assert_eq!(super::log_line("plain words"), "plain words");
        let forged = "ok\n2026-01-01T00:00:00Z  INFO nanogrid::admin: admin request status=200\r\u{1b}[2J";
        let line = super::log_line(forged);
        assert!(!line.contains('\n') && !line.contains('\r') && !line.contains('\u{1b}'), "{line}");
        assert!(line.starts_with("ok\\n2026"), "{line}");
        assert_eq!(super::log_line(&"é".repeat(5000)).chars().count(), 4096);
    }
}
