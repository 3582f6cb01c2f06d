//! The web console at the admin listener's `/ui`: one page, one script and one style sheet,
//! embedded in the binary (no CDN, nothing fetched from elsewhere).
//!
//! The page asks for a token and keeps it in the tab's `sessionStorage`; the script sends it
//! only in the `Authorization` header of its calls to the same admin API the CLI uses
//! (`/v1/...`), so the console can do exactly what its token's scope allows
//! (`GET /v1/whoami` tells it which). The pages themselves are public: they hold no data.
//! A strict Content-Security-Policy allows scripts, styles and connections to this origin
//! only, and no framing.

use http::{HeaderValue, StatusCode, header};

use crate::http::{self as h, Body};

struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset { path: "/ui/", content_type: "text/html; charset=utf-8", bytes: include_bytes!("index.html") },
    Asset { path: "/ui/app.js", content_type: "text/javascript; charset=utf-8", bytes: include_bytes!("app.js") },
    Asset { path: "/ui/app.css", content_type: "text/css; charset=utf-8", bytes: include_bytes!("app.css") },
];

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The asset at `path` (`/ui` and `/ui/` are the page), or 404 naming the console's entry.
pub fn serve(path: &str, rid: &str) -> http::Response<Body> {
    let path = if path == "/ui" { "/ui/" } else { path };
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        let msg = format!("no console page {path}; the console is at /ui/");
        return h::error(StatusCode::NOT_FOUND, "no-route", &msg, rid);
    };
    let mut resp = http::Response::new(h::full(bytes::Bytes::from_static(asset.bytes)));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The assets change with the binary; a reload after an upgrade must not mix versions.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_assets_are_served_with_a_strict_policy() {
        for path in ["/ui", "/ui/", "/ui/app.js", "/ui/app.css"] {
            let r = serve(path, "t");
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert!(r.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("script-src 'self'"));
        }
        assert_eq!(serve("/ui/../metrics", "t").status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_page_loads_only_its_own_assets() {
        let page = std::str::from_utf8(ASSETS[0].bytes).unwrap();
        for needle in ["src=\"/ui/app.js\"", "href=\"/ui/app.css\""] {
            assert!(page.contains(needle), "{needle}");
        }
        assert!(!page.contains("http://") && !page.contains("https://"), "no outside addresses");
        assert!(!page.contains("<script>"), "no inline script (the policy forbids it)");
    }
}
