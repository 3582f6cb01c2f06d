//! One barrier as the admin API shows it (`GET /v1/barriers/{id}`, re-exported by
//! [`crate::api`]).

use serde::{Deserialize, Serialize};

use super::{Record, State};

/// `GET /v1/barriers/{id}`: one barrier (ended ones are kept for an hour).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarrierReport {
    pub id: String,
    /// The service that made it.
    pub service: String,
    pub request_id: String,
    pub state: BarrierState,
    /// How it ended, or a resuming barrier's attempts (`null` while waiting).
    pub end: Option<BarrierEnd>,
    pub created_ms: u64,
    pub calls: Vec<BarrierCall>,
    /// Calls answered so far.
    pub answered: usize,
    /// The call that answered last: the one the barrier waited for.
    pub waited_on: Option<WaitedOn>,
    /// `node/run`: who drives it, until `lease_until_ms`.
    pub owner: String,
    pub lease_until_ms: u64,
    pub takeovers: u32,
}

/// Where a barrier is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BarrierState {
    Waiting,
    Resuming,
    Done,
    Failed,
}

impl BarrierState {
    pub fn as_str(self) -> &'static str {
        match self {
            BarrierState::Waiting => "waiting",
            BarrierState::Resuming => "resuming",
            BarrierState::Done => "done",
            BarrierState::Failed => "failed",
        }
    }
}

/// [`BarrierReport::end`]: `attempts` while resuming; `status` and `ended_ms` when done;
/// `reason` and `ended_ms` when failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarrierEnd {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// One call of a barrier; `after_ms` and `status` or `error` once it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarrierCall {
    pub service: String,
    pub method: String,
    pub path: String,
    /// Milliseconds after the barrier was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The call a barrier waited for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitedOn {
    /// Its index in [`BarrierReport::calls`].
    pub call: usize,
    pub service: String,
    pub after_ms: u64,
}

/// The report of a stored barrier.
pub(super) fn report(r: &Record) -> BarrierReport {
    let calls = r
        .calls
        .iter()
        .map(|c| BarrierCall {
            service: c.service.clone(),
            method: c.request.method.clone(),
            path: c.request.path.clone(),
            after_ms: c.answer.as_ref().map(|a| a.after_ms),
            status: c.answer.as_ref().and_then(|a| a.result.as_ref().ok()).map(|resp| resp.status),
            error: c.answer.as_ref().and_then(|a| a.result.as_ref().err()).map(|e| format!("{e:?}")),
        })
        .collect();
    let (state, end) = match &r.state {
        State::Waiting => (BarrierState::Waiting, None),
        State::Resuming { attempts } => {
            (BarrierState::Resuming, Some(BarrierEnd { attempts: Some(*attempts), ..Default::default() }))
        }
        State::Done { status, at_ms } => (
            BarrierState::Done,
            Some(BarrierEnd { status: Some(*status), ended_ms: Some(*at_ms), ..Default::default() }),
        ),
        State::Failed { reason, at_ms } => (
            BarrierState::Failed,
            Some(BarrierEnd { reason: Some(reason.clone()), ended_ms: Some(*at_ms), ..Default::default() }),
        ),
    };
    let answered = r.calls.iter().filter(|c| c.answer.is_some()).count();
    let waited_on = r.last.and_then(|i| {
        let c = r.calls.get(i)?;
        Some(WaitedOn { call: i, service: c.service.clone(), after_ms: c.answer.as_ref()?.after_ms })
    });
    BarrierReport {
        id: r.id.clone(),
        service: r.service.clone(),
        request_id: r.request_id.clone(),
        state,
        end,
        created_ms: r.created_ms,
        calls,
        answered,
        waited_on,
        owner: r.owner.clone(),
        lease_until_ms: r.lease_until_ms,
        takeovers: r.takeovers,
    }
}
