//! The OpenAPI document lists every route with its errors.

mod common;

use common::*;
use serde_json::Value;

/// The external contract (DESIGN.md §5 and the foundation issue). A route added to the
/// server must be added here and to the document; a route listed here must be in it.
const CONTRACT: &[(&str, &str)] = &[
    ("post", "/api/v1/readings"),
    ("get", "/api/v1/sensors"),
    ("get", "/api/v1/sensors/{key}"),
    ("put", "/api/v1/sensors/{key}"),
    ("get", "/api/v1/sensors/{key}/readings"),
    ("get", "/api/v1/alerts"),
    ("get", "/api/v1/alerts/{id}"),
    ("post", "/api/v1/alerts/{id}/ack"),
    ("post", "/api/v1/alerts/{id}/resolve"),
    ("post", "/api/v1/keys"),
    ("get", "/api/v1/keys"),
    ("delete", "/api/v1/keys/{id}"),
    ("get", "/api/v1/jobs"),
    ("get", "/api/v1/ws"),
    ("get", "/api/v1/events"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/openapi.json"),
    ("get", "/"),
    ("get", "/assets/{file}"),
];

fn documented(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                out.push((method.to_string(), path.clone()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn document_lists_exactly_the_contract_routes_with_their_errors() {
    let server = TestServer::start(Options::default());
    let doc: Value = client()
        .get(server.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut want: Vec<(String, String)> = CONTRACT
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    want.sort();
    assert_eq!(
        documented(&doc),
        want,
        "routes in the document vs the contract"
    );

    for (method, path) in documented(&doc) {
        let op = &doc["paths"][&path][&method];
        let responses = op["responses"].as_object().unwrap();
        assert!(!responses.is_empty(), "{method} {path}: no responses");
        let secured = op
            .get("security")
            .is_some_and(|s| !s.as_array().unwrap().is_empty());
        if path.starts_with("/api/v1/") {
            assert!(secured, "{method} {path}: API routes need a key");
            assert!(
                responses.contains_key("401"),
                "{method} {path}: 401 undocumented"
            );
            assert!(
                responses.contains_key("403"),
                "{method} {path}: 403 undocumented (every API route is role-checked)"
            );
            let permission = op["x-vigia-permission"].as_str();
            assert!(
                matches!(
                    permission,
                    Some("ingest" | "read" | "operate" | "administer")
                ),
                "{method} {path}: x-vigia-permission is {permission:?}"
            );
        }
        for (code, response) in responses {
            if code.starts_with('4') || code.starts_with('5') {
                let content = response["content"].as_object();
                assert!(
                    content.is_some_and(|c| c.contains_key("application/problem+json")),
                    "{method} {path} {code}: errors are problem+json"
                );
            }
        }
        // Every documented route answers (not 404/405) at its documented method.
        let concrete = path
            .replace("{key}", "CF-1")
            .replace("{id}", "1")
            .replace("{file}", "app.js");
        let req = client().request(
            method.to_uppercase().parse().unwrap(),
            server.url(&concrete),
        );
        let status = req.send().await.unwrap().status().as_u16();
        assert!(status != 404 || path.contains('{'), "{method} {path}: 404");
        assert_ne!(status, 405, "{method} {path}: 405");
    }
}

/// Routes can only be added through `utoipa_axum::routes!`, which documents them; a
/// plain axum `.route(` in the web crate would bypass the document.
#[test]
fn no_route_bypasses_the_document() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/src");
    let mut offenders = Vec::new();
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                if text.contains(".route(")
                    || text.contains(".nest(")
                    || text.contains(".route_service(")
                {
                    offenders.push(path.display().to_string());
                }
            }
        }
    }
    assert!(offenders.is_empty(), "undocumented routes in {offenders:?}");
}
