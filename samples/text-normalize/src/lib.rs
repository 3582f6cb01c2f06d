//! `text-normalize`: a provider with no HTTP handler. It exports `acme:text/normalize`
//! for other services to import; nanogrid fuses it into their component.

wit_bindgen::generate!({ world: "normalizer", path: "../wit/text" });

struct Normalizer;

impl exports::acme::text::normalize::Guest for Normalizer {
    fn normalize_word(word: String) -> String {
        word.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
    }
}

export!(Normalizer);
