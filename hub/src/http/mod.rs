//! What both daemons' HTTP sides share: `query` (every query parameter parsed against stated
//! limits, pure) and `server` (the hardened HTTP/1 server their warp routes run on).
//!
//! Neither knows a route: the site's and the hub's `web.rs` own their endpoints.

pub mod query;
pub mod server;

pub use query::QueryError;

/// The 400 answer of a [`QueryError`]: `{"error": "PARAM: message", "param": "PARAM"}`.
pub fn bad_request(e: &QueryError) -> warp::http::Response<String> {
    warp::http::Response::builder()
        .status(warp::http::StatusCode::BAD_REQUEST)
        .header("content-type", "application/json")
        .body(e.to_json())
        .unwrap_or_else(|_| warp::http::Response::new(String::new()))
}

/// The raw query string of a request, empty when there is none (never a rejection).
pub fn raw_query() -> impl warp::Filter<Extract = (String,), Error = std::convert::Infallible>
       + Clone
       + Send
       + Sync
       + 'static {
    use warp::Filter;
    warp::query::raw().or(warp::any().map(String::new)).unify()
}
