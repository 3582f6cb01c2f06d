//! `/v1/experiments`: the leader's re-provisioning experiments (see
//! [`crate::control::experiment`]), and a person's decision on a pending one.
//!
//! | route | |
//! | --- | --- |
//! | `GET /v1/experiments` | every experiment, newest first, with the mode and the rule |
//! | `GET /v1/experiments/{id}` | one |
//! | `POST /v1/experiments/{id}/approve` | apply a pending winner to all traffic (admin scope) |
//! | `POST /v1/experiments/{id}/reject` | roll a pending winner back (admin scope) |

use http::{Method, StatusCode};
use hyper::body::Incoming;

use super::{admin_error, err};
use crate::api::{ArmCalls, ExperimentList, ExperimentView};
use crate::control::Cluster;
use crate::control::experiment::{Experiment, Stage, verdict};
use crate::http::{self as h, Body};
use crate::node::Node;
use crate::services::AdminError;

pub(super) async fn route(
    node: &Node,
    req: http::Request<Incoming>,
    segments: &[&str],
    rid: &str,
) -> http::Response<Body> {
    let method = req.method().clone();
    h::drain(req.into_body()).await;
    let Some(c) = &node.cluster else {
        let msg = "experiments are a cluster's: a single node moves no instances (start nodes with --peer-listen)";
        return err(StatusCode::CONFLICT, "not-clustered", msg, rid);
    };
    let id = match segments.get(2).map(|s| s.parse::<u64>()) {
        Some(Err(_)) => {
            let msg = format!("{:?} is not an experiment id: give the number GET /v1/experiments lists", segments[2]);
            return err(StatusCode::BAD_REQUEST, "bad-request", msg, rid);
        }
        Some(Ok(id)) => Some(id),
        None => None,
    };
    match (&method, &segments[2.min(segments.len())..], id) {
        (&Method::GET, [], _) => {
            let mut list = Vec::new();
            for e in c.experiments() {
                list.push(view(c, &e).await);
            }
            let cfg = &c.config.experiments;
            let body = ExperimentList {
                node: node.config.node_id.clone(),
                mode: cfg.mode,
                window_ms: cfg.window.as_millis() as u64,
                min_samples: cfg.min_samples,
                min_gain: cfg.min_gain,
                rule: verdict::rule(cfg.min_gain),
                experiments: list,
            };
            h::json(StatusCode::OK, &body, rid)
        }
        (&Method::GET, [_], Some(id)) => match c.experiments().into_iter().find(|e| e.id == id) {
            Some(e) => h::json(StatusCode::OK, &view(c, &e).await, rid),
            None => {
                err(StatusCode::NOT_FOUND, "not-found", format!("no experiment {id}: see GET /v1/experiments"), rid)
            }
        },
        (&Method::POST, [_, action @ ("approve" | "reject")], Some(id)) => {
            match c.decide(id, *action == "approve").await {
                Ok(e) => h::json(StatusCode::OK, &view(c, &e).await, rid),
                Err(AdminError::Conflict(m)) => err(StatusCode::CONFLICT, "not-pending", m, rid),
                Err(e) => admin_error(e, rid),
            }
        }
        (_, [] | [_] | [_, "approve" | "reject"], _) => err(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            format!("{method} is not supported on /{}", segments.join("/")),
            rid,
        ),
        _ => err(
            StatusCode::NOT_FOUND,
            "no-route",
            format!("no admin route {method} /{}; see the API list in README.md", segments.join("/")),
            rid,
        ),
    }
}

/// One experiment as the API shows it: the record, its stage's name, and for a running
/// trial when its window ends and the calls each arm has had so far.
async fn view(c: &Cluster, e: &Experiment) -> ExperimentView {
    let mut v = ExperimentView { record: e.clone(), window_ends_ms: None, so_far: None };
    if e.stage == Stage::Trial {
        v.window_ends_ms = Some(e.started_ms + c.config.experiments.window.as_millis() as u64);
        v.so_far = c.trial_counts(e).await.map(|(old, new)| ArmCalls { old, new });
    }
    v
}
