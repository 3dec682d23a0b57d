//! The reference webhook receiver (`examples/webhook-receiver/receiver.py`) against the real
//! platform: the event service pushes a player's AUTO claim and an operator's grant to it, each
//! delivery becomes `DELIVERED`, and the receiver's store holds each delivery id applied exactly
//! once (also when the same delivery is pushed again). A push with a bad signature, or with a
//! stale timestamp, is refused and applies nothing.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::receiver::WEBHOOK_SECRET;
use crate::common::{Platform, event_body};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/webhook-receiver/receiver.py")
}

/// The script running on a free loopback port with its SQLite store in a directory of its own
/// (removed on drop, with the process).
struct ReferenceReceiver {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Drop for ReferenceReceiver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl ReferenceReceiver {
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "erp-reference-receiver-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new("python3")
            .arg(script())
            .args(["--host", "127.0.0.1", "--port", "0", "--db"])
            .arg(dir.join("receiver.sqlite3"))
            .env("ERP_DELIVERY_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs the reference receiver");
        // Its first line names the port the system chose: "listening on http://127.0.0.1:N/".
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("the receiver says where it listens within 10 s")
            .unwrap()
            .expect("a first line");
        let base = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_owned();
        // Keep reading its stdout so the pipe never fills up.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            url: format!("{base}webhook"),
            dir,
        }
    }

    /// The store's content as `receiver.py --dump` prints it: `{"applied": [...]}`.
    async fn applied(&self) -> Vec<Value> {
        let output = Command::new("python3")
            .arg(script())
            .arg("--db")
            .arg(self.dir.join("receiver.sqlite3"))
            .arg("--dump")
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let dump: Value = serde_json::from_slice(&output.stdout).unwrap();
        dump["applied"].as_array().unwrap().clone()
    }

    /// The ids in the store, once per application.
    async fn applied_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .applied()
            .await
            .iter()
            .map(|a| a["deliveryId"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// POSTs `body` as the platform would, signed with `secret` at `unix_seconds`.
    async fn push(&self, body: &Value, secret: &str, unix_seconds: i64) -> StatusCode {
        let raw = serde_json::to_vec(body).unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{unix_seconds}.").as_bytes());
        mac.update(&raw);
        let signature = format!(
            "t={unix_seconds},v1={}",
            hex::encode(mac.finalize().into_bytes())
        );
        reqwest::Client::new()
            .post(&self.url)
            .header("content-type", "application/json")
            .header("erp-delivery-id", body["id"].as_str().unwrap())
            .header("erp-signature", signature)
            .body(raw)
            .send()
            .await
            .unwrap()
            .status()
    }
}

#[tokio::test]
async fn the_reference_receiver_applies_each_delivery_once_and_refuses_forged_or_stale_pushes() {
    let receiver = ReferenceReceiver::start().await;
    let platform = Platform::builder()
        .pushing_deliveries_to(&receiver.url)
        .start()
        .await;
    let admin = platform.admin().await;
    let operator = platform
        .staff(&admin, "receiver-op@example.com", &["OPERATOR"])
        .await;
    let claimer = platform.player("receiver-claimer@example.com").await;
    let compensated = platform.player("receiver-granted@example.com").await;
    let event = platform
        .create_event(
            &operator.access_token,
            event_body(
                "Pushed",
                chrono::Duration::days(1),
                json!({"rewards": [{"name": "Gems", "type": "ITEM", "itemCode": "gem", "quantity": 5}]}),
            ),
        )
        .await;
    let event_id = event["id"].as_str().unwrap();

    // A player's AUTO claim and an operator's grant, each with its delivery.
    let claim = platform.claim(&claimer.access_token, event_id).await;
    let claim_delivery = claim["delivery"]["id"].as_str().unwrap().to_owned();
    let granted = platform
        .grant(
            &operator,
            "reference-receiver",
            json!({"eventId": event_id, "userIds": [compensated.id], "reason": "lost progress"}),
        )
        .await;
    let result = granted.expect(StatusCode::OK)["results"][0].clone();
    assert_eq!(result["outcome"], "GRANTED", "{result}");
    let (_, granted_claim) = platform
        .get(
            &format!("/claims/{}", result["claimId"].as_str().unwrap()),
            &operator.access_token,
        )
        .await;
    let grant_delivery = granted_claim["delivery"]["id"].as_str().unwrap().to_owned();

    // Each becomes DELIVERED once the script answered 2xx, which it does only after applying.
    let mut expected = vec![claim_delivery.clone(), grant_delivery.clone()];
    expected.sort();
    let mut pushed = Vec::new();
    for id in &expected {
        pushed.push(
            platform
                .delivery_becomes(&operator.access_token, id, "DELIVERED")
                .await,
        );
    }
    assert_eq!(receiver.applied_ids().await, expected, "each applied once");
    for applied in receiver.applied().await {
        let owner = if applied["deliveryId"] == claim_delivery.as_str() {
            &claimer.id
        } else {
            &compensated.id
        };
        assert_eq!(applied["userId"], owner.as_str(), "{applied}");
        assert_eq!(
            applied["rewards"],
            json!([{"type": "ITEM", "itemCode": "gem", "quantity": 5}]),
            "{applied}"
        );
    }

    // The same delivery again (at least once allows it): 2xx, and still applied once.
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        receiver.push(&pushed[0], WEBHOOK_SECRET, now).await,
        StatusCode::OK
    );
    assert_eq!(
        receiver.applied_ids().await,
        expected,
        "a repeat changes nothing"
    );

    // Forged and replayed pushes of a delivery it has not seen: refused, nothing applied.
    let mut unseen = pushed[1].clone();
    unseen["id"] = json!("unseen-delivery");
    let forged = receiver.push(&unseen, "not-the-secret", now).await;
    assert!(forged.is_client_error(), "bad signature: {forged}");
    let stale = receiver.push(&unseen, WEBHOOK_SECRET, now - 3600).await;
    assert_eq!(stale, StatusCode::BAD_REQUEST, "stale timestamp");
    let future = receiver.push(&unseen, WEBHOOK_SECRET, now + 3600).await;
    assert_eq!(future, StatusCode::BAD_REQUEST, "timestamp from the future");
    assert_eq!(receiver.applied_ids().await, expected, "nothing applied");

    // The platform's side agrees: one successful push per delivery.
    let (_, audit) = platform
        .get(
            "/audit?action=DELIVERY_SUCCEEDED&limit=100",
            &admin.access_token,
        )
        .await;
    let mut succeeded: Vec<String> = crate::common::items(&audit)
        .iter()
        .map(|e| e["entityId"].as_str().unwrap().to_owned())
        .collect();
    succeeded.sort();
    assert_eq!(succeeded, expected, "{audit}");
}
