//! What real Next.js + Better Auth frontends of this design send: the
//! `/api/{user_id}/tasks` path shape of the hackathon specification, `PATCH`
//! for partial updates, `?status=all|pending`, and preflights that name
//! other request headers. None of it weakens isolation.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, assert_error};
use crate::on_both_backends;

on_both_backends!(
    user_id_paths_are_aliases_for_the_caller_only,
    patch_is_a_partial_update_like_put,
    status_all_and_pending_are_accepted,
    preflights_may_name_any_header_from_allowed_origins,
);

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let res = app.request(method, path, token, body).await;
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn user_id_paths_are_aliases_for_the_caller_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, bob) = (app.token("alice"), app.token("bob"));

    let (status, task) = call(
        &app,
        Method::POST,
        "/api/alice/tasks",
        Some(&alice),
        Some(&json!({"title": "via alias", "description": "d"})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(task["user_id"], "alice");
    let id = task["id"].as_i64().unwrap();
    let one = format!("/api/alice/tasks/{id}");

    let (status, listed) = call(&app, Method::GET, "/api/alice/tasks", Some(&alice), None).await;
    assert_eq!(status, 200);
    assert_eq!(listed, json!([task]));
    assert_eq!(
        call(&app, Method::GET, "/api/alice/tasks/", Some(&alice), None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&app, Method::GET, &one, Some(&alice), None).await,
        (200, task.clone())
    );
    let (status, put) = call(
        &app,
        Method::PUT,
        &one,
        Some(&alice),
        Some(&json!({"title": "renamed"})),
    )
    .await;
    assert_eq!(
        (status, put["title"].clone(), put["description"].clone()),
        (200, json!("renamed"), json!("d"))
    );
    let (status, patched) = call(
        &app,
        Method::PATCH,
        &one,
        Some(&alice),
        Some(&json!({"description": null})),
    )
    .await;
    assert_eq!((status, patched["description"].clone()), (200, Value::Null));
    let (status, toggled) = call(
        &app,
        Method::PATCH,
        &format!("{one}/complete"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!((status, toggled["completed"].clone()), (200, json!(true)));
    // The canonical and the aliased paths see the same task.
    assert_eq!(
        call(
            &app,
            Method::GET,
            &format!("/api/tasks/{id}"),
            Some(&alice),
            None
        )
        .await
        .1,
        toggled
    );

    // Another user's id in the path: exactly the 404 of a missing task, for
    // every operation, whether or not the task exists.
    let (missing_status, missing_body) =
        call(&app, Method::GET, "/api/tasks/999999", Some(&bob), None).await;
    assert_eq!(missing_status, 404);
    for (method, path, body) in [
        (Method::GET, "/api/alice/tasks".to_owned(), None),
        (
            Method::POST,
            "/api/alice/tasks".to_owned(),
            Some(json!({"title": "planted"})),
        ),
        (Method::GET, one.clone(), None),
        (Method::PUT, one.clone(), Some(json!({"title": "hijacked"}))),
        (
            Method::PATCH,
            one.clone(),
            Some(json!({"title": "hijacked"})),
        ),
        (Method::PATCH, format!("{one}/complete"), None),
        (Method::DELETE, one.clone(), None),
        (Method::GET, "/api/alice/tasks/999999".to_owned(), None),
        // Bob's own id does not open Alice's task either.
        (Method::GET, format!("/api/bob/tasks/{id}"), None),
        (Method::DELETE, format!("/api/bob/tasks/{id}"), None),
    ] {
        let (status, body) = call(&app, method.clone(), &path, Some(&bob), body.as_ref()).await;
        assert_eq!((status, &body), (404, &missing_body), "{method} {path}");
    }
    assert_eq!(
        call(&app, Method::GET, "/api/bob/tasks", Some(&bob), None).await,
        (200, json!([]))
    );
    // Nothing of that changed Alice's task or planted one for her.
    assert_eq!(
        call(&app, Method::GET, "/api/alice/tasks", Some(&alice), None)
            .await
            .1,
        json!([toggled])
    );
    // Without a token the alias is a 401, like every other route.
    assert_error(
        app.request(Method::GET, "/api/alice/tasks", None, None)
            .await,
        401,
        "authentication_error",
    )
    .await;

    assert_eq!(
        call(&app, Method::DELETE, &one, Some(&alice), None).await.0,
        204
    );
    assert_eq!(
        call(&app, Method::GET, "/api/alice/tasks", Some(&alice), None)
            .await
            .1,
        json!([])
    );
}

async fn patch_is_a_partial_update_like_put(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    let (_, task) = call(
        &app,
        Method::POST,
        "/api/tasks",
        Some(&token),
        Some(&json!({"title": "t", "description": "keep"})),
    )
    .await;
    let path = format!("/api/tasks/{}", task["id"]);
    let (status, patched) = call(
        &app,
        Method::PATCH,
        &path,
        Some(&token),
        Some(&json!({"completed": true})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            patched["title"].clone(),
            patched["description"].clone(),
            patched["completed"].clone()
        ),
        (json!("t"), json!("keep"), json!(true))
    );
    let (_, cleared) = call(
        &app,
        Method::PATCH,
        &path,
        Some(&token),
        Some(&json!({"description": null, "title": "  new  "})),
    )
    .await;
    assert_eq!(
        (cleared["title"].clone(), cleared["description"].clone()),
        (json!("new"), Value::Null)
    );
    // The same validation as PUT, and nothing changes on a refusal.
    for bad in [
        json!({"title": ""}),
        json!({"title": null}),
        json!({"completed": "yes"}),
        json!([1]),
    ] {
        let res = app
            .request(Method::PATCH, &path, Some(&token), Some(&bad))
            .await;
        assert_error(res, 400, "validation_error").await;
    }
    assert_eq!(
        call(&app, Method::GET, &path, Some(&token), None).await.1,
        cleared
    );
    let res = app
        .request(
            Method::PATCH,
            "/api/tasks/999999",
            Some(&token),
            Some(&json!({"title": "x"})),
        )
        .await;
    assert_error(res, 404, "not_found").await;
}

async fn status_all_and_pending_are_accepted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    let done = app.create_ok(&token, "done").await;
    app.create_ok(&token, "open").await;
    assert_eq!(app.toggle(&token, &done["id"]).await.status(), 200);
    let titles = |tasks: Vec<Value>| {
        tasks
            .iter()
            .map(|t| t["title"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let list = |q: &'static str| {
        let (app, token) = (&app, &token);
        async move { titles(app.list(token, q).await.json().await.unwrap()) }
    };
    assert_eq!(list("?status=all").await, ["open", "done"]);
    assert_eq!(list("?status=pending").await, ["open"]);
    assert_eq!(list("?status=active").await, ["open"]);
    assert_eq!(list("?status=completed").await, ["done"]);
    for q in [
        "?status=done",
        "?status=true",
        "?status=COMPLETED",
        "?status=Pending",
    ] {
        assert_error(app.list(&token, q).await, 400, "validation_error").await;
    }
}

async fn preflights_may_name_any_header_from_allowed_origins(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, app.url("/api/tasks"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header(
                "access-control-request-headers",
                "authorization,x-user-id,content-type",
            )
            .send()
    };
    let res = preflight("http://localhost:3000").await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let allowed = res.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("x-user-id") && allowed.contains("authorization"),
        "{allowed}"
    );
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    // Origins stay strict: a foreign one is never echoed.
    let res = preflight("https://evil.example").await.unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
}
