//! Better Auth session tokens over HTTP, against a PostgreSQL database shaped
//! like Better Auth's (reached through PgBouncer in transaction mode in the
//! `pgbouncer::` variant), with every cache off so that each request is a
//! lookup.

use serde_json::json;

use crate::helpers::{Backend, TestApp, TestDb, assert_error};
use crate::on_both_backends;

/// Better Auth's `user` and `session` tables in a fresh database (through
/// PgBouncer for that backend), with one session per user id; returns the
/// database guard and its URL.
async fn better_auth_database(backend: Backend, users: &[(&str, &str)]) -> (TestDb, String) {
    let via = if backend == Backend::PgBouncer {
        Backend::PgBouncer
    } else {
        Backend::Postgres
    };
    let (db, url) = TestDb::create(via).await;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(crate::helpers::BETTER_AUTH_SCHEMA)
        .await
        .unwrap();
    for (i, (user, token)) in users.iter().enumerate() {
        client
            .execute(
                r#"INSERT INTO "user" ("id", "name", "email", "emailVerified") VALUES ($1, 'n', $2, false)"#,
                &[user, &format!("u{i}@example.com")],
            )
            .await
            .unwrap();
        client
            .execute(
                r#"INSERT INTO "session" ("id", "expiresAt", "token", "updatedAt", "userId")
                   VALUES ($1, now() + interval '1 hour', $2, now(), $3)"#,
                &[&format!("s{i}"), token, user],
            )
            .await
            .unwrap();
    }
    (db, url)
}

fn session_token(i: usize) -> String {
    format!("SessionToken{i:04}SessionToken{i:04}")
}

async fn concurrent_session_lookups_succeed(backend: Backend) {
    let names: Vec<(String, String)> = (0..16)
        .map(|i| (format!("user-{i}"), session_token(i)))
        .collect();
    let users: Vec<(&str, &str)> = names
        .iter()
        .map(|(u, t)| (u.as_str(), t.as_str()))
        .collect();
    let (_ba_db, ba_url) = better_auth_database(backend, &users).await;
    let app = TestApp::spawn_with(
        backend,
        &[
            ("BETTER_AUTH_DATABASE_URL", &ba_url),
            ("BETTER_AUTH_DATABASE_POOL_SIZE", "3"),
            ("TOKEN_CACHE_SIZE", "0"),
            ("SESSION_NEGATIVE_CACHE_TTL_SECS", "0"),
        ],
    )
    .await;
    let app = std::sync::Arc::new(app);
    let clients: Vec<_> = names
        .iter()
        .cloned()
        .map(|(user, token)| {
            let app = app.clone();
            tokio::spawn(async move {
                for n in 0..4 {
                    let task = app.create_ok(&token, &format!("task {n}")).await;
                    assert_eq!(task["user_id"], user.as_str());
                    let listed = app.list_ok(&token).await;
                    assert_eq!(listed.len(), n + 1);
                    // A made-up token is a 401, never a 503.
                    let res = app.list(&format!("MadeUp{n}{user}MadeUpMadeUp"), "").await;
                    assert_error(res, 401, "authentication_error").await;
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
}

async fn blank_session_user_id_is_rejected(backend: Backend) {
    let (_ba_db, ba_url) =
        better_auth_database(backend, &[("   ", "BlankUserSessionBlankUserSession")]).await;
    let app = TestApp::spawn_with(backend, &[("BETTER_AUTH_DATABASE_URL", &ba_url)]).await;
    let res = app
        .create(
            "BlankUserSessionBlankUserSession",
            &json!({"title": "nobody's"}),
        )
        .await;
    let body = assert_error(res, 401, "authentication_error").await;
    assert!(
        body["detail"].as_str().unwrap().contains("white space"),
        "{body}"
    );
}

on_both_backends!(
    concurrent_session_lookups_succeed,
    blank_session_user_id_is_rejected
);
