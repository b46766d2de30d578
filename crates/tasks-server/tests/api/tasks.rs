//! The six endpoints, one user at a time.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

fn timestamp(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().expect("timestamp is a string");
    assert!(s.ends_with('Z'), "{s} must be UTC with Z");
    DateTime::parse_from_rfc3339(s)
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

async fn create_returns_the_new_task(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    let res = app
        .create(
            &token,
            &json!({"title": "  Buy milk  ", "description": "Two litres"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let location = res.headers().get("location").cloned();
    let task: Value = res.json().await.unwrap();
    assert!(task["id"].as_i64().unwrap() >= 1);
    assert_eq!(task["user_id"], "alice");
    assert_eq!(task["title"], "Buy milk");
    assert_eq!(task["description"], "Two litres");
    assert_eq!(task["completed"], false);
    assert_eq!(
        timestamp(&task["created_at"]),
        timestamp(&task["updated_at"])
    );
    let age = Utc::now() - timestamp(&task["created_at"]);
    assert!(age.num_seconds().abs() < 60, "created_at is now");
    assert_eq!(
        location.unwrap().to_str().unwrap(),
        format!("/api/tasks/{}", task["id"])
    );
    assert_eq!(
        task.as_object().unwrap().len(),
        7,
        "exactly the documented fields"
    );
}

async fn description_is_optional_and_nullable(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    for body in [
        json!({"title": "a"}),
        json!({"title": "b", "description": null}),
    ] {
        let res = app.create(&token, &body).await;
        assert_eq!(res.status(), 201);
        let task: Value = res.json().await.unwrap();
        assert_eq!(task["description"], Value::Null);
    }
    let res = app
        .create(&token, &json!({"title": "c", "description": ""}))
        .await;
    let task: Value = res.json().await.unwrap();
    assert_eq!(task["description"], "");
}

async fn list_is_newest_first_and_filters_by_status(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    assert_eq!(app.list_ok(&token).await, Vec::<Value>::new());
    let first = app.create_ok(&token, "first").await;
    let second = app.create_ok(&token, "second").await;
    let third = app.create_ok(&token, "third").await;
    assert_eq!(app.toggle(&token, &second["id"]).await.status(), 200);

    let all = app.list_ok(&token).await;
    let ids: Vec<_> = all.iter().map(|t| t["id"].clone()).collect();
    assert_eq!(
        ids,
        vec![
            third["id"].clone(),
            second["id"].clone(),
            first["id"].clone()
        ]
    );

    let done: Vec<Value> = app
        .list(&token, "?status=completed")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["id"], second["id"]);
    let active: Vec<Value> = app
        .list(&token, "?status=active")
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<_> = active.iter().map(|t| t["id"].clone()).collect();
    assert_eq!(ids, vec![third["id"].clone(), first["id"].clone()]);
    // Unknown query parameters are ignored.
    let res = app.list(&token, "?page=2&sort=x").await;
    assert_eq!(res.status(), 200);
}

async fn get_returns_the_task(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    let created = app.create_ok(&token, "read me").await;
    let res = app.get(&token, &created["id"]).await;
    assert_eq!(res.status(), 200);
    let fetched: Value = res.json().await.unwrap();
    assert_eq!(fetched, created);
}

async fn update_is_partial(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    let res = app
        .create(
            &token,
            &json!({"title": "original", "description": "keep me"}),
        )
        .await;
    let task: Value = res.json().await.unwrap();
    let id = task["id"].clone();

    let res = app
        .update(&token, &id, &json!({"title": " renamed "}))
        .await;
    assert_eq!(res.status(), 200);
    let t: Value = res.json().await.unwrap();
    assert_eq!(t["title"], "renamed");
    assert_eq!(t["description"], "keep me");
    assert_eq!(t["completed"], false);
    assert_eq!(t["created_at"], task["created_at"]);
    assert!(timestamp(&t["updated_at"]) >= timestamp(&task["updated_at"]));

    let t: Value = app
        .update(&token, &id, &json!({"completed": true}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(t["completed"], true);
    assert_eq!(t["title"], "renamed");
    assert_eq!(t["description"], "keep me");

    let t: Value = app
        .update(&token, &id, &json!({"description": null}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(t["description"], Value::Null);
    assert_eq!(t["completed"], true);

    let t: Value = app
        .update(
            &token,
            &id,
            &json!({"description": "back", "completed": false, "title": "all three"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            t["title"].as_str(),
            t["description"].as_str(),
            t["completed"].as_bool()
        ),
        (Some("all three"), Some("back"), Some(false))
    );

    let res = app.update(&token, &id, &json!({})).await;
    assert_eq!(res.status(), 200);
    let t2: Value = res.json().await.unwrap();
    assert_eq!(t2["title"], t["title"]);

    // The stored state is what the last response said.
    let stored: Value = app.get(&token, &id).await.json().await.unwrap();
    assert_eq!(stored, t2);
}

async fn fields_clients_do_not_own_are_ignored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    let res = app
        .create(
            &token,
            &json!({"title": "t", "id": 999_999, "user_id": "mallory", "completed": true,
                    "created_at": "2000-01-01T00:00:00Z", "updated_at": "2000-01-01T00:00:00Z", "extra": [1, 2]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let task: Value = res.json().await.unwrap();
    assert_ne!(task["id"], 999_999);
    assert_eq!(task["user_id"], "alice");
    assert_eq!(task["completed"], false);
    assert!(!task["created_at"].as_str().unwrap().starts_with("2000"));

    let res = app
        .update(
            &token,
            &task["id"],
            &json!({"id": 1, "user_id": "mallory", "created_at": "2000-01-01T00:00:00Z", "whatever": {}}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let updated: Value = res.json().await.unwrap();
    assert_eq!(updated["id"], task["id"]);
    assert_eq!(updated["user_id"], "alice");
    assert_eq!(updated["created_at"], task["created_at"]);
}

async fn delete_returns_204_with_empty_body(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    let task = app.create_ok(&token, "doomed").await;
    let res = app.delete(&token, &task["id"]).await;
    assert_eq!(res.status(), 204);
    assert!(res.bytes().await.unwrap().is_empty());
    assert_eq!(app.get(&token, &task["id"]).await.status(), 404);
    assert_eq!(app.delete(&token, &task["id"]).await.status(), 404);
    assert!(app.list_ok(&token).await.is_empty());
    // Ids are never reused.
    let next = app.create_ok(&token, "next").await;
    assert!(next["id"].as_i64() > task["id"].as_i64());
}

async fn toggle_flips_completed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    let task = app.create_ok(&token, "flip").await;
    let res = app.toggle(&token, &task["id"]).await;
    assert_eq!(res.status(), 200);
    let t: Value = res.json().await.unwrap();
    assert_eq!(t["completed"], true);
    assert_eq!(t["title"], "flip");
    assert!(timestamp(&t["updated_at"]) >= timestamp(&task["updated_at"]));
    let t: Value = app.toggle(&token, &task["id"]).await.json().await.unwrap();
    assert_eq!(t["completed"], false);
    assert_eq!(app.toggle(&token, 987_654).await.status(), 404);
}

async fn concurrent_toggles_are_atomic(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    let task = app.create_ok(&token, "contended").await;
    let id = task["id"].as_i64().unwrap();
    let futures = (0..40).map(|_| {
        let app = &app;
        let token = &token;
        async move {
            let res = app.toggle(token, id).await;
            let status = res.status();
            let body: Value = res.json().await.unwrap();
            assert_eq!(status, 200, "{body}");
            body["completed"].as_bool().unwrap()
        }
    });
    let results = futures_util::future::join_all(futures).await;
    let trues = results.iter().filter(|c| **c).count();
    assert_eq!((trues, results.len() - trues), (20, 20));
    let end: Value = app.get(&token, id).await.json().await.unwrap();
    assert_eq!(
        end["completed"], false,
        "an even number of toggles leaves it as it was"
    );
}

async fn unicode_round_trips(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("ünïcødé-用户");
    let title = "😀".repeat(200);
    let description = "Ωμέγα 日本語 \u{1F600} \"quoted\" \\ back\nslash";
    let res = app
        .create(&token, &json!({"title": title, "description": description}))
        .await;
    assert_eq!(res.status(), 201);
    let task: Value = res.json().await.unwrap();
    assert_eq!(task["title"], title.as_str());
    assert_eq!(task["description"], description);
    assert_eq!(task["user_id"], "ünïcødé-用户");
    let fetched: Value = app.get(&token, &task["id"]).await.json().await.unwrap();
    assert_eq!(fetched, task);
}

on_both_backends!(
    create_returns_the_new_task,
    description_is_optional_and_nullable,
    list_is_newest_first_and_filters_by_status,
    get_returns_the_task,
    update_is_partial,
    fields_clients_do_not_own_are_ignored,
    delete_returns_204_with_empty_body,
    toggle_flips_completed,
    concurrent_toggles_are_atomic,
    unicode_round_trips,
);
