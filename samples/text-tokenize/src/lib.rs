//! `text-tokenize`: exports `acme:text/tokenize` and itself imports
//! `acme:text/normalize`, so a consumer of it pulls in a chain of two providers.

wit_bindgen::generate!({ world: "tokenizer", path: "../wit/text" });

use acme::text::normalize::normalize_word;
use exports::acme::text::tokenize::{Guest, Token};

struct Tokenizer;

impl Guest for Tokenizer {
    fn tokenize(text: String) -> Vec<Token> {
        let mut out = Vec::new();
        let mut start = None;
        // Words are runs of non-whitespace; normalizing may empty a run ("--"), which is dropped.
        for (i, c) in text.char_indices().chain(std::iter::once((text.len(), ' '))) {
            match (c.is_whitespace(), start) {
                (false, None) => start = Some(i),
                (true, Some(s)) => {
                    let word = normalize_word(&text[s..i]);
                    if !word.is_empty() {
                        out.push(Token { word, offset: s as u32 });
                    }
                    start = None;
                }
                _ => {}
            }
        }
        out
    }
}

export!(Tokenizer);
