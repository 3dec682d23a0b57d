//! The committed API documentation cannot drift from what the gateway serves:
//!
//! - `docs/openapi.json` must equal, as a JSON value, the document the running gateway serves at
//!   `GET /api/v1/openapi.json`. `ERP_UPDATE_OPENAPI=1` rewrites the file from the served document
//!   instead of comparing.
//! - every operation of the served document (method and path, without `/api/v1`) must be named in
//!   `docs/api.md` as `` `METHOD /path` ``, so the reference cannot silently miss a route.

use std::path::{Path, PathBuf};

use axum::http::Method;
use serde_json::Value;
use tower::ServiceExt;

const REGENERATE: &str =
    "ERP_UPDATE_OPENAPI=1 cargo nextest run -p erp-gateway --test it openapi_document";

/// The operations an OpenAPI path item may hold, in the document's lower case.
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

/// The document as the gateway serves it (its router in process: no service is needed): its raw
/// text and its JSON value.
async fn served_document() -> (String, Value) {
    let stores = erp_testkit::TestStores::new("openapi");
    let response = crate::router::router(&stores)
        .oneshot(crate::router::request(Method::GET, "/api/v1/openapi.json"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET /api/v1/openapi.json");
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).expect("the served OpenAPI document is UTF-8");
    let value = serde_json::from_str(&text).expect("the served OpenAPI document is JSON");
    (text, value)
}

/// Where `actual` differs from `expected`, as JSON pointers (at most `limit` of them).
fn differences(expected: &Value, actual: &Value, at: &str, found: &mut Vec<String>, limit: usize) {
    if found.len() >= limit || expected == actual {
        return;
    }
    let escape = |key: &str| key.replace('~', "~0").replace('/', "~1");
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e {
                let here = format!("{at}/{}", escape(key));
                match a.get(key) {
                    Some(other) => differences(value, other, &here, found, limit),
                    None => found.push(format!("{here}: in docs/openapi.json, not served")),
                }
                if found.len() >= limit {
                    return;
                }
            }
            for key in a.keys().filter(|key| !e.contains_key(*key)) {
                if found.len() >= limit {
                    return;
                }
                found.push(format!(
                    "{at}/{}: served, not in docs/openapi.json",
                    escape(key)
                ));
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (index, (value, other)) in e.iter().zip(a).enumerate() {
                differences(value, other, &format!("{at}/{index}"), found, limit);
            }
        }
        _ => found.push(format!(
            "{}: docs/openapi.json has {expected}, the gateway serves {actual}",
            if at.is_empty() { "/" } else { at }
        )),
    }
}

#[tokio::test]
async fn docs_openapi_json_is_the_served_document() {
    let (text, served) = served_document().await;
    let path = docs_dir().join("openapi.json");

    if std::env::var("ERP_UPDATE_OPENAPI").is_ok_and(|value| value == "1") {
        let mut text = text;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        std::fs::write(&path, text)
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
        eprintln!("rewrote {} from the served document", path.display());
        return;
    }

    let committed = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read {}: {error}\nGenerate it from the running gateway with:\n  {REGENERATE}",
            path.display()
        )
    });
    let committed: Value = serde_json::from_str(&committed).unwrap_or_else(|error| {
        panic!(
            "{} is not JSON: {error}\nRegenerate it with:\n  {REGENERATE}",
            path.display()
        )
    });
    if committed != served {
        let mut found = Vec::new();
        differences(&committed, &served, "", &mut found, 20);
        panic!(
            "docs/openapi.json differs from the document the gateway serves at \
             GET /api/v1/openapi.json (first differences below).\n\
             If the API change is intended, regenerate the file and commit it with the change:\n  \
             {REGENERATE}\n\
             and update docs/api.md to match.\n\n{}",
            found.join("\n")
        );
    }
}

#[tokio::test]
async fn docs_api_md_names_every_served_operation() {
    let (_, served) = served_document().await;
    let path = docs_dir().join("api.md");
    let reference = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));

    let paths = served["paths"]
        .as_object()
        .expect("the served document has paths");
    assert!(!paths.is_empty(), "the served document has no paths");
    let mut missing = Vec::new();
    for (template, item) in paths {
        let route = template.strip_prefix("/api/v1").unwrap_or_else(|| {
            panic!("served path {template} is not under /api/v1");
        });
        for method in METHODS.iter().filter(|method| item.get(**method).is_some()) {
            let operation = format!("`{} {route}`", method.to_uppercase());
            if !reference.contains(&operation) {
                missing.push(operation);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/api.md does not document these operations of the served OpenAPI document \
         (name each as `METHOD /path`, the path without /api/v1, e.g. `GET /events/{{id}}`):\n{}",
        missing.join("\n")
    );
}
