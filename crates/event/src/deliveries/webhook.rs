//! One push of a delivery to the game's webhook: the body (the delivery in its REST shape), the
//! `ERP-Delivery-Id` and `ERP-Signature` headers, and what the answer means.
//!
//! `ERP-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 over "<t>.<raw body>">`: the receiver
//! recomputes it with the shared secret over the exact bytes it got, and rejects a stale `t` so a
//! captured request cannot be replayed later.

use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{Delivery, DeliveryView};
use crate::config::Webhook;

pub(crate) const DELIVERY_ID_HEADER: &str = "ERP-Delivery-Id";
pub(crate) const SIGNATURE_HEADER: &str = "ERP-Signature";
/// The longest `lastError` kept.
const MAX_ERROR_CHARS: usize = 300;

/// The `ERP-Signature` value for `body` sent at `unix_seconds`.
pub(crate) fn signature(secret: &str, unix_seconds: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={unix_seconds},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The webhook's client: one connection pool, a per-attempt timeout, no redirects (the answer
/// of the configured URL is the answer).
#[derive(Clone)]
pub(crate) struct WebhookClient {
    client: reqwest::Client,
    webhook: Webhook,
}

impl WebhookClient {
    pub(crate) fn new(webhook: Webhook, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("erp-event/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, webhook })
    }

    /// POSTs `delivery`; `Err` carries the `lastError` to keep when the answer is not a 2xx or
    /// there is none in time.
    pub(crate) async fn push(&self, delivery: &Delivery) -> Result<(), String> {
        let body = serde_json::to_vec(&DeliveryView::from(delivery))
            .map_err(|error| format!("encode: {error}"))?;
        let signed = signature(&self.webhook.secret, Utc::now().timestamp(), &body);
        let answer = self
            .client
            .post(self.webhook.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(DELIVERY_ID_HEADER, &delivery.id)
            .header(SIGNATURE_HEADER, signed)
            .body(body)
            .send()
            .await;
        match answer {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("HTTP {}", response.status())),
            Err(error) if error.is_timeout() => Err("no answer in time".to_owned()),
            Err(error) => Err(shorten(&format!("{error}: {}", source_chain(&error)))),
        }
    }
}

/// The causes under an error (reqwest's own message is only "error sending request").
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut causes = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    causes.join(": ")
}

fn shorten(text: &str) -> String {
    text.chars().take(MAX_ERROR_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_time_dot_body() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            signature("secret", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }
}
