//! Robots end to end, on the real binary (roles `all`, so the orchestrator runs in the
//! server) and the embedded store: an `echo` robot completes with its input as output;
//! `?wait` answers with the final state; idempotent creates; an `http` module whose
//! instance is a real HTTP worker started here, reporting through the routes, with a
//! stale attempt's report refused (409) and recorded, retries, a dead robot and its
//! re-queue; and the bad paths (401, 403, 404, 409, 413, 422) as problem+json.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use common::*;
use serde_json::{json, Value};

/// Settings that make retries quick enough to watch.
fn quick_retries() -> Options {
    Options {
        env: vec![
            ("VIGIA_ROBOTS__RETRY_BASE_DELAY".into(), "10ms".into()),
            ("VIGIA_ROBOTS__RETRY_MAX_DELAY".into(), "50ms".into()),
            ("VIGIA_ROBOTS__MAX_ATTEMPTS".into(), "3".into()),
            ("VIGIA_ROBOTS__POLL_EVERY".into(), "20ms".into()),
        ],
        ..Options::default()
    }
}

async fn send(
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut request = client().request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.expect("request")
}

async fn problem(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status(), status);
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "errors are problem+json"
    );
    res.json().await.expect("problem body")
}

async fn robot(server: &TestServer, id: i64) -> Value {
    get_json(&server.url(&format!("/api/v1/robots/{id}"))).await
}

async fn until_status(server: &TestServer, id: i64, status: &str) -> Value {
    eventually(Duration::from_secs(20), status, || async {
        let r = robot(server, id).await;
        (r["status"] == status).then_some(r)
    })
    .await
}

async fn key_with_role(server: &TestServer, role: &str) -> String {
    let res = post_json(
        &server.url("/api/v1/keys"),
        &json!({"name": format!("a {role}"), "role": role}),
    )
    .await;
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_robots_complete_wait_and_are_idempotent() {
    let server = TestServer::start(Options::default());
    let input = json!({"text": "hola\nmundo", "n": [1, 2, {"deep": true}]});

    let res = post_json(
        &server.url("/api/v1/robots"),
        &json!({"module": "echo", "input": input}),
    )
    .await;
    assert_eq!(res.status(), 202);
    let accepted: Value = res.json().await.unwrap();
    assert_eq!(accepted["status"], "queued");
    let id = accepted["id"].as_i64().unwrap();
    let done = until_status(&server, id, "succeeded").await;
    assert_eq!(done["output"], input, "echo returns its input");
    assert_eq!(done["attempt"], 1);
    let executions = get_json(&server.url(&format!("/api/v1/robots/{id}/executions"))).await;
    assert_eq!(executions.as_array().unwrap().len(), 1);
    assert_eq!(executions[0]["status"], "succeeded");
    assert_eq!(executions[0]["stale_reports"], 0);

    // `?wait`: the final state in the same call.
    let res = post_json(
        &server.url("/api/v1/robots?wait=10s"),
        &json!({"module": "echo", "input": {"fast": 1}, "priority": 5}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let finished: Value = res.json().await.unwrap();
    assert_eq!(finished["status"], "succeeded");
    assert_eq!(finished["output"], json!({"fast": 1}));
    assert_eq!(finished["priority"], 5);

    // Idempotency: the same key and body return the same robot, in any key order.
    let body = json!({"module": "echo", "input": {"a": 1, "b": 2}, "idempotency_key": "order-17"});
    let first: Value = post_json(&server.url("/api/v1/robots"), &body)
        .await
        .json()
        .await
        .unwrap();
    let reordered = r#"{"idempotency_key":"order-17","input":{"b":2,"a":1},"module":"echo"}"#;
    let res = client()
        .post(server.url("/api/v1/robots"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(reordered)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["id"], first["id"], "the original robot");
    let other = json!({"module": "echo", "input": {"a": 2}, "idempotency_key": "order-17"});
    let p = problem(post_json(&server.url("/api/v1/robots"), &other).await, 422).await;
    assert_eq!(p["errors"][0]["field"], "idempotency_key", "{p}");

    // The list: newest first, filtered, paged with a `next` link.
    let res = send(
        reqwest::Method::GET,
        &server.url("/api/v1/robots?module=echo&limit=1"),
        TOKEN,
        None,
    )
    .await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("link"), "more than one page");
    let page: Value = res.json().await.unwrap();
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(page[0]["id"], first["id"], "newest first");
    eventually(
        Duration::from_secs(20),
        "three succeeded robots",
        || async {
            let all = get_json(&server.url("/api/v1/robots?status=succeeded")).await;
            (all.as_array().unwrap().len() == 3).then_some(())
        },
    )
    .await;

    // The modules list shows the built-in.
    let modules = get_json(&server.url("/api/v1/modules")).await;
    assert!(modules
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "echo" && m["kind"] == "in_process"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_as_problems() {
    let server = TestServer::start(Options::default());
    let robots = server.url("/api/v1/robots");
    let body = json!({"module": "echo", "input": {"x": 1}});

    // 401: no key, a wrong key.
    let res = client().post(&robots).json(&body).send().await.unwrap();
    problem(res, 401).await;
    problem(
        send(reqwest::Method::POST, &robots, "vg_wrong", Some(&body)).await,
        401,
    )
    .await;

    // 403: a viewer reads but may not create; only admins read the audit log.
    let viewer = key_with_role(&server, "viewer").await;
    problem(
        send(reqwest::Method::POST, &robots, &viewer, Some(&body)).await,
        403,
    )
    .await;
    let res = send(reqwest::Method::GET, &robots, &viewer, None).await;
    assert_eq!(res.status(), 200);
    let operator = key_with_role(&server, "operator").await;
    let audit = server.url("/api/v1/audit");
    problem(
        send(reqwest::Method::GET, &audit, &operator, None).await,
        403,
    )
    .await;
    problem(send(reqwest::Method::GET, &audit, &viewer, None).await, 403).await;

    // 422: unknown module, a non-object input, control characters, a schema violation.
    let p = problem(
        post_json(&robots, &json!({"module": "nope", "input": {}})).await,
        422,
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "module");
    let p = problem(
        post_json(&robots, &json!({"module": "echo", "input": [1]})).await,
        422,
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "/input");
    let p = problem(
        post_json(
            &robots,
            &json!({"module": "echo", "input": {"k": "a\u{1b}[2J"}}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "/input/k", "{p}");
    let res = send(
        reqwest::Method::PUT,
        &server.url("/api/v1/modules/ocr"),
        TOKEN,
        Some(&json!({"input_schema": {
            "type": "object",
            "required": ["object"],
            "properties": {"object": {"type": "string"}, "pages": {"type": "integer", "minimum": 1}}
        }})),
    )
    .await;
    assert_eq!(res.status(), 200);
    let p = problem(
        post_json(&robots, &json!({"module": "ocr", "input": {"pages": 0}})).await,
        422,
    )
    .await;
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"/input/object"), "{p}");
    assert!(fields.contains(&"/input/pages"), "{p}");
    let p = problem(
        send(
            reqwest::Method::PUT,
            &server.url("/api/v1/modules/bad"),
            TOKEN,
            Some(&json!({"input_schema": {"type": 12}})),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "input_schema");
    // Built-ins take no instances; a module name outside the pattern is refused.
    let instance = json!({"url": "http://127.0.0.1:9/run"});
    problem(
        send(
            reqwest::Method::PUT,
            &server.url("/api/v1/modules/echo/instances/w1"),
            TOKEN,
            Some(&instance),
        )
        .await,
        409,
    )
    .await;
    problem(
        send(
            reqwest::Method::PUT,
            &server.url("/api/v1/modules/ocr/instances/w1"),
            &operator,
            Some(&instance),
        )
        .await,
        403,
    )
    .await;
    let p = problem(
        send(
            reqwest::Method::PUT,
            &server.url("/api/v1/modules/ocr/instances/w1"),
            TOKEN,
            Some(&json!({"url": "ftp://x"})),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "url");

    // 413: an input past robots.max_input_bytes (256 KiB).
    let big = "x".repeat(300 * 1024);
    problem(
        post_json(&robots, &json!({"module": "echo", "input": {"big": big}})).await,
        413,
    )
    .await;
    // 400: a wait outside 0s–30s.
    let p = problem(
        post_json(&server.url("/api/v1/robots?wait=31s"), &body).await,
        400,
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "wait");

    // 404: unknown robots, another tenant's.
    let done: Value = post_json(&server.url("/api/v1/robots?wait=10s"), &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(done["status"], "succeeded");
    let id = done["id"].as_i64().unwrap();
    problem(
        send(
            reqwest::Method::GET,
            &server.url("/api/v1/robots/999999"),
            TOKEN,
            None,
        )
        .await,
        404,
    )
    .await;
    let stranger = new_key(server.data_dir(), "other", "stranger");
    for path in [
        format!("/api/v1/robots/{id}"),
        format!("/api/v1/robots/{id}/executions"),
    ] {
        problem(
            send(reqwest::Method::GET, &server.url(&path), &stranger, None).await,
            404,
        )
        .await;
    }
    problem(
        send(
            reqwest::Method::POST,
            &server.url(&format!("/api/v1/robots/{id}/cancel")),
            &stranger,
            None,
        )
        .await,
        404,
    )
    .await;
    problem(
        send(
            reqwest::Method::GET,
            &server.url("/api/v1/robots/abc"),
            TOKEN,
            None,
        )
        .await,
        400,
    )
    .await;

    // 409: cancelling a finished robot, retrying one that is not dead, reporting on it.
    let cancel = server.url(&format!("/api/v1/robots/{id}/cancel"));
    problem(send(reqwest::Method::POST, &cancel, TOKEN, None).await, 409).await;
    let retry = server.url(&format!("/api/v1/robots/{id}/retry"));
    problem(send(reqwest::Method::POST, &retry, TOKEN, None).await, 409).await;
    let complete = server.url(&format!("/api/v1/robots/{id}/complete"));
    problem(
        post_json(&complete, &json!({"attempt": 1, "output": {"again": true}})).await,
        409,
    )
    .await;
    assert_eq!(
        robot(&server, id).await["output"],
        json!({"x": 1}),
        "unchanged"
    );

    // The audit log (admin): the creates and the module changes are there.
    let rows = eventually(Duration::from_secs(10), "audit rows", || async {
        let rows = get_json(&server.url("/api/v1/audit")).await;
        let actions: Vec<String> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["action"].as_str().unwrap().to_string())
            .collect();
        (actions.contains(&"robot.create".to_string())
            && actions.contains(&"module.put".to_string()))
        .then_some(rows)
    })
    .await;
    assert!(rows
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["count"].as_u64() >= Some(1)));
    problem(
        send(
            reqwest::Method::GET,
            &server.url("/api/v1/audit?limit=0"),
            TOKEN,
            None,
        )
        .await,
        400,
    )
    .await;
}

/// What the test worker was sent: (robot, attempt, callback).
type Calls = Arc<Mutex<Vec<(i64, u32, String)>>>;

/// A real HTTP worker: records each dispatch and answers as `answer` says.
async fn start_worker(answer: StatusCode) -> (String, Calls) {
    let calls: Calls = Arc::default();
    let app =
        axum::Router::new()
            .route(
                "/run",
                axum::routing::post(
                    |State((calls, answer)): State<(Calls, StatusCode)>,
                     Json(body): Json<Value>| async move {
                        calls.lock().unwrap().push((
                            body["robot"].as_i64().unwrap(),
                            body["attempt"].as_u64().unwrap() as u32,
                            body["callback"].as_str().unwrap().to_string(),
                        ));
                        (answer, Json(json!({"output": {"echoed": body["input"]}})))
                    },
                ),
            )
            .with_state((calls.clone(), answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/run", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

async fn register(server: &TestServer, module: &str, name: &str, url: &str) {
    let res = send(
        reqwest::Method::PUT,
        &server.url(&format!("/api/v1/modules/{module}/instances/{name}")),
        TOKEN,
        Some(&json!({"url": url, "weight": 1, "capacity": 4})),
    )
    .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_workers_report_with_their_attempt_and_stale_reports_are_refused() {
    let server = TestServer::start(quick_retries());
    // An asynchronous worker (202): it reports through the callback.
    let (url, calls) = start_worker(StatusCode::ACCEPTED).await;
    register(&server, "ocr", "w1", &url).await;

    let created: Value = post_json(
        &server.url("/api/v1/robots"),
        &json!({"module": "ocr", "input": {"object": "scan.png"}}),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = created["id"].as_i64().unwrap();
    let call = |attempt: u32| {
        let calls = calls.clone();
        async move {
            calls
                .lock()
                .unwrap()
                .iter()
                .find(|c| c.0 == id && c.1 == attempt)
                .cloned()
        }
    };
    let (_, attempt, callback) =
        eventually(Duration::from_secs(20), "the first dispatch", || call(1)).await;
    assert_eq!(attempt, 1);
    assert_eq!(callback, server.url(&format!("/api/v1/robots/{id}")));

    // Progress of the live attempt is recorded; of another attempt, 409.
    let progress = format!("{callback}/progress");
    let res = post_json(
        &progress,
        &json!({"attempt": 1, "progress": 40, "step": "page 2"}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let running: Value = res.json().await.unwrap();
    assert_eq!(running["progress"], 40);
    assert_eq!(running["step"], "page 2");
    problem(
        post_json(&progress, &json!({"attempt": 7, "progress": 50})).await,
        409,
    )
    .await;
    problem(
        post_json(&progress, &json!({"attempt": 1, "progress": 101})).await,
        422,
    )
    .await;

    // Attempt 1 fails (retryable): the robot is dispatched again as attempt 2.
    let res = post_json(
        &format!("{callback}/fail"),
        &json!({"attempt": 1, "error": "scanner jammed"}),
    )
    .await;
    assert_eq!(res.status(), 200);
    eventually(Duration::from_secs(20), "the second dispatch", || call(2)).await;
    // Attempt 1's late success is stale: 409, recorded against attempt 1.
    let late = json!({"attempt": 1, "output": {"text": "late"}});
    problem(post_json(&format!("{callback}/complete"), &late).await, 409).await;
    let res = post_json(
        &format!("{callback}/complete"),
        &json!({"attempt": 2, "output": {"text": "ok"}}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let done = robot(&server, id).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["output"], json!({"text": "ok"}));
    let executions = get_json(&server.url(&format!("/api/v1/robots/{id}/executions"))).await;
    let executions = executions.as_array().unwrap();
    assert_eq!(executions.len(), 2);
    assert_eq!(executions[0]["status"], "failed");
    assert_eq!(executions[0]["error"], "scanner jammed");
    assert_eq!(
        executions[0]["stale_reports"], 1,
        "the late report is recorded"
    );
    assert_eq!(executions[1]["status"], "succeeded");
    // A completed robot's second completion is refused too: completion happens once.
    problem(
        post_json(
            &format!("{callback}/complete"),
            &json!({"attempt": 2, "output": {}}),
        )
        .await,
        409,
    )
    .await;

    // Every attempt failing: dead after robots.max_attempts (3), and `retry` re-queues it.
    let created: Value = post_json(
        &server.url("/api/v1/robots"),
        &json!({"module": "ocr", "input": {"object": "bad.png"}}),
    )
    .await
    .json()
    .await
    .unwrap();
    let id2 = created["id"].as_i64().unwrap();
    let fail = server.url(&format!("/api/v1/robots/{id2}/fail"));
    for attempt in 1..=3u32 {
        let calls = calls.clone();
        eventually(Duration::from_secs(20), "a dispatch", || {
            let calls = calls.clone();
            async move {
                calls
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|c| c.0 == id2 && c.1 == attempt)
                    .then_some(())
            }
        })
        .await;
        let res = post_json(
            &fail,
            &json!({"attempt": attempt, "error": format!("try {attempt}")}),
        )
        .await;
        assert_eq!(res.status(), 200);
    }
    let dead = robot(&server, id2).await;
    assert_eq!(dead["status"], "dead");
    let res = send(
        reqwest::Method::POST,
        &server.url(&format!("/api/v1/robots/{id2}/retry")),
        TOKEN,
        None,
    )
    .await;
    assert_eq!(res.status(), 200);
    let calls2 = calls.clone();
    eventually(Duration::from_secs(20), "the re-queued dispatch", || {
        let calls = calls2.clone();
        async move {
            calls
                .lock()
                .unwrap()
                .iter()
                .any(|c| c.0 == id2 && c.1 == 4)
                .then_some(())
        }
    })
    .await;
    let res = post_json(
        &fail,
        &json!({"attempt": 4, "error": "still bad", "retryable": false}),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "failed");

    // The module shows its instance.
    let module = get_json(&server.url("/api/v1/modules/ocr")).await;
    assert_eq!(module["kind"], "http");
    assert_eq!(module["instances"][0]["name"], "w1");
    assert_eq!(module["instances"][0]["url"], url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_worker_completes_and_a_failing_one_opens_its_breaker() {
    let server = TestServer::start(quick_retries());
    let (ok_url, _) = start_worker(StatusCode::OK).await;
    register(&server, "sync", "w1", &ok_url).await;
    let res = post_json(
        &server.url("/api/v1/robots?wait=20s"),
        &json!({"module": "sync", "input": {"n": 3}}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let done: Value = res.json().await.unwrap();
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["output"], json!({"echoed": {"n": 3}}));

    // A worker answering 500 on every call: the first robot is retried, then dead after
    // robots.max_attempts (3); two more failures of the second robot reach
    // breaker.failure_threshold (5): the breaker opens, the robot waits for the module,
    // and the module's view shows the breaker open.
    let (bad_url, bad_calls) = start_worker(StatusCode::INTERNAL_SERVER_ERROR).await;
    register(&server, "flaky", "w1", &bad_url).await;
    let create = || async {
        let created: Value = post_json(
            &server.url("/api/v1/robots"),
            &json!({"module": "flaky", "input": {}}),
        )
        .await
        .json()
        .await
        .unwrap();
        created["id"].as_i64().unwrap()
    };
    let first = create().await;
    until_status(&server, first, "dead").await;
    assert_eq!(bad_calls.lock().unwrap().len(), 3, "3 attempts");
    let executions = get_json(&server.url(&format!("/api/v1/robots/{first}/executions"))).await;
    assert!(
        executions[0]["error"].as_str().unwrap().contains("500"),
        "{executions}"
    );
    let second = create().await;
    until_status(&server, second, "waiting_for_module").await;
    assert_eq!(
        bad_calls.lock().unwrap().len(),
        5,
        "no call past the open breaker"
    );
    let module = eventually(
        Duration::from_secs(20),
        "the breaker open in the view",
        || async {
            let module = get_json(&server.url("/api/v1/modules/flaky")).await;
            (module["instances"][0]["breaker"] == "open").then_some(module)
        },
    )
    .await;
    assert_eq!(module["instances"][0]["name"], "w1");
    assert_eq!(
        bad_calls.lock().unwrap().len(),
        5,
        "still none during the cool-down"
    );
}
