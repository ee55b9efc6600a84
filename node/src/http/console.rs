//! The Web Console: plain HTML, JS and CSS (in `node/console/`) embedded in the binary and
//! served by every node.

use super::ApiError;
use axum::extract::Path;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

const INDEX: &str = include_str!("../../console/index.html");
const APP_JS: &str = include_str!("../../console/app.js");
const STYLE_CSS: &str = include_str!("../../console/style.css");

/// `GET /`: the console page.
pub(super) async fn index() -> Html<&'static str> {
    Html(INDEX)
}

/// `GET /console/{file}`: its script and style sheet.
pub(super) async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        _ => return ApiError::not_found("no such console file").into_response(),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}
