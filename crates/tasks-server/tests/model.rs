//! Property test of isolation and correctness: random sequences of every
//! operation by several users, checked step by step against an in-memory
//! model of what each user should see. Runs on PostgreSQL and on SQLite.
//!
//! `MODEL_CASES` sets the number of sequences per backend (default 2000).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, with the message"
)]

#[path = "api/helpers.rs"]
mod helpers;

use std::sync::atomic::{AtomicU64, Ordering};

use helpers::{Backend, TestApp};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

const USERS: u8 = 3;

#[derive(Debug, Clone)]
enum Op {
    Create {
        user: u8,
        title: String,
        description: Option<String>,
    },
    List {
        user: u8,
        filter: Option<bool>,
    },
    Get {
        user: u8,
        target: Target,
    },
    Update {
        user: u8,
        target: Target,
        title: Option<String>,
        description: Option<Option<String>>,
        completed: Option<bool>,
    },
    BadUpdate {
        user: u8,
        target: Target,
    },
    Toggle {
        user: u8,
        target: Target,
    },
    Delete {
        user: u8,
        target: Target,
    },
}

/// Which task an operation aims at: one created earlier in the sequence
/// (whoever owns it, deleted or not), or an id that never existed.
#[derive(Debug, Clone, Copy)]
enum Target {
    Created(usize),
    Missing,
}

fn title() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,12}",
        " [A-Za-z0-9][A-Za-z0-9 ]{0,19} ",
        Just("😀 emoji".to_owned()),
        Just("x".repeat(200)),
    ]
}

fn description() -> impl Strategy<Value = Option<String>> {
    prop_oneof![Just(None), "[a-z ]{0,30}".prop_map(Some)]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![9 => (0usize..16).prop_map(Target::Created), 1 => Just(Target::Missing)]
}

fn op() -> impl Strategy<Value = Op> {
    let user = 0..USERS;
    prop_oneof![
        3 => (user.clone(), title(), description()).prop_map(|(user, title, description)| Op::Create { user, title, description }),
        2 => (user.clone(), prop_oneof![Just(None), Just(Some(true)), Just(Some(false))]).prop_map(|(user, filter)| Op::List { user, filter }),
        2 => (user.clone(), target()).prop_map(|(user, target)| Op::Get { user, target }),
        2 => (
            user.clone(),
            target(),
            proptest::option::of(title()),
            proptest::option::of(description()),
            proptest::option::of(any::<bool>()),
        )
            .prop_map(|(user, target, title, description, completed)| Op::Update { user, target, title, description, completed }),
        1 => (user.clone(), target()).prop_map(|(user, target)| Op::BadUpdate { user, target }),
        2 => (user.clone(), target()).prop_map(|(user, target)| Op::Toggle { user, target }),
        1 => (user, target()).prop_map(|(user, target)| Op::Delete { user, target }),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct Model {
    id: i64,
    owner: u8,
    title: String,
    description: Option<String>,
    completed: bool,
    deleted: bool,
}

struct Case<'a> {
    app: &'a TestApp,
    tokens: Vec<String>,
    names: Vec<String>,
    created: Vec<Model>,
}

impl Case<'_> {
    fn id(&self, target: Target) -> Option<usize> {
        match target {
            Target::Created(i) if !self.created.is_empty() => Some(i % self.created.len()),
            _ => None,
        }
    }

    fn target_id(&self, target: Target) -> i64 {
        self.id(target).map_or(i64::MAX - 7, |i| self.created[i].id)
    }

    /// The model entry the caller can act on, if any.
    fn visible(&self, user: u8, target: Target) -> Option<usize> {
        self.id(target)
            .filter(|&i| self.created[i].owner == user && !self.created[i].deleted)
    }

    fn check(&self, user: u8, task: &Value, m: &Model) -> Result<(), TestCaseError> {
        prop_assert_eq!(task["id"].as_i64(), Some(m.id));
        prop_assert_eq!(
            task["user_id"].as_str(),
            Some(self.names[usize::from(user)].as_str()),
            "owner leak"
        );
        prop_assert_eq!(task["title"].as_str(), Some(m.title.as_str()));
        prop_assert_eq!(task["description"].as_str(), m.description.as_deref());
        prop_assert_eq!(task["completed"].as_bool(), Some(m.completed));
        Ok(())
    }

    async fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let app = self.app;
        match op.clone() {
            Op::Create {
                user,
                title,
                description,
            } => {
                let res = app
                    .create(
                        &self.tokens[usize::from(user)],
                        &json!({"title": title, "description": description}),
                    )
                    .await;
                prop_assert_eq!(res.status().as_u16(), 201);
                let task: Value = res.json().await.unwrap();
                let m = Model {
                    id: task["id"].as_i64().unwrap(),
                    owner: user,
                    title: title.trim().to_owned(),
                    description,
                    completed: false,
                    deleted: false,
                };
                self.check(user, &task, &m)?;
                self.created.push(m);
            }
            Op::List { user, filter } => {
                let query = match filter {
                    None => "",
                    Some(true) => "?status=completed",
                    Some(false) => "?status=active",
                };
                let res = app.list(&self.tokens[usize::from(user)], query).await;
                prop_assert_eq!(res.status().as_u16(), 200);
                let listed: Vec<Value> = res.json().await.unwrap();
                let mut expected: Vec<&Model> = self
                    .created
                    .iter()
                    .filter(|m| {
                        m.owner == user && !m.deleted && filter.is_none_or(|c| c == m.completed)
                    })
                    .collect();
                expected.sort_by_key(|m| std::cmp::Reverse(m.id));
                prop_assert_eq!(listed.len(), expected.len());
                for (task, m) in listed.iter().zip(expected) {
                    self.check(user, task, m)?;
                }
            }
            Op::Get { user, target } => {
                let res = app
                    .get(&self.tokens[usize::from(user)], self.target_id(target))
                    .await;
                match self.visible(user, target) {
                    Some(i) => {
                        prop_assert_eq!(res.status().as_u16(), 200);
                        let task: Value = res.json().await.unwrap();
                        self.check(user, &task, &self.created[i])?;
                    }
                    None => prop_assert_eq!(res.status().as_u16(), 404),
                }
            }
            Op::Update {
                user,
                target,
                title,
                description,
                completed,
            } => {
                let mut body = serde_json::Map::new();
                if let Some(t) = &title {
                    body.insert("title".into(), json!(t));
                }
                if let Some(d) = &description {
                    body.insert("description".into(), json!(d));
                }
                if let Some(c) = completed {
                    body.insert("completed".into(), json!(c));
                }
                let res = app
                    .update(
                        &self.tokens[usize::from(user)],
                        self.target_id(target),
                        &Value::Object(body),
                    )
                    .await;
                match self.visible(user, target) {
                    Some(i) => {
                        prop_assert_eq!(res.status().as_u16(), 200);
                        let m = &mut self.created[i];
                        if let Some(t) = title {
                            m.title = t.trim().to_owned();
                        }
                        if let Some(d) = description {
                            m.description = d;
                        }
                        if let Some(c) = completed {
                            m.completed = c;
                        }
                        let task: Value = res.json().await.unwrap();
                        self.check(user, &task, &self.created[i])?;
                    }
                    None => prop_assert_eq!(res.status().as_u16(), 404),
                }
            }
            Op::BadUpdate { user, target } => {
                let res = app
                    .update(
                        &self.tokens[usize::from(user)],
                        self.target_id(target),
                        &json!({"title": "   ", "completed": "yes"}),
                    )
                    .await;
                prop_assert_eq!(
                    res.status().as_u16(),
                    400,
                    "validation comes before lookup; nothing changes"
                );
            }
            Op::Toggle { user, target } => {
                let res = app
                    .toggle(&self.tokens[usize::from(user)], self.target_id(target))
                    .await;
                match self.visible(user, target) {
                    Some(i) => {
                        prop_assert_eq!(res.status().as_u16(), 200);
                        self.created[i].completed = !self.created[i].completed;
                        let task: Value = res.json().await.unwrap();
                        self.check(user, &task, &self.created[i])?;
                    }
                    None => prop_assert_eq!(res.status().as_u16(), 404),
                }
            }
            Op::Delete { user, target } => {
                let res = app
                    .delete(&self.tokens[usize::from(user)], self.target_id(target))
                    .await;
                match self.visible(user, target) {
                    Some(i) => {
                        prop_assert_eq!(res.status().as_u16(), 204);
                        self.created[i].deleted = true;
                    }
                    None => prop_assert_eq!(res.status().as_u16(), 404),
                }
            }
        }
        Ok(())
    }
}

static CASE: AtomicU64 = AtomicU64::new(0);

fn run_model(backend: Backend) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(TestApp::spawn(backend));
    let cases = std::env::var("MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..24), |ops| {
        // Fresh user names per case: cases (and shrink attempts) share the
        // database but can never see each other's users.
        let case = CASE.fetch_add(1, Ordering::SeqCst);
        let names: Vec<String> = (0..USERS)
            .map(|u| format!("model-{case}-user-{u}"))
            .collect();
        let tokens = names.iter().map(|n| helpers::token_for(n)).collect();
        let mut state = Case {
            app: &app,
            tokens,
            names,
            created: Vec::new(),
        };
        rt.block_on(async {
            for op in &ops {
                state.step(op).await?;
            }
            Ok(())
        })
    });
    rt.block_on(app.stop());
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn model_postgres() {
    run_model(Backend::Postgres);
}

#[test]
fn model_sqlite() {
    run_model(Backend::Sqlite);
}
