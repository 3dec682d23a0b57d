//! Round trips through the real MongoDB-compatible server and Redis with the platform helpers.

use erp_platform::config::{MongoConfig, RedisConfig};
use erp_platform::mongo;
use erp_platform::redis::RedisStore;
use erp_testkit::{mongodb_uri, redis_url, unique_name};
use mongodb::IndexModel;
use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;
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
    let found = players
        .find_one(doc! { "_id": "p1" })
        .await
        .unwrap()
        .unwrap();
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
    let p1 = players
        .find_one(doc! { "_id": "p1" })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        p1.get_str("email").unwrap(),
        "a@example.com",
        "left as it was"
    );
    assert_eq!(players.count_documents(doc! {}).await.unwrap(), 1);

    // A committed transaction writes both documents.
    let mut session = database.client().start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    players
        .insert_one(doc! { "_id": "t1", "email": "t1@example.com" })
        .session(&mut session)
        .await
        .unwrap();
    players
        .update_one(doc! { "_id": "p1" }, doc! { "$inc": { "level": 1 } })
        .session(&mut session)
        .await
        .unwrap();
    session.commit_transaction().await.unwrap();
    assert!(
        players
            .find_one(doc! { "_id": "t1" })
            .await
            .unwrap()
            .is_some()
    );
    let p1 = players
        .find_one(doc! { "_id": "p1" })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p1.get_i32("level").unwrap(), 4);

    // An aborted one writes nothing.
    session.start_transaction().await.unwrap();
    players
        .insert_one(doc! { "_id": "t2", "email": "t2@example.com" })
        .session(&mut session)
        .await
        .unwrap();
    players
        .update_one(doc! { "_id": "p1" }, doc! { "$inc": { "level": 10 } })
        .session(&mut session)
        .await
        .unwrap();
    session.abort_transaction().await.unwrap();
    assert!(
        players
            .find_one(doc! { "_id": "t2" })
            .await
            .unwrap()
            .is_none()
    );
    let p1 = players
        .find_one(doc! { "_id": "p1" })
        .await
        .unwrap()
        .unwrap();
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
