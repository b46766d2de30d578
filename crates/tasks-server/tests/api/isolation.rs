//! Two users on every endpoint: neither can see, change or even detect the
//! other's tasks.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, assert_error};
use crate::on_both_backends;

async fn users_never_see_each_others_tasks(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice");
    let bob = app.token("bob");
    let a1 = app.create_ok(&alice, "alice's secret").await;
    let b1 = app.create_ok(&bob, "bob's").await;
    let id = &a1["id"];

    // list: each sees only their own, with any filter.
    for q in ["", "?status=active", "?status=completed"] {
        let listed: Vec<Value> = app.list(&bob, q).await.json().await.unwrap();
        assert!(listed.iter().all(|t| t["user_id"] == "bob"), "{q}");
        assert!(listed.iter().all(|t| t["id"] != *id));
    }
    assert_eq!(app.list_ok(&alice).await, vec![a1.clone()]);
    assert_eq!(app.list_ok(&bob).await, vec![b1.clone()]);

    // get / update / toggle / delete of alice's task by bob: 404, exactly like
    // a task that does not exist.
    let missing = 9_000_000_001_i64;
    let pairs = [
        (app.get(&bob, id).await, app.get(&bob, missing).await),
        (
            app.update(&bob, id, &json!({"title": "pwned", "completed": true}))
                .await,
            app.update(&bob, missing, &json!({"title": "pwned", "completed": true}))
                .await,
        ),
        (app.toggle(&bob, id).await, app.toggle(&bob, missing).await),
        (app.delete(&bob, id).await, app.delete(&bob, missing).await),
    ];
    for (theirs, absent) in pairs {
        let a = assert_error(theirs, 404, "not_found").await;
        let b = assert_error(absent, 404, "not_found").await;
        assert_eq!(
            a, b,
            "another user's task is indistinguishable from a missing one"
        );
    }

    // Alice's task is untouched.
    let still: Value = app.get(&alice, id).await.json().await.unwrap();
    assert_eq!(still, a1);

    // A user id in the body cannot create a task for someone else.
    let res = app
        .create(&bob, &json!({"title": "spoof", "user_id": "alice"}))
        .await;
    let spoof: Value = res.json().await.unwrap();
    assert_eq!(spoof["user_id"], "bob");
    assert_eq!(app.list_ok(&alice).await.len(), 1);
}

async fn user_ids_are_compared_exactly(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let lower = app.token("user");
    let task = app.create_ok(&lower, "mine").await;
    for other in ["User", "USER", "user ", " user", "user%", "us_r", "use"] {
        let token = app.token(other);
        assert_eq!(
            app.get(&token, &task["id"]).await.status(),
            404,
            "{other:?}"
        );
        assert!(app.list_ok(&token).await.is_empty(), "{other:?}");
    }
}

on_both_backends!(
    users_never_see_each_others_tasks,
    user_ids_are_compared_exactly
);
