//! Exports `acme:text/tokenize@0.2.0` whose `tokenize` returns plain strings: neither the
//! version nor the signature matches what `text-stats` imports.

wit_bindgen::generate!({ world: "tokenizer", path: "wit" });

struct Tokenizer;

impl exports::acme::text::tokenize::Guest for Tokenizer {
    fn tokenize(text: String) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }
}

export!(Tokenizer);
