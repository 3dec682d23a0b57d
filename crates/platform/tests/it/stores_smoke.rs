//! Round trips through the real MongoDB-compatible server and Redis with the platform helpers.

use erp_platform::config::{MongoConfig, RedisConfig};
use erp_platform::mongo;
use erp_platform::redis::RedisStore;
use erp_testkit::{mongodb_uri, redis_url, unique_name};
use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{ClientSession, Collection, IndexModel};
use redis::AsyncCommands;

async fn database() -> mongodb::Database {
    mongo::connect(
        &MongoConfig {
            uri: mongodb_uri(),
            database: unique_name("smoke"),
        },
        "smoke-test",
    )
    .await
    .unwrap()
}

async fn find(players: &Collection<Document>, id: &str) -> Option<Document> {
    players.find_one(doc! { "_id": id }).await.unwrap()
}

enum Outcome {
    Commit,
    Abort,
}

/// In one transaction: inserts player `id` and raises p1's level by `raise`; then ends it.
async fn insert_and_raise_level(
    players: &Collection<Document>,
    session: &mut ClientSession,
    id: &str,
    raise: i32,
    outcome: Outcome,
) {
    session.start_transaction().await.unwrap();
    players
        .insert_one(doc! { "_id": id, "email": format!("{id}@example.com") })
        .session(&mut *session)
        .await
        .unwrap();
    players
        .update_one(doc! { "_id": "p1" }, doc! { "$inc": { "level": raise } })
        .session(&mut *session)
        .await
        .unwrap();
    match outcome {
        Outcome::Commit => session.commit_transaction().await.unwrap(),
        Outcome::Abort => session.abort_transaction().await.unwrap(),
    }
}

#[tokio::test]
async fn mongodb_round_trip_unique_index_and_transactions() {
    let database = database().await;
    let players = database.collection::<Document>("players");
    players
        .create_index(
            IndexModel::builder()
                .keys(doc! { "email": 1 })
                .options(IndexOptions::builder().unique(true).build())
                .build(),
        )
        .await
        .unwrap();

    players
        .insert_one(doc! { "_id": "p1", "email": "a@example.com", "level": 3 })
        .await
        .unwrap();
    let found = find(&players, "p1").await.unwrap();
    assert_eq!(found.get_i32("level").unwrap(), 3);

    let duplicate = players
        .insert_one(doc! { "_id": "p2", "email": "a@example.com" })
        .await
        .unwrap_err();
    assert!(mongo::is_duplicate_key(&duplicate), "{duplicate:?}");
    // A write that fails for another reason (here `$inc` on a string) is no duplicate key.
    let other_error = players
        .update_one(doc! { "_id": "p1" }, doc! { "$inc": { "email": 1 } })
        .await
        .unwrap_err();
    assert!(!mongo::is_duplicate_key(&other_error), "{other_error:?}");
    let p1 = find(&players, "p1").await.unwrap();
    assert_eq!(
        p1.get_str("email").unwrap(),
        "a@example.com",
        "left as it was"
    );
    assert_eq!(players.count_documents(doc! {}).await.unwrap(), 1);

    // A committed transaction writes both documents.
    let mut session = database.client().start_session().await.unwrap();
    insert_and_raise_level(&players, &mut session, "t1", 1, Outcome::Commit).await;
    assert!(find(&players, "t1").await.is_some());
    let p1 = find(&players, "p1").await.unwrap();
    assert_eq!(p1.get_i32("level").unwrap(), 4);

    // An aborted one writes nothing.
    insert_and_raise_level(&players, &mut session, "t2", 10, Outcome::Abort).await;
    assert!(find(&players, "t2").await.is_none());
    let p1 = find(&players, "p1").await.unwrap();
    assert_eq!(p1.get_i32("level").unwrap(), 4);

    database.drop().await.unwrap();
}

#[tokio::test]
async fn redis_round_trip_under_the_key_prefix() {
    let prefix = format!("{}:", unique_name("smoke"));
    let store = RedisStore::connect(&RedisConfig {
        url: redis_url(),
        key_prefix: prefix.clone(),
    })
    .unwrap();
    let key = store.key("greeting");
    assert_eq!(key, format!("{prefix}greeting"));
    let mut connection = store.connection();
    let () = connection.set_ex(&key, "hello", 60).await.unwrap();
    let value: Option<String> = connection.get(&key).await.unwrap();
    assert_eq!(value.as_deref(), Some("hello"));
    let ttl: i64 = connection.ttl(&key).await.unwrap();
    assert!((1..=60).contains(&ttl), "{ttl}");
    let removed: i64 = connection.del(&key).await.unwrap();
    assert_eq!(removed, 1);
    let value: Option<String> = connection.get(&key).await.unwrap();
    assert_eq!(value, None);
}
