//! HTTP plumbing shared by ingress and the admin API: bodies with size limits, JSON and
//! JSON-error responses, request ids.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

use crate::pace::{Meter, Pace, SlowBody};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body: buffered (platform answers, nanoservice responses) or streamed
/// (wasi:http components).
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A buffered body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// [`REQUEST_ID_HEADER`] as a header name (inserted without copying the name).
pub static REQUEST_ID_NAME: http::HeaderName = http::HeaderName::from_static(REQUEST_ID_HEADER);

/// The body of every error answer, from the platform or a guest:
/// `{"error":{"code","message","request_id"}}` (a guest's error has no request id).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorDetail {
    /// A stable, machine-readable code (`not-found`, `no-quorum`, …).
    pub code: String,
    /// What went wrong and how to fix it, for a person.
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
}

impl std::fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// An error response: an [`ErrorBody`].
pub fn error(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response<Body> {
    let error = ErrorDetail { code: code.into(), message: message.into(), request_id: request_id.into() };
    json(status, &ErrorBody { error }, request_id)
}

pub fn json<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T, request_id: &str) -> Response<Body> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
    bytes.push(b'\n');
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    set_request_id(h, request_id);
    resp
}

pub fn set_request_id(h: &mut http::HeaderMap, request_id: &str) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(REQUEST_ID_NAME.clone(), v);
    }
}

/// The caller's `x-request-id` if it is short and plain, so ids can be correlated across
/// systems; otherwise `None` and the node makes one.
pub fn incoming_request_id(h: &http::HeaderMap) -> Option<String> {
    let v = h.get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let ok = !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| v.to_string())
}

#[derive(Debug)]
pub enum BodyError {
    TooLarge(usize),
    Read(String),
    /// The sender broke the [`Pace`]: it stalled or trickled.
    Slow(SlowBody),
}

/// The answer to a body that could not be read: 413 or 408 (closing the connection), or
/// 400.
pub fn body_error(e: BodyError, request_id: &str) -> Response<Body> {
    match e {
        BodyError::TooLarge(limit) => {
            let msg = format!("request body is larger than the {limit}-byte limit");
            close_connection(error(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", &msg, request_id))
        }
        BodyError::Slow(slow) => {
            close_connection(error(StatusCode::REQUEST_TIMEOUT, "body-too-slow", &slow.to_string(), request_id))
        }
        BodyError::Read(e) => {
            error(StatusCode::BAD_REQUEST, "bad-request", &format!("could not read the body: {e}"), request_id)
        }
    }
}

/// Most bytes read and thrown away after a body passed its limit, so the client finishes
/// sending and can read the 413 instead of a connection reset.
const DRAIN_MAX: usize = 32 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Read a whole body, refusing more than `limit` bytes (no pace: for bodies from other
/// nodes; a client's goes through [`read_body_paced`]).
pub async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    read_body_paced(body, limit, Pace::OFF).await
}

/// Read a whole body, refusing more than `limit` bytes or a sender that breaks `pace`.
pub async fn read_body_paced<B>(mut body: B, limit: usize, pace: Pace) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    // Most requests (every GET) have no body: no clock, no timer.
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let mut buf = bytes::BytesMut::new();
    let mut meter = Meter::new(pace);
    let mut waited = std::time::Duration::ZERO;
    loop {
        let asked = tokio::time::Instant::now();
        let frame = match tokio::time::timeout(pace.idle, body.frame()).await {
            Err(_) => return Err(BodyError::Slow(SlowBody::Idle(pace.idle))),
            Ok(None) => break,
            Ok(Some(frame)) => frame.map_err(|e| BodyError::Read(e.to_string()))?,
        };
        waited += asked.elapsed();
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                drain(body).await;
                return Err(BodyError::TooLarge(limit));
            }
            meter.record(data.len(), waited).map_err(BodyError::Slow)?;
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Read and discard what is left of a body (bounded in bytes and time), so a refusal sent
/// before reading it reaches the client instead of a connection reset.
pub async fn drain<B>(mut body: B)
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > DRAIN_MAX {
                break;
            }
        }
    })
    .await;
}

/// Mark a response as the last on its connection (after a refused body).
pub fn close_connection(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// The tracing span of one request. Debug level: per-request lines are an access log you
/// turn on (`RUST_LOG=nanogrid=debug`); warnings name the request id themselves.
pub fn request_span(kind: &'static str, request_id: &str, method: &http::Method, path: &str) -> tracing::Span {
    tracing::debug_span!("request", kind, request_id = %request_id, method = %method, path = %path)
}
