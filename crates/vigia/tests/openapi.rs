//! The OpenAPI document lists every route with its errors.

mod common;

use common::*;
use serde_json::Value;
use vigia_core::Timestamp;

/// The external contract (DESIGN.md §5 and the foundation issue). A route added to the
/// server must be added here and to the document; a route listed here must be in it.
const CONTRACT: &[(&str, &str)] = &[
    ("post", "/api/v1/readings"),
    ("post", "/api/v2/write"),
    ("post", "/write"),
    ("get", "/api/v1/ingest/rejections"),
    ("get", "/api/v1/sensors"),
    ("get", "/api/v1/sensors/{key}"),
    ("put", "/api/v1/sensors/{key}"),
    ("get", "/api/v1/sensors/{key}/readings"),
    ("get", "/api/v1/sensors/{key}/excursions"),
    ("get", "/api/v1/alerts"),
    ("get", "/api/v1/alerts/{id}"),
    ("post", "/api/v1/alerts/{id}/ack"),
    ("post", "/api/v1/alerts/{id}/resolve"),
    ("post", "/api/v1/keys"),
    ("get", "/api/v1/keys"),
    ("delete", "/api/v1/keys/{id}"),
    ("get", "/api/v1/dead-letters"),
    ("get", "/api/v1/dead-letters/{id}"),
    ("delete", "/api/v1/dead-letters/{id}"),
    ("post", "/api/v1/dead-letters/{id}/replay"),
    ("get", "/api/v1/products"),
    ("get", "/api/v1/products/{code}"),
    ("put", "/api/v1/products/{code}"),
    ("delete", "/api/v1/products/{code}"),
    ("post", "/api/v1/prices/import"),
    ("get", "/api/v1/prices"),
    ("get", "/api/v1/jobs"),
    ("post", "/api/v1/robots"),
    ("get", "/api/v1/robots"),
    ("get", "/api/v1/robots/{id}"),
    ("get", "/api/v1/robots/{id}/executions"),
    ("post", "/api/v1/robots/{id}/cancel"),
    ("post", "/api/v1/robots/{id}/retry"),
    ("post", "/api/v1/robots/{id}/progress"),
    ("post", "/api/v1/robots/{id}/complete"),
    ("post", "/api/v1/robots/{id}/fail"),
    ("get", "/api/v1/modules"),
    ("get", "/api/v1/modules/{module}"),
    ("put", "/api/v1/modules/{module}"),
    ("put", "/api/v1/modules/{module}/instances/{name}"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/ws"),
    ("get", "/api/v1/events"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/openapi.json"),
    ("get", "/"),
    ("get", "/objects/{key}"),
    ("put", "/objects/{key}"),
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

async fn document(server: &TestServer) -> Value {
    client()
        .get(server.url("/api/openapi.json"))
        .send()
        .await
        .expect("GET the document")
        .json()
        .await
        .expect("the document is JSON")
}

/// Follows a `$ref` to `#/components/schemas/…`; other schemas come back as they are.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected $ref {r}"));
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

fn param<'a>(doc: &'a Value, method: &str, path: &str, name: &str) -> &'a Value {
    let params = doc["paths"][path][method]["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("{method} {path}: no parameters"));
    let found: Vec<&Value> = params.iter().filter(|p| p["name"] == name).collect();
    assert_eq!(found.len(), 1, "{method} {path}: `{name}` listed once");
    found[0]
}

/// The branch of a `oneOf`/`anyOf` with this `type`.
fn branch<'a>(union: &'a Value, keyword: &str, ty: &str) -> &'a Value {
    union[keyword]
        .as_array()
        .unwrap_or_else(|| panic!("no {keyword} in {union}"))
        .iter()
        .find(|b| b["type"] == ty)
        .unwrap_or_else(|| panic!("no {ty} branch in {union}"))
}

fn assert_sensor_key(schema: &Value, at: &str) {
    assert_eq!(schema["type"], "string", "{at}");
    assert_eq!(schema["minLength"], 1, "{at}");
    assert_eq!(schema["maxLength"], 128, "{at}");
    assert_eq!(
        schema["pattern"],
        vigia_core::sensor::SENSOR_KEY_PATTERN,
        "{at}"
    );
}

/// The constraints the server enforces are stated, starting with the four places
/// Schemathesis found where a request valid by the document was refused.
#[tokio::test(flavor = "multi_thread")]
async fn document_states_the_constraints_the_server_enforces() {
    let server = TestServer::start(Options::default());
    let doc = document(&server).await;

    // GET /api/v1/alerts?limit=0 was refused while the document allowed it.
    let limit = &param(&doc, "get", "/api/v1/alerts", "limit")["schema"];
    assert_eq!(
        (&limit["minimum"], &limit["maximum"]),
        (&1.into(), &1000.into())
    );
    let state = &param(&doc, "get", "/api/v1/alerts", "state")["schema"];
    assert_eq!(state["pattern"], "^(open|acked|resolved)?$");

    // GET …/readings?to= was refused: `from` and `to` are date-times or epoch ms.
    let series = "/api/v1/sensors/{key}/readings";
    for name in ["from", "to"] {
        let schema = &param(&doc, "get", series, name)["schema"];
        assert_eq!(
            branch(schema, "oneOf", "string")["format"],
            "date-time",
            "{name}"
        );
        assert_eq!(
            branch(schema, "oneOf", "integer")["format"],
            "int64",
            "{name}"
        );
    }
    let limit = &param(&doc, "get", series, "limit")["schema"];
    assert_eq!(
        (&limit["minimum"], &limit["maximum"]),
        (&1.into(), &10000.into())
    );
    let metric = &param(&doc, "get", series, "metric")["schema"];
    assert_eq!(
        (&metric["minLength"], &metric["maxLength"]),
        (&1.into(), &64.into())
    );
    assert!(param(&doc, "get", series, "step")["schema"]["pattern"].is_string());

    // Every `{key}` is a sensor key.
    for (method, path) in [
        ("get", "/api/v1/sensors/{key}"),
        ("put", "/api/v1/sensors/{key}"),
        ("get", series),
    ] {
        let key = param(&doc, method, path, "key");
        assert_eq!(key["required"], true);
        assert_sensor_key(&key["schema"], &format!("{method} {path}"));
    }
    for (method, path) in [
        ("get", "/api/v1/alerts/{id}"),
        ("post", "/api/v1/alerts/{id}/ack"),
        ("post", "/api/v1/alerts/{id}/resolve"),
    ] {
        let id = &param(&doc, method, path, "id")["schema"];
        assert_eq!(
            (&id["type"], &id["format"]),
            (&"integer".into(), &"int64".into())
        );
        assert_eq!(id["maximum"], i64::MAX, "{method} {path}");
    }

    // POST /api/v1/readings with empty strings was refused: the body states its rules.
    let body = resolve(
        &doc,
        &doc["paths"]["/api/v1/readings"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"],
    );
    let one = resolve(&doc, &body["oneOf"][0]);
    let many = &body["oneOf"][1];
    assert_eq!(resolve(&doc, &many["items"]), one);
    assert_eq!(
        (&many["minItems"], &many["maxItems"]),
        (&1.into(), &100_000.into())
    );
    assert_eq!(one["additionalProperties"], false);
    assert_eq!(one["required"], serde_json::json!(["sensor", "value"]));
    assert_sensor_key(&one["properties"]["sensor"], "reading sensor");
    let metric = &one["properties"]["metric"];
    assert_eq!(
        (&metric["minLength"], &metric["maxLength"]),
        (&1.into(), &64.into())
    );
    assert_eq!(metric["pattern"], vigia_ingest::decode::METRIC_PATTERN);
    let ts = &one["properties"]["ts"];
    assert_eq!(branch(ts, "oneOf", "string")["format"], "date-time");
    let epoch = branch(ts, "oneOf", "integer");
    assert_eq!(epoch["minimum"], Timestamp::RFC3339_MIN.0);
    assert_eq!(epoch["maximum"], Timestamp::RFC3339_MAX.0);
    branch(ts, "oneOf", "null");
    assert_eq!(one["properties"]["value"]["type"], "number");

    // PUT /api/v1/sensors/{key} with an empty rule metric was refused.
    let spec = resolve(
        &doc,
        &doc["paths"]["/api/v1/sensors/{key}"]["put"]["requestBody"]["content"]["application/json"]
            ["schema"],
    );
    assert_eq!(spec["additionalProperties"], false);
    assert_eq!(spec["properties"]["name"]["maxLength"], 200);
    assert_eq!(spec["properties"]["unit"]["maxLength"], 32);
    assert_eq!(spec["properties"]["stock"]["minimum"], 0);
    assert_eq!(spec["properties"]["rules"]["maxItems"], 32);
    let rule = resolve(&doc, &spec["properties"]["rules"]["items"]);
    let shapes = rule["anyOf"].as_array().expect("rule shapes");
    // threshold (min | max), rate, duration (min | max), anomaly, offline.
    assert_eq!(shapes.len(), 7);
    for shape in shapes {
        assert_eq!(shape["additionalProperties"], false, "{shape}");
        let metric = &shape["properties"]["metric"];
        assert_eq!(
            (&metric["minLength"], &metric["maxLength"]),
            (&1.into(), &64.into())
        );
        assert_eq!(shape["properties"]["name"]["maxLength"], 64);
    }
    let rate = shapes
        .iter()
        .find(|s| s["properties"]["kind"]["enum"][0] == "rate")
        .expect("a rate shape");
    assert_eq!(rate["properties"]["max_per_min"]["exclusiveMinimum"], 0);
}

async fn status_of(res: reqwest::Response, what: &str) -> u16 {
    let status = res.status().as_u16();
    if status >= 400 {
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
    }
    status
}

async fn get_status(server: &TestServer, path: &str) -> u16 {
    let res = client()
        .get(server.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET");
    status_of(res, path).await
}

async fn put_status(server: &TestServer, key: &str, body: &Value) -> u16 {
    let res = client()
        .put(server.url(&format!("/api/v1/sensors/{key}")))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .expect("PUT");
    status_of(res, &format!("PUT {key} {body}")).await
}

/// Requests at the documented boundaries are accepted; just outside, refused with a
/// problem+json 4xx. Lengths count characters, as JSON Schema does.
#[tokio::test(flavor = "multi_thread")]
async fn documented_boundaries_hold() {
    use serde_json::json;
    let server = TestServer::start(Options {
        env: any_history(),
        ..Options::default()
    });

    for (limit, want) in [(1, 200), (1000, 200), (0, 400), (1001, 400)] {
        let path = format!("/api/v1/alerts?limit={limit}");
        assert_eq!(get_status(&server, &path).await, want, "{path}");
    }
    assert_eq!(get_status(&server, "/api/v1/alerts?state=").await, 200);
    assert_eq!(
        get_status(&server, "/api/v1/alerts?state=opened").await,
        400
    );

    assert_eq!(put_status(&server, "S", &json!({})).await, 201);
    let series = "/api/v1/sensors/S/readings";
    for (query, want) in [
        ("limit=1", 200),
        ("limit=10000", 200),
        ("limit=0", 400),
        ("limit=10001", 400),
        ("to=2026-11-23T10:00:00Z", 200),
        ("to=1795428000000", 200),
        ("to=-9223372036854775808", 200),
        ("to=", 400),
        ("from=", 400),
        ("metric=", 400),
        (&format!("metric={}", "µ".repeat(64)), 200),
        (&format!("metric={}", "µ".repeat(65)), 400),
        ("step=1", 200),
        ("step=99999999d", 200),
        ("step=1.5m", 200),
        ("step=", 400),
        ("step=1x", 400),
    ] {
        let path = format!("{series}?{query}");
        assert_eq!(get_status(&server, &path).await, want, "{path}");
    }

    let readings = server.url("/api/v1/readings");
    for (body, want) in [
        (json!({"sensor": "é".repeat(128), "value": 1}), 202),
        (json!({"sensor": "é".repeat(129), "value": 1}), 422),
        (json!({"sensor": "", "value": 1}), 422),
        (
            json!({"sensor": "a", "metric": "µ".repeat(64), "value": 1}),
            202,
        ),
        (json!({"sensor": "a", "metric": "", "value": 1}), 422),
        (
            json!({"sensor": "a", "ts": Timestamp::RFC3339_MIN.0, "value": 1}),
            202,
        ),
        (
            json!({"sensor": "a", "ts": Timestamp::RFC3339_MIN.0 - 1, "value": 1}),
            422,
        ),
        (
            json!({"sensor": "a", "ts": "0000-01-01T00:00:00Z", "value": 1}),
            202,
        ),
        (
            json!({"sensor": "a", "ts": null, "metric": null, "value": 1}),
            202,
        ),
        (json!({"sensor": "a", "ts": "", "value": 1}), 422),
        (json!([]), 422),
    ] {
        let res = post_json(&readings, &body).await;
        assert_eq!(status_of(res, &body.to_string()).await, want, "{body}");
    }

    for (key, body, want) in [
        ("ñ".repeat(128), json!({}), 201),
        ("ñ".repeat(129), json!({}), 422),
        (
            "R".into(),
            json!({"rules": [{"kind": "threshold", "max": 1, "severity": "warning", "metric": "µ".repeat(64)}]}),
            201,
        ),
        (
            "R".into(),
            json!({"rules": [{"kind": "threshold", "max": 1, "severity": "warning", "metric": ""}]}),
            422,
        ),
        (
            "R".into(),
            json!({"rules": [{"kind": 0, "max": 1, "severity": "warning"}]}),
            422,
        ),
        (
            "R".into(),
            json!({"rules": [{"kind": "rate", "max_per_min": 0, "severity": "warning"}]}),
            422,
        ),
        ("R".into(), json!({"stock": -1}), 422),
        ("R".into(), json!({"unit": "°".repeat(32)}), 200),
        ("R".into(), json!({"unit": "°".repeat(33)}), 422),
    ] {
        assert_eq!(
            put_status(&server, &key, &body).await,
            want,
            "{key}: {body}"
        );
    }
}
