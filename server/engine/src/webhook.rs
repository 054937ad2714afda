//! Alert webhooks: an HTTP POST of a JSON body (`models.alert_webhook`).

use std::time::Duration;

/// How long a webhook may take before the alert is given up (and logged).
const TIMEOUT: Duration = Duration::from_secs(10);

/// POST `body` as JSON to `url`; an error for a failed request or a non-2xx answer.
pub(crate) async fn post_json(url: &str, body: &serde_json::Value) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the webhook answered {}", response.status()))
    }
}
