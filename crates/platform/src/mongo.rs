//! MongoDB client setup with timeouts that fail fast instead of hanging a request, and the error
//! classifications every store needs.

use std::time::Duration;

use futures::TryStreamExt;
use futures::future::BoxFuture;
use mongodb::bson::doc;
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};

use crate::admin::ReadinessCheck;
use crate::config::MongoConfig;

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

/// Builds a client. It connects lazily: a process starts (and reports not ready) while MongoDB is
/// down, and becomes ready once it answers.
pub async fn connect(config: &MongoConfig, app_name: &str) -> mongodb::error::Result<Database> {
    let mut options = ClientOptions::parse(&config.uri).await?;
    options.app_name.get_or_insert_with(|| app_name.to_owned());
    options
        .connect_timeout
        .get_or_insert(Duration::from_secs(5));
    options
        .server_selection_timeout
        .get_or_insert(Duration::from_secs(5));
    options.max_pool_size.get_or_insert(64);
    let client = Client::with_options(options)?;
    Ok(client.database(&config.database))
}

/// Whether `error` is a unique-index violation (from a plain write, a bulk write or a command).
pub fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .is_some_and(|errors| errors.iter().any(|w| w.code == DUPLICATE_KEY)),
        ErrorKind::BulkWrite(e) => e.write_errors.values().any(|w| w.code == DUPLICATE_KEY),
        _ => false,
    }
}

/// Whether the store could not be reached at all (as opposed to refusing a request).
pub fn is_unavailable(error: &mongodb::error::Error) -> bool {
    matches!(
        error.kind.as_ref(),
        ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
    )
}

/// Dependency probe (`/healthz/dependencies`, `erp_dependency_up`): the database answers `ping`.
pub struct MongoCheck {
    database: Database,
}

impl MongoCheck {
    pub fn new(database: Database) -> Self {
        Self { database }
    }
}

impl ReadinessCheck for MongoCheck {
    fn name(&self) -> &str {
        "mongodb"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.database
                .run_command(doc! { "ping": 1 })
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }
}

/// The filter selecting items after `cursor` in a newest-first listing sorted by
/// (`time_field` desc, `_id` desc).
pub fn after_cursor(
    time_field: &str,
    cursor: &crate::pagination::Cursor,
) -> mongodb::bson::Document {
    let at = mongodb::bson::DateTime::from_millis(cursor.at_millis);
    doc! {
        "$or": [
            { time_field: { "$lt": at } },
            { time_field: at, "_id": { "$lt": &cursor.id } },
        ]
    }
}

/// Escapes `text` for use inside a regular expression (substring search).
pub fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if "\\^$.|?*+()[]{}/-".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

pub fn to_bson_time(at: chrono::DateTime<chrono::Utc>) -> mongodb::bson::DateTime {
    mongodb::bson::DateTime::from_millis(at.timestamp_millis())
}

pub fn from_bson_time(at: mongodb::bson::DateTime) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or_default()
}

/// One page of a newest-first listing of `collection`: the documents matching every clause of
/// `clauses` (all of them when empty) after `cursor`, sorted by (`time_field` desc, `_id` desc);
/// `key` gives a document's (time, id), `convert` its item.
pub async fn find_page<D, T>(
    collection: &mongodb::Collection<D>,
    mut clauses: Vec<mongodb::bson::Document>,
    time_field: &str,
    cursor: Option<&crate::pagination::Cursor>,
    limit: u32,
    key: impl Fn(&D) -> (mongodb::bson::DateTime, String),
    convert: impl Fn(D) -> T,
) -> mongodb::error::Result<crate::pagination::Page<T>>
where
    D: serde::de::DeserializeOwned + Send + Sync,
{
    if let Some(cursor) = cursor {
        clauses.push(after_cursor(time_field, cursor));
    }
    let filter = if clauses.is_empty() {
        doc! {}
    } else {
        doc! { "$and": clauses }
    };
    let docs: Vec<D> = collection
        .find(filter)
        .sort(doc! { time_field: -1, "_id": -1 })
        .limit(i64::from(limit) + 1)
        .await?
        .try_collect()
        .await?;
    Ok(page_from_overfetch(docs, limit, key, convert))
}

/// Cuts a `limit + 1` fetch into a page and the cursor of its last item; `key` gives an item's
/// (time, id) sort key.
pub fn page_from_overfetch<D, T>(
    mut docs: Vec<D>,
    limit: u32,
    key: impl Fn(&D) -> (mongodb::bson::DateTime, String),
    convert: impl Fn(D) -> T,
) -> crate::pagination::Page<T> {
    let has_more = docs.len() > limit as usize;
    docs.truncate(limit as usize);
    let next_cursor = if has_more {
        docs.last().map(|last| {
            let (at, id) = key(last);
            crate::pagination::Cursor {
                at_millis: at.timestamp_millis(),
                id,
            }
            .encode()
        })
    } else {
        None
    };
    crate::pagination::Page {
        items: docs.into_iter().map(convert).collect(),
        next_cursor,
    }
}
