//! Tables of bad requests: each row names why the request is wrong, the request itself, and the
//! exact status and errcode it must get. `run_table` sends every row and reports all the rows
//! that got another answer, not only the first; it never retries and never changes the rows.

use reqwest::{Method, StatusCode};

use super::TestServer;

/// One bad request, why it is bad, and the error it must get.
pub struct Row {
    reason: &'static str,
    method: Method,
    path: String,
    token: Option<String>,
    body: Option<Vec<u8>>,
    status: StatusCode,
    errcode: &'static str,
}

/// A row that expects nothing yet: give it its answer with [`Row::expect`].
pub fn row(
    reason: &'static str,
    method: Method,
    path: impl Into<String>,
    token: Option<&str>,
    body: Option<&str>,
) -> Row {
    Row {
        reason,
        method,
        path: path.into(),
        token: token.map(ToOwned::to_owned),
        body: body.map(|b| b.as_bytes().to_vec()),
        status: StatusCode::OK,
        errcode: "",
    }
}

impl Row {
    /// The status and errcode this row must get (and an `error` message with them).
    pub fn expect(mut self, status: StatusCode, errcode: &'static str) -> Self {
        self.status = status;
        self.errcode = errcode;
        self
    }
}

/// Sends every row and reports all that got another answer than expected.
pub async fn run_table(server: &TestServer, rows: Vec<Row>) {
    let mut failures = Vec::new();
    for row in rows {
        let body = row.body.clone().unwrap_or_default();
        let (status, json) =
            server.call_raw(row.method.clone(), &row.path, row.token.as_deref(), body).await;
        if status != row.status || json["errcode"] != row.errcode || !json["error"].is_string() {
            failures.push(format!(
                "{} ({} {} {:?}): expected {} {}, got {status} {json}",
                row.reason,
                row.method,
                row.path,
                shown_body(row.body.as_deref()),
                row.status,
                row.errcode
            ));
        }
    }
    assert!(failures.is_empty(), "{} rows failed:\n{}", failures.len(), failures.join("\n"));
}

/// The body as text for a failure message, cut to its first 120 characters when longer.
fn shown_body(body: Option<&[u8]>) -> Option<String> {
    body.map(|b| {
        let text = String::from_utf8_lossy(b);
        if text.chars().count() > 120 {
            format!("{}… ({} bytes)", text.chars().take(120).collect::<String>(), b.len())
        } else {
            text.into()
        }
    })
}
