//! `text-stats`: the entry point of the text pipeline. `POST /` with plain text returns
//! word statistics as JSON:
//!
//! `{"words": 5, "unique": 4, "chars": 19, "longest": "the", "top": [{"word": "the", "count": 2}, ...]}`
//!
//! Tokenizing is not done here: it calls `acme:text/tokenize` through a typed import,
//! which nanogrid binds to the service that exports it (`text-tokenize`).

use std::collections::HashMap;

use nanogrid_sdk::{Error, Request, Response, Service};
use serde::Serialize;

mod typed {
    wit_bindgen::generate!({ world: "stats-imports", path: "../wit/text" });
}
use typed::acme::text::tokenize::tokenize;

#[derive(Serialize)]
struct Count {
    word: String,
    count: usize,
}

#[derive(Serialize)]
struct Stats {
    words: usize,
    unique: usize,
    chars: usize,
    longest: Option<String>,
    /// First offset of the longest word.
    longest_at: Option<u32>,
    top: Vec<Count>,
}

struct TextStats;

impl Service for TextStats {
    fn handle(req: Request) -> Result<Response, Error> {
        let text = req.text().map_err(|e| Error::invalid(format!("send UTF-8 text: {}", e.message())))?;
        let top_n = req.query_param("top").and_then(|s| s.parse().ok()).unwrap_or(5);
        let tokens = tokenize(text);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        let mut longest: Option<(&str, u32)> = None;
        for t in &tokens {
            *counts.entry(&t.word).or_default() += 1;
            if longest.is_none_or(|(w, _)| t.word.len() > w.len()) {
                longest = Some((&t.word, t.offset));
            }
        }
        let mut top: Vec<Count> = counts.iter().map(|(w, c)| Count { word: w.to_string(), count: *c }).collect();
        top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.word.cmp(&b.word)));
        top.truncate(top_n);
        Response::json(
            200,
            &Stats {
                words: tokens.len(),
                unique: counts.len(),
                chars: text.chars().count(),
                longest: longest.map(|(w, _)| w.to_string()),
                longest_at: longest.map(|(_, o)| o),
                top,
            },
        )
    }
}

nanogrid_sdk::export!(TextStats);
