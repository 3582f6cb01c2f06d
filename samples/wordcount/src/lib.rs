//! `wordcount`: JSON in, JSON out.
//!
//! `POST /` with `{"text": "the cat and the hat"}` returns
//! `{"words": 5, "unique": 4, "top": [["the", 2], …]}`; `?top=N` picks how many.

use std::collections::HashMap;

use nanogrid_sdk::{Error, Request, Response, Service};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Input {
    text: String,
}

#[derive(Serialize)]
struct Output {
    words: usize,
    unique: usize,
    top: Vec<(String, usize)>,
}

struct WordCount;

impl Service for WordCount {
    fn handle(req: Request) -> Result<Response, Error> {
        let input: Input =
            req.json().map_err(|e| Error::invalid(format!("send {{\"text\": \"...\"}}: {}", e.message())))?;
        let top_n = req.query_param("top").and_then(|s| s.parse().ok()).unwrap_or(5);
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut words = 0;
        for word in input.text.split(|c: char| !c.is_alphanumeric() && c != '\'') {
            if word.is_empty() {
                continue;
            }
            words += 1;
            *counts.entry(word.to_lowercase()).or_default() += 1;
        }
        let unique = counts.len();
        let mut top: Vec<(String, usize)> = counts.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(top_n);
        Response::json(200, &Output { words, unique, top })
    }
}

nanogrid_sdk::export!(WordCount);
