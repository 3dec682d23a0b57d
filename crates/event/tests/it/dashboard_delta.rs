//! Shared by the dashboard test and the claims benchmark (included with `#[path]`): both write
//! claims straight into the collection and need the dashboard delta the service would have
//! written with them.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use mongodb::bson::{Bson, Document, doc};

/// The dashboard delta the service writes with every transaction that creates claims, for
/// claims written straight into the collection (see `store::tallies`).
pub fn delta_for(claims: &[Document]) -> Document {
    let mut status: HashMap<String, i64> = HashMap::new();
    let mut granted: HashMap<String, i64> = HashMap::new();
    let mut days: HashMap<String, i64> = HashMap::new();
    let mut events: HashMap<String, (i64, mongodb::bson::DateTime, String)> = HashMap::new();
    for claim in claims {
        let state = claim.get_str("status").unwrap();
        *status.entry(state.to_owned()).or_default() += 1;
        if state == "GRANTED" {
            for reward in claim.get_array("rewards").unwrap() {
                let kind = reward.as_document().unwrap().get_str("type").unwrap();
                *granted.entry(kind.to_owned()).or_default() += 1;
            }
        }
        let at = *claim.get_datetime("requested_at").unwrap();
        let day = DateTime::<Utc>::from_timestamp_millis(at.timestamp_millis())
            .unwrap()
            .format("%Y-%m-%d")
            .to_string();
        *days.entry(day).or_default() += 1;
        let title = claim
            .get_document("event")
            .unwrap()
            .get_str("title")
            .unwrap()
            .to_owned();
        let event = events
            .entry(claim.get_str("event_id").unwrap().to_owned())
            .or_insert((0, at, title.clone()));
        event.0 += 1;
        if at > event.1 {
            (event.1, event.2) = (at, title);
        }
    }
    let counts = |counts: HashMap<String, i64>| -> Document {
        counts
            .into_iter()
            .map(|(k, n)| (k, Bson::Int64(n)))
            .collect()
    };
    doc! {
        "_id": uuid::Uuid::now_v7().to_string(),
        "status": counts(status),
        "granted": counts(granted),
        "days": days.into_iter().map(|(day, n)| doc! { "day": day, "n": n }).collect::<Vec<_>>(),
        "events": events.into_iter().map(|(event_id, (n, at, title))| doc! {
            "event_id": event_id, "n": n, "newest_at": at, "title": title,
        }).collect::<Vec<_>>(),
    }
}
