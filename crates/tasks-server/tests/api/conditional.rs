//! Conditional requests (`ETag`, `If-None-Match`, `If-Match`) and pages
//! (`limit`, `cursor`, `Link`).

use std::sync::Arc;

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, TestDb, assert_error};
use crate::on_both_backends;

/// Sends a request with extra headers.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Response {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    req.send().await.expect("request sent")
}

/// `GET path` with `If-None-Match: tag`.
async fn revalidate(app: &TestApp, path: &str, token: &str, tag: &str) -> Response {
    send(
        app,
        Method::GET,
        path,
        token,
        &[("If-None-Match", tag)],
        None,
    )
    .await
}

fn etag(res: &Response) -> String {
    res.headers()
        .get("etag")
        .expect("an ETag")
        .to_str()
        .unwrap()
        .to_owned()
}

/// The target of `Link: <...>; rel="next"`, if any.
fn next_link(res: &Response) -> Option<String> {
    let link = res.headers().get("link")?.to_str().unwrap();
    assert!(link.ends_with("; rel=\"next\""), "{link}");
    let start = link.find('<').unwrap() + 1;
    let end = link.find('>').unwrap();
    Some(link[start..end].to_owned())
}

async fn assert_not_modified(res: Response, expected_etag: &str) {
    assert_eq!(res.status(), 304);
    assert_eq!(etag(&res), expected_etag, "a 304 carries the ETag");
    assert!(res.bytes().await.unwrap().is_empty(), "a 304 has no body");
}

async fn get_revalidates_until_the_task_changes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    let created = app.create(&token, &json!({"title": "a"})).await;
    let created_tag = etag(&created);
    let task: Value = created.json().await.unwrap();
    let path = format!("/api/tasks/{}", task["id"]);

    let res = app.get(&token, &task["id"]).await;
    assert_eq!(res.status(), 200);
    let tag = etag(&res);
    assert_eq!(tag, created_tag, "the create's ETag is the task's");
    assert!(!tag.starts_with("W/"), "strong");

    let res = revalidate(&app, &path, &token, &tag).await;
    assert_not_modified(res, &tag).await;
    // Weak comparison for If-None-Match, lists and `*` match too.
    let weak = format!("W/{tag}");
    let listed = format!("\"other\", {tag}");
    for value in [weak.as_str(), listed.as_str(), "*"] {
        let res = revalidate(&app, &path, &token, value).await;
        assert_not_modified(res, &tag).await;
    }

    let toggled = app.toggle(&token, &task["id"]).await;
    assert_eq!(toggled.status(), 200);
    let toggled_tag = etag(&toggled);
    assert_ne!(toggled_tag, tag);
    let res = revalidate(&app, &path, &token, &tag).await;
    assert_eq!(res.status(), 200, "a changed task is never a 304");
    assert_eq!(etag(&res), toggled_tag);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["completed"], true);

    let updated = app
        .update(&token, &task["id"], &json!({"title": "b"}))
        .await;
    let updated_tag = etag(&updated);
    assert_ne!(updated_tag, toggled_tag);
    let res = revalidate(&app, &path, &token, &toggled_tag).await;
    assert_eq!(res.status(), 200);

    assert_eq!(app.delete(&token, &task["id"]).await.status(), 204);
    let res = revalidate(&app, &path, &token, &updated_tag).await;
    assert_error(res, 404, "not_found").await;
}

async fn list_etag_follows_every_change_through_any_instance(backend: Backend) {
    // Two instances on one database: what one writes, the other's list
    // ETag sees (the tag is derived from the rows, not from memory).
    let (db, url) = TestDb::create(backend).await;
    let db = Arc::new(db);
    let one = TestApp::spawn_on(backend, db.clone(), &url, &[]).await;
    let two = TestApp::spawn_on(backend, db, &url, &[]).await;
    let token = one.token("alice");
    one.create_ok(&token, "a").await;
    let b = one.create_ok(&token, "b").await;
    let c = one.create_ok(&token, "c").await;

    for query in ["", "?status=active", "?limit=2"] {
        let path = format!("/api/tasks{query}");
        let res = send(&one, Method::GET, &path, &token, &[], None).await;
        assert_eq!(res.status(), 200);
        let mut tag = etag(&res);
        let res = revalidate(&one, &path, &token, &tag).await;
        assert_not_modified(res, &tag).await;

        // Each write through instance two, then revalidation on one.
        for what in ["toggle", "toggle back", "update", "create"] {
            let write = match what {
                "toggle" | "toggle back" => two.toggle(&token, &c["id"]).await,
                "update" => {
                    two.update(&token, &b["id"], &json!({"description": what}))
                        .await
                }
                _ => two.create(&token, &json!({"title": "d"})).await,
            };
            assert!(write.status().is_success(), "{what}");
            let res = revalidate(&one, &path, &token, &tag).await;
            assert_eq!(res.status(), 200, "{query}: after {what}");
            let new_tag = etag(&res);
            assert_ne!(new_tag, tag, "{query}: after {what}");
            tag = new_tag;
        }
        // Deleting the newest task changes every list and page.
        let newest: Vec<Value> = one.list(&token, "").await.json().await.unwrap();
        assert_eq!(two.delete(&token, &newest[0]["id"]).await.status(), 204);
        let res = revalidate(&one, &path, &token, &tag).await;
        assert_eq!(res.status(), 200, "{query}: after delete");
        assert_ne!(etag(&res), tag);
    }
    one.stop().await;
    two.stop().await;
}

async fn stale_if_match_is_412_for_every_write_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    let created = app.create(&token, &json!({"title": "a"})).await;
    let stale = etag(&created);
    let task: Value = created.json().await.unwrap();
    let id = task["id"].as_i64().unwrap();
    let other_tab = app.update(&token, id, &json!({"title": "b"})).await;
    let current = etag(&other_tab);
    let current_body: Value = other_tab.json().await.unwrap();
    let path = format!("/api/tasks/{id}");
    let toggle = format!("/api/tasks/{id}/complete");
    let attempts = [
        (Method::PUT, path.as_str(), Some(json!({"title": "lost"}))),
        (
            Method::PATCH,
            path.as_str(),
            Some(json!({"completed": true})),
        ),
        (Method::PATCH, toggle.as_str(), None),
        (Method::DELETE, path.as_str(), None),
    ];
    // A stale tag, and a weak form of the current one (never a match).
    let refused = [stale.clone(), format!("W/{current}")];
    for (method, target, body) in &attempts {
        for tag in &refused {
            let headers = [("If-Match", tag.as_str())];
            let res = send(
                &app,
                method.clone(),
                target,
                &token,
                &headers,
                body.as_ref(),
            )
            .await;
            assert_error(res, 412, "precondition_failed").await;
        }
    }
    let res = app.get(&token, id).await;
    assert_eq!(etag(&res), current, "nothing was written");
    assert_eq!(res.json::<Value>().await.unwrap(), current_body);

    // The current tag, alone or among others, lets each write through, and
    // every write answers with the next tag.
    let mut tag = current;
    for (method, target, body) in &attempts[..3] {
        let list = format!("{stale}, {tag}");
        let res = send(
            &app,
            method.clone(),
            target,
            &token,
            &[("If-Match", &list)],
            body.as_ref(),
        )
        .await;
        assert_eq!(res.status(), 200, "{method} {target}");
        let next = etag(&res);
        assert_ne!(next, tag);
        assert_eq!(etag(&app.get(&token, id).await), next);
        tag = next;
    }
    let res = send(
        &app,
        Method::DELETE,
        &path,
        &token,
        &[("If-Match", &tag)],
        None,
    )
    .await;
    assert_eq!(res.status(), 204);
    assert_eq!(app.get(&token, id).await.status(), 404);
}

async fn if_match_star_means_exists_and_missing_tasks_are_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice");
    let bob = app.token("bob");
    let created = app.create(&alice, &json!({"title": "a"})).await;
    let tag = etag(&created);
    let task: Value = created.json().await.unwrap();
    let id = task["id"].as_i64().unwrap();
    let path = format!("/api/tasks/{id}");

    let res = send(
        &app,
        Method::PATCH,
        &path,
        &alice,
        &[("If-Match", "*")],
        Some(&json!({"title": "b"})),
    )
    .await;
    assert_eq!(res.status(), 200);
    let tag_b = etag(&res);

    // Another user's task, even with its right tag, and a missing task with
    // any tag or `*`, are 404, never 412.
    for value in [tag.as_str(), tag_b.as_str(), "*"] {
        let res = send(
            &app,
            Method::PUT,
            &path,
            &bob,
            &[("If-Match", value)],
            Some(&json!({"title": "x"})),
        )
        .await;
        assert_error(res, 404, "not_found").await;
        let res = send(
            &app,
            Method::DELETE,
            &path,
            &bob,
            &[("If-Match", value)],
            None,
        )
        .await;
        assert_error(res, 404, "not_found").await;
        let res = send(
            &app,
            Method::DELETE,
            "/api/tasks/999999",
            &alice,
            &[("If-Match", value)],
            None,
        )
        .await;
        assert_error(res, 404, "not_found").await;
    }
    // A tag of another task does not match this one.
    let other = app.create(&alice, &json!({"title": "o"})).await;
    let other_tag = etag(&other);
    let res = send(
        &app,
        Method::DELETE,
        &path,
        &alice,
        &[("If-Match", &other_tag)],
        None,
    )
    .await;
    assert_error(res, 412, "precondition_failed").await;
    let res = send(
        &app,
        Method::DELETE,
        &path,
        &alice,
        &[("If-Match", "*")],
        None,
    )
    .await;
    assert_eq!(res.status(), 204);
    let res = send(
        &app,
        Method::DELETE,
        &path,
        &alice,
        &[("If-Match", "*")],
        None,
    )
    .await;
    assert_error(res, 404, "not_found").await;
}

/// Follows `Link` from `first` and returns the pages.
async fn follow(app: &TestApp, token: &str, first: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(path) = next {
        let res = send(app, Method::GET, &path, token, &[], None).await;
        assert_eq!(res.status(), 200, "{path}");
        next = next_link(&res);
        let tag = etag(&res);
        let res2 = revalidate(app, &path, token, &tag).await;
        assert_eq!(next_link(&res2), next, "a 304 repeats the Link");
        assert_not_modified(res2, &tag).await;
        pages.push(res.json().await.unwrap());
        assert!(pages.len() < 100, "pages end");
    }
    pages
}

async fn pages_together_are_the_list(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    for i in 0..7 {
        let task = app.create_ok(&token, &format!("t{i}")).await;
        if i % 2 == 0 {
            app.toggle(&token, &task["id"]).await;
        }
    }
    let _ = app.create_ok(&app.token("bob"), "bob's").await;
    for (status, size) in [("all", 7), ("completed", 4), ("active", 3)] {
        let full: Vec<Value> = app
            .list(&token, &format!("?status={status}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(full.len(), size);
        for limit in [1, 3, 7, 1000] {
            let pages = follow(
                &app,
                &token,
                &format!("/api/tasks?status={status}&limit={limit}"),
            )
            .await;
            assert_eq!(pages.len(), size.div_ceil(limit).max(1), "{status} {limit}");
            assert!(pages.iter().all(|p| p.len() <= limit));
            let joined: Vec<Value> = pages.into_iter().flatten().collect();
            assert_eq!(joined, full, "{status} limit {limit}");
        }
    }
    // The plain list carries no Link, and `?limit` of an empty list is [].
    assert!(next_link(&app.list(&token, "").await).is_none());
    let empty = app.list(&app.token("carol"), "?limit=5").await;
    assert!(next_link(&empty).is_none());
    assert_eq!(
        empty.json::<Vec<Value>>().await.unwrap(),
        Vec::<Value>::new()
    );
}

async fn foreign_tampered_and_mismatched_cursors_and_bad_limits_are_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token("alice");
    let bob = app.token("bob");
    for i in 0..3 {
        app.create_ok(&alice, &format!("a{i}")).await;
        app.create_ok(&bob, &format!("b{i}")).await;
    }
    let res = app.list(&alice, "?limit=1").await;
    let next = next_link(&res).expect("a next page");
    let cursor = next.split("cursor=").nth(1).unwrap().to_owned();

    // Bob replaying Alice's cursor gets a 400, not his or her rows.
    let res = app.list(&bob, &format!("?limit=1&cursor={cursor}")).await;
    assert_error(res, 400, "validation_error").await;
    // The same cursor under another filter.
    let res = app
        .list(&alice, &format!("?status=active&cursor={cursor}"))
        .await;
    assert_error(res, 400, "validation_error").await;
    // Any single changed character.
    let mut tampered = Vec::new();
    for i in 0..cursor.len() {
        let mut bytes = cursor.clone().into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        tampered.push(String::from_utf8(bytes).unwrap());
    }
    tampered.extend(["", "x", "MTIz", "!!", "%00"].map(str::to_owned));
    for bad in tampered {
        let res = app.list(&alice, &format!("?cursor={bad}")).await;
        assert_error(res, 400, "validation_error").await;
    }
    // The genuine cursor works for its owner (page size 100 by default).
    let res = app.list(&alice, &format!("?cursor={cursor}")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Vec<Value>>().await.unwrap().len(), 2);

    for limit in ["0", "1001", "-1", "abc", "", "1.5", "99999999999"] {
        let res = app.list(&alice, &format!("?limit={limit}")).await;
        assert_error(res, 400, "validation_error").await;
    }
    for limit in ["1", "1000"] {
        assert_eq!(
            app.list(&alice, &format!("?limit={limit}")).await.status(),
            200
        );
    }
}

async fn cors_exposes_the_new_headers_and_preflights_pass(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token("alice");
    let origin = "http://localhost:3000";
    let res = send(
        &app,
        Method::GET,
        "/api/tasks",
        &token,
        &[("Origin", origin)],
        None,
    )
    .await;
    let exposed = res
        .headers()
        .get("access-control-expose-headers")
        .expect("exposed headers")
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in ["etag", "link", "location", "retry-after"] {
        assert!(
            exposed.split(',').any(|h| h.trim() == name),
            "{name} in {exposed}"
        );
    }
    for (method, headers) in [
        ("PUT", "if-match,authorization,content-type"),
        ("GET", "if-none-match,authorization"),
    ] {
        let res = app
            .client
            .request(Method::OPTIONS, app.url("/api/tasks/1"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", method)
            .header("Access-Control-Request-Headers", headers)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{method} {headers}");
        let allowed = res
            .headers()
            .get("access-control-allow-headers")
            .expect("allowed headers")
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(
            allowed.contains(headers.split(',').next().unwrap()),
            "{allowed}"
        );
    }
}

on_both_backends!(
    get_revalidates_until_the_task_changes,
    list_etag_follows_every_change_through_any_instance,
    stale_if_match_is_412_for_every_write_and_changes_nothing,
    if_match_star_means_exists_and_missing_tasks_are_404,
    pages_together_are_the_list,
    foreign_tampered_and_mismatched_cursors_and_bad_limits_are_400,
    cors_exposes_the_new_headers_and_preflights_pass,
);
