//! `jobs`: word counting over many lines as a fan-out with a durable barrier.
//!
//! - `POST /` with text: sends each non-empty line to `wordcount` (at most 64) through
//!   `barrier::fan_out` and answers `202 {"job": ID, "lines": N}` at once.
//! - When every line is counted, the platform resumes the service with `POST /resume`;
//!   it adds the counts up and stores `{"words", "lines", "failed", "top"}` under the job.
//! - `GET /{ID}`: the result (200), or `202 {"status": "running"}` until it is in.

use std::collections::BTreeMap;

use nanogrid_sdk::{Error, Request, Response, Service, barrier, kv};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Deserialize)]
struct Count {
    words: u64,
    top: Vec<(String, u64)>,
}

#[derive(Serialize, Deserialize)]
struct Result {
    status: String,
    words: u64,
    lines: usize,
    failed: usize,
    top: Vec<(String, u64)>,
}

struct Jobs;

fn start(req: &Request) -> std::result::Result<Response, Error> {
    let text = req.text()?;
    let calls: Vec<(String, Request)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| Ok(("wordcount".to_string(), Request::post_json("/?top=10", &json!({ "text": line }))?)))
        .collect::<std::result::Result<_, Error>>()?;
    if calls.is_empty() {
        return Err(Error::invalid("send some lines of text to count"));
    }
    let lines = calls.len();
    let id = barrier::fan_out(&calls, &Request::new("POST", "/resume"))?;
    // The job may already be done (a fast barrier): only mark it running if it is not.
    let running = serde_json::to_vec(&json!({ "status": "running" }))?;
    kv::compare_and_swap(&format!("job/{id}"), None, &running)?;
    Response::json(202, &json!({ "job": id, "lines": lines }))
}

fn resume(id: &str) -> std::result::Result<Response, Error> {
    let answers = barrier::results(id)?;
    let (mut words, mut failed) = (0, 0);
    let mut top: BTreeMap<String, u64> = BTreeMap::new();
    for answer in &answers {
        match answer.as_ref().ok().filter(|r| r.is_success()).map(|r| r.json_body::<Count>()) {
            Some(Ok(c)) => {
                words += c.words;
                for (w, n) in c.top {
                    *top.entry(w).or_default() += n;
                }
            }
            _ => failed += 1,
        }
    }
    let mut top: Vec<(String, u64)> = top.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(5);
    let result = Result { status: "done".into(), words, lines: answers.len(), failed, top };
    kv::set_json(&format!("job/{id}"), &result)?;
    Response::json(200, &result)
}

impl Service for Jobs {
    fn handle(req: Request) -> std::result::Result<Response, Error> {
        if let Some(id) = barrier::id(&req) {
            return resume(id);
        }
        match (req.method.as_str(), req.route().trim_matches('/')) {
            ("POST", "") => start(&req),
            ("GET", id) if !id.is_empty() => match kv::get_json::<serde_json::Value>(&format!("job/{id}"))? {
                Some(v) if v["status"] == "done" => Response::json(200, &v),
                Some(v) => Response::json(202, &v),
                None => Err(Error::NotFound(format!("no job {id}"))),
            },
            _ => Err(Error::invalid("POST / with lines of text, or GET /{job}")),
        }
    }
}

nanogrid_sdk::export!(Jobs);
