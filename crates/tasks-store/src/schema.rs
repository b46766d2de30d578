//! Diesel table definitions, one per backend. They differ only in the SQL type
//! of the timestamps (`timestamptz` on PostgreSQL, UTC text on SQLite); both map
//! to `chrono::DateTime<Utc>`, so every query is written once (see `lib.rs`).

pub mod pg {
    diesel::table! {
        tasks (id) {
            id -> BigInt,
            user_id -> Text,
            title -> Text,
            description -> Nullable<Text>,
            completed -> Bool,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
        }
    }
}

pub mod sqlite {
    diesel::table! {
        tasks (id) {
            id -> BigInt,
            user_id -> Text,
            title -> Text,
            description -> Nullable<Text>,
            completed -> Bool,
            created_at -> TimestamptzSqlite,
            updated_at -> TimestamptzSqlite,
        }
    }
}
