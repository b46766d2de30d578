//! SQLite's own speed for the service's statements: the ceiling of the SQLite
//! scenarios, as pgbench is PostgreSQL's.
//!
//! Each thread opens its own connection to the file (as the service's pool
//! does, with the same `busy_timeout` and `foreign_keys`), prepares the
//! scenario's statement once (the exact SQL diesel sends for the service's
//! query) and runs it in a tight loop for a random user, stepping through
//! every row and reading every column, until the duration is over. It prints
//! one line: `CEILINGJSON {...}` with the operations per second.
//!
//! Usage: sqlite-ceiling DB SCENARIO THREADS SECONDS USERS TASKS_PER_USER PAD HOARDER
//! (SCENARIO: list, get, list10k or create). bench/bench.py runs it pinned
//! to the server's core with as many threads as the service's pool has
//! connections.

use std::ffi::{CStr, CString, c_int};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use libsqlite3_sys as ffi;

/// `GET /api/tasks`: diesel's SQL for the list query in
/// crates/tasks-store/src/lib.rs (`list_here`), first batch (128 rows).
const LIST: &str = "SELECT `tasks`.`id`, `tasks`.`user_id`, `tasks`.`title`, `tasks`.`description`, `tasks`.`completed`, `tasks`.`created_at`, `tasks`.`updated_at` FROM `tasks` WHERE ((`tasks`.`user_id` = ?) AND (`tasks`.`id` <= ?)) ORDER BY `tasks`.`id` DESC LIMIT ?";
/// `GET /api/tasks/{id}` (`get_here`).
const GET: &str = "SELECT `tasks`.`id`, `tasks`.`user_id`, `tasks`.`title`, `tasks`.`description`, `tasks`.`completed`, `tasks`.`created_at`, `tasks`.`updated_at` FROM `tasks` WHERE ((`tasks`.`id` = ?) AND (`tasks`.`user_id` = ?)) LIMIT ?";
/// `POST /api/tasks` (`SQLITE_CREATE`), one autocommit transaction each.
const CREATE: &str = "INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at)
SELECT ?1, ?3, ?4, 0, ?5, ?5
WHERE (SELECT count(*) FROM tasks WHERE user_id = ?1) < ?2
RETURNING id, user_id, title, description, completed, created_at, updated_at";
/// The service's first batch of a list.
const FIRST_BATCH: i64 = 128;

struct Args {
    db: String,
    scenario: String,
    threads: usize,
    seconds: f64,
    users: u64,
    tpu: u64,
    pad: usize,
    hoarder: String,
}

fn args() -> Args {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 8 {
        eprintln!(
            "usage: sqlite-ceiling DB SCENARIO THREADS SECONDS USERS TASKS_PER_USER PAD HOARDER"
        );
        std::process::exit(2);
    }
    let num = |i: usize| -> u64 {
        a[i].parse().unwrap_or_else(|_| {
            eprintln!("argument {} is not a number: {}", i + 1, a[i]);
            std::process::exit(2)
        })
    };
    Args {
        db: a[0].clone(),
        scenario: a[1].clone(),
        threads: num(2) as usize,
        seconds: a[3].parse().unwrap_or(10.0),
        users: num(4),
        tpu: num(5),
        pad: num(6) as usize,
        hoarder: a[7].clone(),
    }
}

struct Conn(*mut ffi::sqlite3);
unsafe impl Send for Conn {}

impl Conn {
    fn open(path: &str) -> Conn {
        let path = CString::new(path).expect("path without NUL");
        let mut db = ptr::null_mut();
        // The flags diesel's SqliteConnection::establish uses.
        let flags = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE | ffi::SQLITE_OPEN_URI;
        let rc = unsafe { ffi::sqlite3_open_v2(path.as_ptr(), &mut db, flags, ptr::null()) };
        check(db, rc, "open");
        let conn = Conn(db);
        conn.exec("PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;");
        conn
    }

    fn exec(&self, sql: &str) {
        let sql = CString::new(sql).expect("sql without NUL");
        let rc = unsafe {
            ffi::sqlite3_exec(self.0, sql.as_ptr(), None, ptr::null_mut(), ptr::null_mut())
        };
        check(self.0, rc, "exec");
    }

    fn prepare(&self, sql: &str) -> *mut ffi::sqlite3_stmt {
        let mut stmt = ptr::null_mut();
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                self.0,
                sql.as_ptr().cast(),
                sql.len() as c_int,
                ffi::SQLITE_PREPARE_PERSISTENT as u32,
                &mut stmt,
                ptr::null_mut(),
            )
        };
        check(self.0, rc, "prepare");
        stmt
    }
}

fn check(db: *mut ffi::sqlite3, rc: c_int, what: &str) {
    if rc != ffi::SQLITE_OK {
        let msg = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db)) };
        eprintln!("sqlite-ceiling: {what} failed ({rc}): {}", msg.to_string_lossy());
        std::process::exit(1);
    }
}

fn bind_text(stmt: *mut ffi::sqlite3_stmt, i: c_int, s: &str) {
    unsafe {
        ffi::sqlite3_bind_text(
            stmt,
            i,
            s.as_ptr().cast(),
            s.len() as c_int,
            ffi::SQLITE_TRANSIENT(),
        );
    }
}

/// Steps through every row, reading every column as the service's row type
/// does (integers, texts with their lengths); returns the rows read.
fn drain(db: *mut ffi::sqlite3, stmt: *mut ffi::sqlite3_stmt, sink: &mut u64) -> u64 {
    let mut rows = 0;
    loop {
        match unsafe { ffi::sqlite3_step(stmt) } {
            ffi::SQLITE_ROW => unsafe {
                rows += 1;
                *sink = sink.wrapping_add(ffi::sqlite3_column_int64(stmt, 0) as u64);
                for col in [1, 2, 3, 5, 6] {
                    let p = ffi::sqlite3_column_text(stmt, col);
                    let n = ffi::sqlite3_column_bytes(stmt, col);
                    if !p.is_null() {
                        *sink = sink.wrapping_add(u64::from(*p) + n as u64);
                    }
                }
                *sink = sink.wrapping_add(ffi::sqlite3_column_int(stmt, 4) as u64);
            },
            ffi::SQLITE_DONE => break,
            rc => check(db, rc, "step"),
        }
    }
    unsafe { ffi::sqlite3_reset(stmt) };
    rows
}

fn worker(args: Arc<Args>, seed: u64, stop: Arc<AtomicBool>) -> (u64, u64, u64) {
    let conn = Conn::open(&args.db);
    let sql = match args.scenario.as_str() {
        "list" | "list10k" => LIST,
        "get" => GET,
        "create" => CREATE,
        other => {
            eprintln!("sqlite-ceiling: unknown scenario {other}");
            std::process::exit(2);
        }
    };
    let stmt = conn.prepare(sql);
    let mut rng = seed | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let user = |i: u64| format!("bench-user-{i:0width$}", width = args.pad);
    let (mut ops, mut rows, mut sink) = (0u64, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        match args.scenario.as_str() {
            "list" | "list10k" => {
                let owner = if args.scenario == "list" {
                    user(next(args.users) + 1)
                } else {
                    args.hoarder.clone()
                };
                let limit = if args.scenario == "list" {
                    FIRST_BATCH
                } else {
                    i64::MAX
                };
                bind_text(stmt, 1, &owner);
                unsafe {
                    ffi::sqlite3_bind_int64(stmt, 2, i64::MAX);
                    ffi::sqlite3_bind_int64(stmt, 3, limit);
                }
            }
            "get" => {
                let id = next(args.users * args.tpu) + 1;
                unsafe { ffi::sqlite3_bind_int64(stmt, 1, id as i64) };
                bind_text(stmt, 2, &user((id - 1) / args.tpu + 1));
                unsafe { ffi::sqlite3_bind_int64(stmt, 3, 1) };
            }
            _ => {
                bind_text(stmt, 1, &user(next(args.users) + 1));
                unsafe { ffi::sqlite3_bind_int64(stmt, 2, 10_000) };
                bind_text(stmt, 3, "bench create");
                bind_text(stmt, 4, "created by sqlite-ceiling");
                bind_text(stmt, 5, "2026-01-01 00:00:00.000000+00:00");
            }
        }
        rows += drain(conn.0, stmt, &mut sink);
        ops += 1;
    }
    unsafe {
        ffi::sqlite3_finalize(stmt);
        ffi::sqlite3_close(conn.0);
    }
    (ops, rows, sink)
}

fn main() {
    let args = Arc::new(args());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..args.threads)
        .map(|t| {
            let (args, stop) = (args.clone(), stop.clone());
            let seed = started.elapsed().as_nanos() as u64 ^ (0x9e37_79b9_7f4a_7c15 * (t as u64 + 1));
            std::thread::spawn(move || worker(args, seed, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    stop.store(true, Ordering::Relaxed);
    let (mut ops, mut rows, mut sink) = (0, 0, 0u64);
    for h in handles {
        let (o, r, s) = h.join().expect("worker panicked");
        ops += o;
        rows += r;
        sink = sink.wrapping_add(s);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "CEILINGJSON {{\"scenario\":\"{}\",\"threads\":{},\"ops\":{ops},\"rows\":{rows},\"duration_s\":{secs:.3},\"rps\":{:.2},\"checksum\":{sink}}}",
        args.scenario,
        args.threads,
        ops as f64 / secs
    );
}
