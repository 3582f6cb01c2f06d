//! Exports the same `acme:text/tokenize@0.1.0` as `text-tokenize` but splits on
//! whitespace only and upper-cases, without a normalizer: swapping it in for
//! `text-tokenize` visibly changes `text-stats`' answer.

wit_bindgen::generate!({ world: "alt", inline: "
    package test:alt;
    world alt { export acme:text/tokenize@0.1.0; }
", path: "../../../samples/wit/text" });

use exports::acme::text::tokenize::{Guest, Token};

struct Tokenizer;

impl Guest for Tokenizer {
    fn tokenize(text: String) -> Vec<Token> {
        let base = text.as_ptr() as usize;
        text.split_whitespace()
            .map(|w| Token { word: w.to_uppercase(), offset: (w.as_ptr() as usize - base) as u32 })
            .collect()
    }
}

export!(Tokenizer);
