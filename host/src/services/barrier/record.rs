//! A barrier's record as the grid keeps it (postcard), and the conversions between its
//! wire types and the runtime's requests, responses and errors.

use serde::{Deserialize, Serialize};

use super::MAX_ANSWERS_BYTES;
use crate::runtime::{GuestError, Request};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct WireRequest {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct WireResponse {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) enum WireError {
    NotFound(String),
    Unavailable(String),
    Timeout,
    Denied(String),
    Invalid(String),
    Internal(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct Answer {
    /// Milliseconds after the barrier was created.
    pub(super) after_ms: u64,
    pub(super) result: Result<WireResponse, WireError>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct Call {
    pub(super) service: String,
    pub(super) request: WireRequest,
    pub(super) answer: Option<Answer>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) enum State {
    Waiting,
    Resuming { attempts: u32 },
    Done { status: u16, at_ms: u64 },
    Failed { reason: String, at_ms: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct Record {
    pub(super) id: String,
    pub(super) service: String,
    pub(super) request_id: String,
    pub(super) depth: u32,
    pub(super) created_ms: u64,
    pub(super) calls: Vec<Call>,
    pub(super) then: WireRequest,
    /// `node/run`: who drives it, until `lease_until_ms`.
    pub(super) owner: String,
    pub(super) lease_until_ms: u64,
    pub(super) takeovers: u32,
    pub(super) state: State,
    /// The call that answered last: the one the barrier waited for.
    pub(super) last: Option<usize>,
    /// The largest answer body kept (the service's `max_kv_value_bytes`).
    pub(super) max_answer: usize,
}

impl Record {
    /// An answer as the barrier keeps it: bodies over the limits become a `denied` error.
    pub(super) fn keepable(&self, result: Result<WireResponse, WireError>) -> Result<WireResponse, WireError> {
        let Ok(r) = result else { return result };
        let kept: usize =
            self.calls.iter().filter_map(|c| c.answer.as_ref()?.result.as_ref().ok()).map(|r| r.body.len()).sum();
        if r.body.len() > self.max_answer {
            Err(WireError::Denied(format!(
                "the answer ({} {} bytes) is over the {} bytes a barrier keeps per answer (limits.max_kv_value_bytes)",
                r.status,
                r.body.len(),
                self.max_answer
            )))
        } else if kept + r.body.len() > MAX_ANSWERS_BYTES {
            Err(WireError::Denied(format!(
                "the barrier's answers would be over {MAX_ANSWERS_BYTES} bytes in all; the answer of {} bytes was dropped",
                r.body.len()
            )))
        } else {
            Ok(r)
        }
    }

    pub(super) fn ended(&self) -> Option<u64> {
        match self.state {
            State::Done { at_ms, .. } | State::Failed { at_ms, .. } => Some(at_ms),
            _ => None,
        }
    }
}

pub(super) fn to_wire_request(r: Request) -> WireRequest {
    WireRequest { method: r.method, path: r.path, headers: r.headers, body: r.body }
}

pub(super) fn from_wire_request(r: WireRequest) -> Request {
    Request { method: r.method, path: r.path, headers: r.headers, body: r.body }
}

pub(super) fn to_wire_error(e: GuestError) -> WireError {
    match e {
        GuestError::NotFound(m) => WireError::NotFound(m),
        GuestError::Unavailable(m) => WireError::Unavailable(m),
        GuestError::Timeout => WireError::Timeout,
        GuestError::Denied(m) => WireError::Denied(m),
        GuestError::Invalid(m) => WireError::Invalid(m),
        GuestError::Internal(m) => WireError::Internal(m),
    }
}

pub(super) fn from_wire_error(e: WireError) -> GuestError {
    match e {
        WireError::NotFound(m) => GuestError::NotFound(m),
        WireError::Unavailable(m) => GuestError::Unavailable(m),
        WireError::Timeout => GuestError::Timeout,
        WireError::Denied(m) => GuestError::Denied(m),
        WireError::Invalid(m) => GuestError::Invalid(m),
        WireError::Internal(m) => GuestError::Internal(m),
    }
}

pub(super) fn encode(r: &Record) -> Vec<u8> {
    postcard::to_allocvec(r).expect("a barrier record always encodes")
}

pub(super) fn decode(b: &[u8]) -> Option<Record> {
    postcard::from_bytes(b).ok()
}

pub(super) fn record_key(id: &str) -> String {
    format!("b/{id}")
}
