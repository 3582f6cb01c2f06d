//! The admin routes that show the cluster (or the single node) as a whole: members,
//! call graph, events, autoscaler, barriers, the grid; removing a member; fault injection.
//! Each asks `Node::plane`, whichever mode the node runs in.

use super::{admin_error, err, json_body, unmatched};
use crate::api;
use crate::http::{self as h, Body};
use crate::node::Node;
use http::{Method, StatusCode};
use hyper::body::Incoming;

pub(super) async fn route(
    node: &Node,
    req: http::Request<Incoming>,
    segments: &[&str],
    rid: &str,
) -> http::Response<Body> {
    let registry = &node.registry;
    let method = req.method().clone();
    match (&method, segments) {
        (&Method::GET, ["v1", "cluster"]) => h::json(StatusCode::OK, &node.plane.status(), rid),
        (&Method::GET, ["v1", "graph"]) => {
            // `?scope=node` keeps to this node; in a cluster the default adds up every live node.
            let node_only = req.uri().query().is_some_and(|q| q.split('&').any(|kv| kv == "scope=node"));
            let (edges, nodes) = node.plane.graph(node_only).await;
            // On the leader: calls per second per calling node, what co-location acts on.
            let demand = node.plane.demand();
            let body = api::GraphView { node: node.config.node_id.clone(), nodes, edges, demand };
            h::json(StatusCode::OK, &body, rid)
        }
        (&Method::GET, ["v1", "events"]) => {
            let q = |name: &str| {
                req.uri().query().and_then(|q| {
                    q.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse::<u64>().ok())
                })
            };
            let (after, limit) = (q("after").unwrap_or(0), q("limit").unwrap_or(100).clamp(1, 1000) as usize);
            let events = node.plane.events(after, limit);
            h::json(StatusCode::OK, &api::EventList { node: node.config.node_id.clone(), events }, rid)
        }
        (&Method::GET, ["v1", "autoscale"]) => match node.plane.autoscale_view() {
            Ok(v) => h::json(StatusCode::OK, &v, rid),
            Err(e) => admin_error(e, rid),
        },
        (&Method::GET, ["v1", "barriers"]) => match registry.pending_barriers(1000).await {
            Ok(pending) => {
                h::json(StatusCode::OK, &api::BarrierList { pending, driven_here: registry.barriers.active() }, rid)
            }
            Err(e) => {
                err(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("barriers could not be listed: {e}"), rid)
            }
        },
        (&Method::GET, ["v1", "barriers", "stats"]) => {
            let (edges, _) = node.plane.graph(false).await;
            let callees = crate::services::calls::barrier_stats(&edges);
            h::json(StatusCode::OK, &api::BarrierStats { node: node.config.node_id.clone(), callees }, rid)
        }
        (&Method::GET, ["v1", "barriers", id]) => match registry.barrier_report(id).await {
            Ok(Some(v)) => h::json(StatusCode::OK, &v, rid),
            Ok(None) => err(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no barrier {id:?} (ended barriers are kept for an hour)"),
                rid,
            ),
            Err(e) => err(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("barrier {id:?} could not be read: {e}"),
                rid,
            ),
        },
        (&Method::GET, ["v1", "grid"]) => h::json(StatusCode::OK, &node.plane.grid_report().await, rid),
        (&Method::DELETE, ["v1", "cluster", "nodes", id]) => match node.plane.remove_node(id).await {
            Ok(()) => h::json(StatusCode::OK, &api::NodeRemoved { removed: id.to_string() }, rid),
            Err(e) => admin_error(e, rid),
        },
        (&Method::POST, ["v1", "debug", "gossip"]) => gossip_fault(node, req, rid).await,
        (
            _,
            ["v1", "cluster"]
            | ["v1", "grid"]
            | ["v1", "graph"]
            | ["v1", "barriers"]
            | ["v1", "barriers", _]
            | ["v1", "events"]
            | ["v1", "autoscale"],
        ) => unmatched(req, true, rid).await,
        _ => unmatched(req, false, rid).await,
    }
}

/// `POST /v1/debug/gossip` (fault injection, scenario tests only): `{"fault": "fail"}`
/// makes the gossip socket report a fatal error at its next packet, `{"fault": "stall"}`
/// makes its next send hang for good.
async fn gossip_fault(node: &Node, req: http::Request<Incoming>, rid: &str) -> http::Response<Body> {
    let Some(c) = node.cluster.as_ref().filter(|c| c.config.fault_injection) else {
        h::drain(req.into_body()).await;
        return err(
            StatusCode::NOT_FOUND,
            "no-route",
            "fault injection is off; start the node with --fault-injection",
            rid,
        );
    };
    let body: serde_json::Value = match json_body(req, rid).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let fault = match body.get("fault").and_then(|v| v.as_str()) {
        Some("fail") => api::GossipFault::Fail,
        Some("stall") => api::GossipFault::Stall,
        _ => return err(StatusCode::BAD_REQUEST, "bad-request", "give {\"fault\": \"fail\" | \"stall\"}", rid),
    };
    match fault {
        api::GossipFault::Fail => c.faults.set_gossip_fail(),
        api::GossipFault::Stall => c.faults.set_gossip_stall(),
    }
    tracing::warn!(fault = %body["fault"], "fault injection: gossip fault armed");
    h::json(StatusCode::OK, &api::GossipFaultArmed { armed: fault }, rid)
}
