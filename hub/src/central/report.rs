//! Monthly reports and incentive answers (the I/O side): gathers period figures from the store,
//! hands them to the pure incentive rules, renders JSON and CSV.
//!
//! It never computes an energy or incentive rule itself.

use warp::http::{Response, StatusCode};

use super::Hub;

pub fn incentive_response(_hub: &Hub, month: &str) -> Response<String> {
    not_ready(month)
}

pub fn report_response(_hub: &Hub, file: &str) -> Response<String> {
    not_ready(file)
}

fn not_ready(what: &str) -> Response<String> {
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header("content-type", "application/json")
        .body(
            serde_json::json!({"error": format!("{what}: the incentive engine is not merged yet")})
                .to_string(),
        )
        .unwrap_or_else(|_| Response::new(String::new()))
}
