//! What one client request says about whether its operation took effect.
//!
//! A history checker is only as good as the outcomes it is fed: an operation that did
//! not happen but is recorded as "unknown" weakens every check (an unknown write may be
//! placed anywhere), and an answer the workload never provokes (a 400, a 409) is a
//! finding in itself, not noise. So each request ends as one of three things:
//!
//! - **answered**: a 2xx, or the kv guest's 404 `not-found` where absence is an answer
//!   (a read; the host's own 404 for an unknown service is told apart by its request id);
//! - **not applied**: the connection was refused or the host unreachable (nothing was
//!   sent), or a 4xx rejected the request before it acted; a 4xx is also recorded as an
//!   unexpected answer, which fails the run;
//! - **unknown**: a timeout, a reset after the request was sent, or a 5xx (the node may
//!   have acted before failing). A run whose unknown share passes
//!   [`MAX_UNKNOWN_PERCENT`] is inconclusive and fails.

use std::io::ErrorKind;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use nanogrid::client::Reply;

/// Above this share of operations with unknown outcomes a run proves too little to pass.
/// Recorded campaigns sit at 0.4–15 % (docs/RELIABILITY.md); half of that again is margin.
pub const MAX_UNKNOWN_PERCENT: u64 = 25;
/// Unexpected answers kept verbatim for the report (all are counted).
const KEPT: usize = 5;

/// How one request ended, as far as the client can tell.
#[derive(Debug)]
pub enum Ended {
    /// The node answered.
    Answer(Reply),
    /// No connection was made (refused, unreachable): nothing reached a node.
    NotSent,
    /// No answer after the request may have been sent: a timeout, a reset, a broken stream.
    Lost,
}

impl Ended {
    /// Classifies a client result: connection failures before anything was sent are told
    /// apart from failures after (the error chain carries the `io::Error`).
    pub fn from_result(r: anyhow::Result<Reply>) -> Ended {
        match r {
            Ok(reply) => Ended::Answer(reply),
            Err(e) => {
                let never_sent = e.chain().filter_map(|c| c.downcast_ref::<std::io::Error>()).any(|io| {
                    matches!(
                        io.kind(),
                        ErrorKind::ConnectionRefused | ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable
                    )
                });
                if never_sent { Ended::NotSent } else { Ended::Lost }
            }
        }
    }

    /// The reply, whatever it says (for callers that only count successes).
    pub fn reply(self) -> Option<Reply> {
        match self {
            Ended::Answer(r) => Some(r),
            Ended::NotSent | Ended::Lost => None,
        }
    }
}

/// The kv guest's "no such key". It is a guest error, which carries no request id; the
/// host's 404 for a service it does not know has the same code but carries one.
pub fn absent(reply: &Reply) -> bool {
    reply.status == 404 && reply.error().is_some_and(|e| e.code == "not-found" && e.request_id.is_empty())
}

/// What a request means for the history of its operation.
#[derive(Debug)]
pub enum Judged {
    Answered(Reply),
    NotApplied,
    Unknown,
}

/// Counts of outcomes that are not plain answers, and the unexpected answers themselves.
#[derive(Default)]
pub struct Outcomes {
    pub not_sent: AtomicU64,
    unexpected: AtomicU64,
    kept: Mutex<Vec<String>>,
}

impl Outcomes {
    /// Judges one request for the operation `what` (say `PUT /kv/r3-7`); `absent_is_answer`
    /// when a 404 `not-found` is the operation's answer (a read of a missing key).
    pub fn judge(&self, sent: Ended, what: &str, absent_is_answer: bool) -> Judged {
        let reply = match sent {
            Ended::Answer(r) => r,
            Ended::NotSent => {
                self.not_sent.fetch_add(1, Ordering::Relaxed);
                return Judged::NotApplied;
            }
            Ended::Lost => return Judged::Unknown,
        };
        if reply.status.is_success() || (absent_is_answer && absent(&reply)) {
            Judged::Answered(reply)
        } else if reply.status.is_server_error() {
            Judged::Unknown
        } else {
            self.unexpected(what, &reply);
            Judged::NotApplied
        }
    }

    /// Records an answer the workload does not provoke (a 4xx, or a 2xx without the
    /// fields its operation defines).
    pub fn unexpected(&self, what: &str, reply: &Reply) {
        self.unexpected.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < KEPT {
            let body = String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)]).into_owned();
            kept.push(format!("{what} answered {}: {body}", reply.status));
        }
    }

    /// The findings these outcomes amount to: unexpected answers, and an unknown share
    /// above the bound (`unknown` of `ops` operations).
    pub fn findings(&self, ops: u64, unknown: u64) -> Vec<String> {
        let mut out = Vec::new();
        let n = self.unexpected.load(Ordering::Relaxed);
        if n > 0 {
            let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            out.push(format!("{n} unexpected answers to the workload, first: {}", kept.join(" | ")));
        }
        if ops > 0 && unknown * 100 > ops * MAX_UNKNOWN_PERCENT {
            out.push(format!(
                "inconclusive: {unknown} of {ops} operations ({} %) ended with unknown outcomes, above the \
                 {MAX_UNKNOWN_PERCENT} % bound: the history checks prove too little about this run",
                unknown * 100 / ops
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    fn reply(status: u16, body: &str) -> Ended {
        Ended::Answer(Reply {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        })
    }

    #[test]
    fn answers_rejections_and_unknowns_are_told_apart() {
        let o = Outcomes::default();
        let absent = r#"{"error":{"code":"not-found","message":"no key"}}"#;
        assert!(matches!(o.judge(reply(200, "v"), "GET k", true), Judged::Answered(_)));
        assert!(matches!(o.judge(reply(404, absent), "GET k", true), Judged::Answered(_)));
        assert!(matches!(o.judge(reply(503, "{}"), "PUT k", false), Judged::Unknown));
        assert!(matches!(o.judge(reply(504, "{}"), "PUT k", false), Judged::Unknown));
        assert!(matches!(o.judge(Ended::Lost, "PUT k", false), Judged::Unknown));
        assert!(matches!(o.judge(Ended::NotSent, "PUT k", false), Judged::NotApplied));
        assert_eq!(o.not_sent.load(Ordering::Relaxed), 1);
        assert!(o.findings(10, 2).is_empty(), "{:?}", o.findings(10, 2));
        // A 404 where absence is no answer, the host's 404 (no such service: it has a
        // request id) even for a read, and a 400, are findings.
        assert!(matches!(o.judge(reply(404, absent), "PUT k", false), Judged::NotApplied));
        let no_service = r#"{"error":{"code":"not-found","message":"no service","request_id":"r1"}}"#;
        assert!(matches!(o.judge(reply(404, no_service), "GET k", true), Judged::NotApplied));
        assert!(matches!(o.judge(reply(400, "bad"), "POST k?cas", false), Judged::NotApplied));
        let f = o.findings(10, 2);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].starts_with("3 unexpected answers") && f[0].contains("POST k?cas answered 400"), "{f:?}");
    }

    #[test]
    fn too_many_unknown_outcomes_make_a_run_inconclusive() {
        let o = Outcomes::default();
        assert!(o.findings(100, 25).is_empty());
        let f = o.findings(100, 26);
        assert_eq!(f.len(), 1);
        assert!(f[0].starts_with("inconclusive: 26 of 100 operations (26 %)"), "{f:?}");
    }

    #[tokio::test]
    async fn a_refused_connection_was_never_sent_and_a_reset_may_have_been() {
        // A port nothing listens on: bind, note the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client = nanogrid::client::Client::new();
        let r = client.send(http::Method::PUT, &format!("http://127.0.0.1:{port}/kv/k"), &[], Bytes::new()).await;
        assert!(matches!(Ended::from_result(r), Ended::NotSent));
        // A server that accepts, reads the request and closes without answering.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            use tokio::io::AsyncReadExt as _;
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
        });
        let r = client.send(http::Method::PUT, &format!("http://{addr}/kv/k"), &[], Bytes::new()).await;
        server.await.unwrap();
        assert!(matches!(Ended::from_result(r), Ended::Lost));
    }
}
