pub mod health;
pub mod tasks;
