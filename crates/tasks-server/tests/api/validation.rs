//! Every validation rule: a 400 with the envelope, and nothing stored or changed.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, assert_error};
use crate::on_both_backends;

async fn invalid_titles_are_rejected(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    let bad = [
        json!({}),
        json!({"title": ""}),
        json!({"title": "   \t\n "}),
        json!({"title": "a".repeat(201)}),
        json!({"title": "😀".repeat(201)}),
        json!({"title": null}),
        json!({"title": 42}),
        json!({"title": true}),
        json!({"title": ["a"]}),
        json!({"title": {"text": "a"}}),
        json!({"title": "nul\u{0}byte"}),
        json!({"title": "ok", "description": "d".repeat(10_001)}),
        json!({"title": "ok", "description": 5}),
        json!({"title": "ok", "description": ["x"]}),
    ];
    for body in &bad {
        let res = app.create(&token, body).await;
        assert_error(res, 400, "validation_error").await;
    }
    assert!(app.list_ok(&token).await.is_empty(), "nothing was stored");
    // The limits themselves are fine.
    for body in [
        json!({"title": "a".repeat(200)}),
        json!({"title": "é".repeat(200), "description": "ü".repeat(10_000)}),
    ] {
        assert_eq!(app.create(&token, &body).await.status(), 201);
    }
}

/// Titles are trimmed as the plan's Python `str.strip()` trims them; control
/// characters (but tab and line feed) and invisible-only titles are 400.
async fn titles_follow_the_plans_python_rules(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    // Python strips U+001C..U+001F; Rust's trim() did not.
    let created: Value = {
        let res = app
            .create(
                &token,
                &json!({"title": "\u{1c}\u{1d}Plan\u{1e}\u{1f}\u{85}"}),
            )
            .await;
        assert_eq!(res.status(), 201);
        res.json().await.unwrap()
    };
    assert_eq!(created["title"], "Plan");
    let kept = app
        .create(&token, &json!({"title": " tab\there\nnewline "}))
        .await;
    assert_eq!(kept.status(), 201);
    assert_eq!(
        kept.json::<Value>().await.unwrap()["title"],
        "tab\there\nnewline"
    );
    for (title, needle) in [
        ("\u{200b} \u{feff}", "visible"),
        ("\u{180e}", "visible"),
        ("\u{200b}\u{3000}\u{1c}", "visible"),
        ("bell\u{7}", "control"),
        ("esc\u{1b}[31m", "control"),
        ("a\rb", "control"),
        ("del\u{7f}", "control"),
        ("c1\u{9b}x", "control"),
        ("x\u{1c}y", "control"),
    ] {
        let res = app.create(&token, &json!({ "title": title })).await;
        let err = assert_error(res, 400, "validation_error").await;
        assert!(
            err["detail"].as_str().unwrap().contains(needle),
            "{title:?}: {err}"
        );
        let res = app
            .update(&token, &created["id"], &json!({ "title": title }))
            .await;
        assert_error(res, 400, "validation_error").await;
    }
    assert_eq!(
        app.list_ok(&token).await.len(),
        2,
        "nothing else was stored"
    );
    let after: Value = app.get(&token, &created["id"]).await.json().await.unwrap();
    assert_eq!(
        after["title"], "Plan",
        "no rejected update changed the title"
    );
}

async fn invalid_updates_are_rejected_and_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    let task: Value = app
        .create(&token, &json!({"title": "stable", "description": "kept"}))
        .await
        .json()
        .await
        .unwrap();
    let id = &task["id"];
    let bad = [
        json!({"completed": "true"}),
        json!({"completed": 1}),
        json!({"completed": 0}),
        json!({"completed": null}),
        json!({"completed": "yes"}),
        json!({"title": null}),
        json!({"title": ""}),
        json!({"title": "  "}),
        json!({"title": "x".repeat(201)}),
        json!({"title": 7}),
        json!({"description": "d".repeat(10_001)}),
        json!({"description": false}),
        json!({"title": "valid", "completed": "false"}),
        json!([{"title": "array"}]),
        json!(["renamed by position", null, true]),
        json!([]),
        json!("just a string"),
        json!(null),
    ];
    for body in &bad {
        let res = app.update(&token, id, body).await;
        let err = assert_error(res, 400, "validation_error").await;
        assert!(
            !err["detail"].as_str().unwrap().contains("line 1 column")
                || err["detail"].as_str().unwrap().len() < 300
        );
    }
    let after: Value = app.get(&token, id).await.json().await.unwrap();
    assert_eq!(after, task, "no rejected update changed anything");
}

async fn malformed_bodies_are_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    let raw = |body: &'static str, content_type: Option<&'static str>| {
        let mut req = app
            .client
            .post(app.url("/api/tasks"))
            .bearer_auth(&token)
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    for body in [
        "{",
        "{\"title\": }",
        "not json",
        "",
        "   ",
        "{\"title\": \"a\",}",
        "\u{0}",
        "{\"title\":\"\\ud800\"}",
        // Arrays are not objects, even though serde could map them by position.
        "[\"From an array\", \"desc\"]",
        "[]",
        // Trailing data after the object.
        "{\"title\": \"x\"} trailing",
        "{\"title\": \"x\"}{\"title\": \"y\"}",
    ] {
        let res = raw(body, Some("application/json")).await.unwrap();
        assert_error(res, 400, "validation_error").await;
    }
    // Wrong content types are refused, even with a valid JSON body.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let res = raw("{\"title\": \"x\"}", Some(ct)).await.unwrap();
        let err = assert_error(res, 400, "validation_error").await;
        assert!(err["detail"].as_str().unwrap().contains("Content-Type"));
    }
    // No content type at all: parsed as JSON, like FastAPI does.
    let res = raw("{\"title\": \"no content type\"}", None).await.unwrap();
    assert_eq!(res.status(), 201);
    let res = raw(
        "{\"title\": \"charset\"}",
        Some("application/json; charset=utf-8"),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(app.list_ok(&token).await.len(), 2);
}

async fn oversized_bodies_are_413(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    let huge = json!({"title": "big", "description": "x".repeat(2 * 1024 * 1024)});
    let res = app.create(&token, &huge).await;
    assert_error(res, 413, "payload_too_large").await;
    // Chunked, without a Content-Length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..64).map(|_| Ok(vec![b' '; 16 * 1024])).collect();
    let res = app
        .client
        .post(app.url("/api/tasks"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_error(res, 413, "payload_too_large").await;
    assert!(app.list_ok(&token).await.is_empty());
}

async fn invalid_path_ids_are_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    for id in [
        "abc",
        "1.5",
        "1e3",
        "0x1",
        "99999999999999999999",
        "9223372036854775808",
        "0",
        "-1",
        "%20",
        "null",
    ] {
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let res = app
                .request(
                    method.clone(),
                    &format!("/api/tasks/{id}"),
                    Some(&token),
                    Some(&json!({"title": "x"})),
                )
                .await;
            assert_error(res, 400, "validation_error").await;
        }
        let res = app.toggle(&token, id).await;
        assert_error(res, 400, "validation_error").await;
    }
    // The largest valid id is simply not found.
    let res = app.get(&token, i64::MAX).await;
    assert_error(res, 404, "not_found").await;
}

async fn invalid_status_filters_are_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    for q in [
        "?status=",
        "?status=done",
        "?status=Completed",
        "?status=COMPLETED",
        "?status=true",
        "?status=All",
        "?status=active&status=completed",
        "?status=%ZZ",
    ] {
        let res = app.list(&token, q).await;
        assert_error(res, 400, "validation_error").await;
    }
}

on_both_backends!(
    invalid_titles_are_rejected,
    titles_follow_the_plans_python_rules,
    invalid_updates_are_rejected_and_change_nothing,
    malformed_bodies_are_400,
    oversized_bodies_are_413,
    invalid_path_ids_are_400,
    invalid_status_filters_are_400,
);
