pub mod health;
pub mod listing;
pub mod tasks;
