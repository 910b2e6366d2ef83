//! `GET /api/v1/openapi.json` (PROTOCOL.md §7): an OpenAPI 3.1 document that describes every
//! endpoint the router serves, consistent in itself, and true of the running server.

use reqwest::Method;
use serde_json::Value;

use crate::common::spawn_app;

/// The endpoints PROTOCOL.md §4, §6 and §7 name (and the admin ones the dashboard uses).
const PROTOCOL_ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/auth/register"),
    ("post", "/api/v1/auth/login"),
    ("get", "/api/v1/users/{id}"),
    ("patch", "/api/v1/users/{id}"),
    ("get", "/api/v1/users"),
    ("post", "/api/v1/rooms"),
    ("get", "/api/v1/rooms"),
    ("post", "/api/v1/rooms/{id}/members"),
    ("get", "/api/v1/rooms/{id}/members"),
    ("get", "/api/v1/rooms/{id}/messages"),
    ("post", "/api/v1/rooms/{id}/messages"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("post", "/api/v1/sensors"),
    ("get", "/api/v1/sensors"),
    ("get", "/api/v1/sensors/{id}"),
    ("post", "/api/v1/sensors/{id}/readings"),
    ("get", "/api/v1/sensors/{id}/readings"),
    ("get", "/api/v1/sensors/{id}/series"),
    ("get", "/api/v1/rooms/{id}/state"),
    ("get", "/api/v1/rooms/{id}/state/{key}"),
    ("put", "/api/v1/rooms/{id}/state/{key}"),
    ("delete", "/api/v1/rooms/{id}/state/{key}"),
    ("post", "/api/v1/admin/archive"),
    ("post", "/api/v1/webhooks"),
    ("get", "/api/v1/webhooks"),
    ("delete", "/api/v1/webhooks/{id}"),
    ("get", "/api/v1/admin/jobs"),
    ("post", "/api/v1/admin/jobs/{id}/retry"),
    ("get", "/api/v1/admin/audit"),
    ("get", "/api/v1/admin/stats"),
    ("get", "/api/v1/admin/dashboard"),
    ("get", "/"),
    ("get", "/admin"),
    ("get", "/api/v1/openapi.json"),
];

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch"];

/// Every `(method, path, operation)` of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            if METHODS.contains(&method.as_str()) {
                ops.push((method.clone(), path.clone(), op.clone()));
            }
        }
    }
    ops
}

/// Every `$ref` in `v`, as the JSON pointer it names.
fn refs(v: &Value, found: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => found.push(r.clone()),
                    _ => refs(x, found),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, found)),
        _ => {}
    }
}

async fn document() -> (crate::common::TestApp, Value) {
    let app = spawn_app(&[]).await;
    let (status, doc) = app
        .request(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(status, 200, "served without a token: {doc}");
    (app, doc)
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_every_ref_resolves() {
    let (_app, doc) = document().await;
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1"), "openapi {version}");
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 50, "the operations refer to shared schemas");
    for r in &found {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{r} is local"));
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer", "{schemes}");
    let mut ids = std::collections::HashSet::new();
    for (method, path, op) in operations(&doc) {
        let what = format!("{method} {path}");
        assert!(
            ids.insert(op["operationId"].to_string()),
            "{what}: operationId reused"
        );
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{what}: no 2xx"
        );
        // every {name} of the template is a declared path parameter, and only those
        let declared: Vec<&str> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let templated: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        assert_eq!(declared, templated, "{what}: path parameters");
        if let Some(security) = op["security"].as_array() {
            for requirement in security {
                for scheme in requirement.as_object().unwrap().keys() {
                    assert!(schemes.get(scheme).is_some(), "{what}: scheme {scheme}");
                }
            }
            assert!(
                responses.contains_key("401"),
                "{what}: a token can be refused"
            );
        }
        for (status, response) in responses {
            if (status.starts_with('4') || status.starts_with('5')) && path.starts_with("/api/") {
                let body = doc
                    .pointer(
                        response["$ref"]
                            .as_str()
                            .unwrap_or("")
                            .trim_start_matches('#'),
                    )
                    .unwrap_or(response);
                let schema = &body["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(
                    schema, "#/components/schemas/ErrorBody",
                    "{what} {status}: the error shape"
                );
            }
        }
    }
}

#[tokio::test]
async fn every_endpoint_of_the_protocol_is_described_and_served_as_described() {
    let (app, doc) = document().await;
    let described: Vec<(String, String, Value)> = operations(&doc);
    for (method, path) in PROTOCOL_ROUTES {
        assert!(
            described.iter().any(|(m, p, _)| m == method && p == path),
            "{method} {path} is not in the document"
        );
    }
    // each described operation is one the server serves, and asks for a token exactly when
    // the document says so
    for (method, path, op) in &described {
        let concrete = path.replace("{id}", "r1").replace("{key}", "k1");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let body = matches!(method, Method::POST | Method::PUT | Method::PATCH)
            .then(|| serde_json::json!({}));
        let (status, answer) = app.request(method.clone(), &concrete, None, body).await;
        let what = format!("{method} {path}");
        assert_ne!(status, 405, "{what}: not served with this method");
        assert_ne!(
            answer["error"]["message"], "no such endpoint",
            "{what}: not served"
        );
        let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
        assert_eq!(status == 401, secured, "{what}: answered {status} {answer}");
    }
}

/// The router is built from the described list alone (`routes!`): an API route added with a
/// plain `.route(…)` would be served without a description. (The pages' `/assets/` files are
/// the one plain route.)
#[test]
fn no_api_route_bypasses_the_description() {
    let router = include_str!("../../src/http/mod.rs");
    let plain: Vec<&str> = router
        .match_indices(".route(")
        .map(|(i, _)| router[i..].split(',').next().unwrap_or(""))
        .collect();
    assert_eq!(
        plain,
        [".route(\"/assets/{*name}\""],
        "plain routes: {plain:?}"
    );
}
