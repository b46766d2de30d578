//! Probes, docs and the published contract.

use serde_json::Value;

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

async fn health_and_ready(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ok");
    let res = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["database"], "ok");
}

async fn docs_are_served_offline(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app.client.get(app.url("/docs")).send().await.unwrap();
    assert!(res.status().is_redirection());
    assert_eq!(res.headers().get("location").unwrap(), "/docs/");
    let res = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "Swagger UI page");
    assert!(
        !html.contains("https://") && !html.contains("http://"),
        "no external assets in the page"
    );
    for asset in [
        "/docs/swagger-ui.css",
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-initializer.js",
    ] {
        let res = app.client.get(app.url(asset)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{asset}");
    }
    let init = app
        .client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("/openapi.json"));
    assert!(init.contains("\"validatorUrl\": \"none\""), "{init}");

    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/api/tasks", "/api/tasks/{id}", "/api/tasks/{id}/complete"] {
        assert!(doc["paths"][path].is_object(), "{path}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer_auth"]["scheme"],
        "bearer"
    );
}

on_both_backends!(health_and_ready, docs_are_served_offline);

/// The committed contract is what the code generates. To accept a change:
/// `cargo run -q -- openapi > contracts/openapi.yaml`, and review the diff.
#[test]
fn openapi_contract_is_up_to_date() {
    let generated = tasks_server::openapi::yaml().unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../contracts/openapi.yaml");
    let committed = std::fs::read_to_string(path).expect("contracts/openapi.yaml exists");
    assert!(
        generated == committed,
        "contracts/openapi.yaml differs from the generated document; regenerate it with `cargo run -q -- openapi > contracts/openapi.yaml` and review the diff"
    );
}

/// The committed JSON Schemas are cut from the same document. To accept a
/// change: `cargo run -q -- schema tasks > contracts/tasks.schema.json` and
/// `cargo run -q -- schema errors > contracts/errors.schema.json`, and review
/// the diff.
#[test]
fn json_schema_contracts_are_up_to_date() {
    for (name, component) in tasks_server::openapi::JSON_SCHEMAS {
        let generated = tasks_server::openapi::json_schema(component).unwrap();
        let path = format!(
            "{}/../../contracts/{name}.schema.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("contracts/{name}.schema.json exists"));
        assert!(
            generated == committed,
            "contracts/{name}.schema.json differs from the generated schema; regenerate it with `cargo run -q -- schema {name} > contracts/{name}.schema.json` and review the diff"
        );
        let schema: Value = serde_json::from_str(&committed).unwrap();
        assert_eq!(schema["title"], component);
        assert_eq!(schema["type"], "object");
    }
}
