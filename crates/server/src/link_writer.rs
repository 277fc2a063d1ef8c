//! Group commit of what a device request must write before it is answered: the door's replay
//! counter, and the events of a sync.
//!
//! Every sync and check request carries a counter above the door's last (docs/protocol.md); the
//! server accepts it with one conditional update, atomic even with several server processes
//! sharing the database, before it stores, records or sends anything. Done one request at a
//! time that is one transaction per request. Here one writer task takes every request waiting,
//! advances all their counters in one statement, stores the events of those it accepted, and
//! commits once; each request then hears whether it was accepted.
//!
//! Durability: a transaction that stores events is made durable before any of its requests is
//! answered (SQLite: `synchronous = FULL` for that commit; PostgreSQL: its default synchronous
//! commit), since the door drops acknowledged events from its outbox. A transaction that only
//! advances counters is not flushed to disk at once (SQLite `NORMAL`, PostgreSQL
//! `synchronous_commit = off`): a power cut of the server may forget the counters of its last
//! fraction of a second, which lets a recorded copy of one of those requests be accepted once
//! more after the restart. That copy can only repeat a status report (its events are stored
//! once per device event id, its answer is bound to a nonce the door no longer waits for and
//! sealed to a key the replayer lacks); a CONDITIONAL check's answer is equally useless to it.

use std::collections::HashMap;
use std::sync::OnceLock;

use chronolock_core::protocol::WireEvent;
use sqlx::{Any, Connection, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::db::Backend;
use crate::Db;

/// Requests taken into one transaction, at most.
const MAX_BATCH: usize = 512;

struct Job {
    door_id: i64,
    counter: i64,
    events: Vec<WireEvent>,
    received_us: i64,
    /// Accepted, and webhooks to wake.
    reply: oneshot::Sender<Result<(bool, bool), String>>,
}

/// The writer; shared through [`crate::AppState::link_writer`]. Its task starts with the first
/// request and ends when the last handle to it is dropped.
#[derive(Debug, Default)]
pub struct LinkWriter {
    jobs: OnceLock<mpsc::UnboundedSender<Job>>,
}

impl LinkWriter {
    /// Advances `door_id`'s counter to `counter` if that is above the one stored and, if it
    /// was, stores `events` (each once per device event id, with the webhook deliveries they
    /// cause). `Ok(false)`: the counter is not newer, nothing was stored. Returns once the
    /// transaction is committed.
    pub async fn accept(
        &self,
        db: &Db,
        webhook_wake: &tokio::sync::Notify,
        door_id: i64,
        counter: u64,
        events: Vec<WireEvent>,
        received_us: i64,
    ) -> Result<bool, String> {
        let counter = i64::try_from(counter).map_err(|_| "counter out of range".to_string())?;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            door_id,
            counter,
            events,
            received_us,
            reply,
        };
        let jobs = self.jobs.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(db.clone(), rx));
            tx
        });
        jobs.send(job)
            .map_err(|_| "the link writer has stopped".to_string())?;
        let accepted = answer
            .await
            .map_err(|_| "the link writer dropped the request".to_string())??;
        if accepted.1 {
            webhook_wake.notify_one();
        }
        Ok(accepted.0)
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("door_id", &self.door_id)
            .field("counter", &self.counter)
            .field("events", &self.events.len())
            .finish()
    }
}

async fn run(db: Db, mut rx: mpsc::UnboundedReceiver<Job>) {
    // A connection of its own: SQLite's sync mode is set per commit; PostgreSQL's advances
    // counters without waiting for the disk (see the module's notes on durability).
    let mut conn: Option<sqlx::AnyConnection> = None;
    let mut full = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let result = match db.backend() {
            Backend::Sqlite => commit_sqlite(&db, &mut conn, &mut full, &batch).await,
            Backend::Postgres => commit_postgres(&db, &mut conn, &batch).await,
        };
        if result.is_err() {
            // Start again from a fresh connection.
            conn = None;
            full = None;
        }
        reply(batch, result);
    }
}

/// Tells each request of a committed (or failed) batch what became of it.
fn reply(batch: Vec<Job>, result: Outcome) {
    match result {
        Ok((accepted, hooks)) => {
            for (i, job) in batch.into_iter().enumerate() {
                let ok = accepted.get(i).copied().unwrap_or(false);
                let _ = job
                    .reply
                    .send(Ok((ok, hooks && ok && !job.events.is_empty())));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "writing device counters and events");
            for job in batch {
                let _ = job.reply.send(Err(e.to_string()));
            }
        }
    }
}

type Outcome = Result<(Vec<bool>, bool), sqlx::Error>;

async fn commit_sqlite(
    db: &Db,
    conn: &mut Option<sqlx::AnyConnection>,
    full: &mut Option<bool>,
    batch: &[Job],
) -> Outcome {
    if conn.is_none() {
        // The pool's own settings (foreign keys, busy timeout) come with it.
        *conn = Some(db.pool().acquire().await?.detach());
    }
    let Some(c) = conn.as_mut() else {
        return Err(sqlx::Error::PoolClosed);
    };
    let want_full = batch.iter().any(|j| !j.events.is_empty());
    if *full != Some(want_full) {
        let pragma = if want_full {
            "PRAGMA synchronous = FULL"
        } else {
            "PRAGMA synchronous = NORMAL"
        };
        sqlx::query(pragma).execute(&mut *c).await?;
        *full = Some(want_full);
    }
    let mut tx = c.begin().await?;
    // SQLite locks the whole database for a write transaction: no rows to order.
    let outcome = write(&mut tx, batch, false).await?;
    tx.commit().await?;
    Ok(outcome)
}

async fn commit_postgres(
    db: &Db,
    conn: &mut Option<sqlx::AnyConnection>,
    batch: &[Job],
) -> Outcome {
    if batch.iter().any(|j| !j.events.is_empty()) {
        // Events: one transaction, committed synchronously (the pool's default).
        let mut tx = db.pool().begin().await?;
        let outcome = write(&mut tx, batch, true).await?;
        tx.commit().await?;
        return Ok(outcome);
    }
    // Counters alone: one statement, atomic by itself, on a connection that does not wait for
    // the disk.
    if conn.is_none() {
        let mut c = db.pool().acquire().await?.detach();
        sqlx::query("SET synchronous_commit = off")
            .execute(&mut c)
            .await?;
        *conn = Some(c);
    }
    let Some(c) = conn.as_mut() else {
        return Err(sqlx::Error::PoolClosed);
    };
    Ok((advance(c, batch, true).await?, false))
}

/// Advances the counters of the batch's doors (one candidate per door: its highest counter)
/// in one statement; returns which jobs were accepted. `lock_rows` (PostgreSQL): the rows are
/// first locked in door order, as every transaction that writes several doors locks them (the
/// status writer, the list compiler), so that none of them waits on another.
async fn advance(
    conn: &mut sqlx::AnyConnection,
    batch: &[Job],
    lock_rows: bool,
) -> Result<Vec<bool>, sqlx::Error> {
    // A door sends one request at a time, so two of its requests in one batch are a replay
    // racing its original, or reordered: only the highest counter may pass.
    let mut best: HashMap<i64, usize> = HashMap::new();
    for (i, job) in batch.iter().enumerate() {
        best.entry(job.door_id)
            .and_modify(|b| {
                if job.counter > batch[*b].counter {
                    *b = i;
                }
            })
            .or_insert(i);
    }
    let candidates: Vec<usize> = {
        let mut c: Vec<usize> = best.into_values().collect();
        c.sort_unstable();
        c
    };
    // The statement has room for a power of two of doors, the rest padded with door 0 (no
    // door has it): a dozen shapes in all, each prepared once per connection and planned once.
    let rows = candidates.len().next_power_of_two();
    let cast = if lock_rows { "::bigint" } else { "" };
    let values: Vec<String> = (0..rows)
        .map(|i| format!("(${}{cast}, ${}{cast})", 2 * i + 1, 2 * i + 2))
        .collect();
    let sql = if lock_rows {
        // The rows are locked in door order before they are written.
        format!(
            "WITH v AS (VALUES {}), \
             locked AS (SELECT d.id FROM doors d WHERE d.id IN (SELECT column1 FROM v) \
             ORDER BY d.id FOR UPDATE) \
             UPDATE doors SET link_counter = v.column2 FROM v \
             WHERE doors.id = v.column1 AND doors.id IN (SELECT id FROM locked) \
             AND doors.link_counter < v.column2 RETURNING doors.id",
            values.join(", ")
        )
    } else {
        format!(
            "UPDATE doors SET link_counter = v.column2 FROM (VALUES {}) AS v \
             WHERE doors.id = v.column1 AND doors.link_counter < v.column2 \
             RETURNING doors.id",
            values.join(", ")
        )
    };
    let mut query = sqlx::query_as::<_, (i64,)>(&sql);
    for &i in &candidates {
        query = query.bind(batch[i].door_id).bind(batch[i].counter);
    }
    for _ in candidates.len()..rows {
        query = query.bind(0i64).bind(0i64);
    }
    let advanced: std::collections::HashSet<i64> = query
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|(id,)| id)
        .collect();
    let mut accepted = vec![false; batch.len()];
    for &i in &candidates {
        accepted[i] = advanced.contains(&batch[i].door_id);
    }
    Ok(accepted)
}

/// The batch's writes in `tx`: which jobs were accepted, and whether webhooks are to be woken.
async fn write(tx: &mut Transaction<'_, Any>, batch: &[Job], lock_rows: bool) -> Outcome {
    let accepted = advance(tx, batch, lock_rows).await?;
    let mut stored = Vec::new();
    for (i, job) in batch.iter().enumerate() {
        if accepted[i] && !job.events.is_empty() {
            let now = job.received_us.div_euclid(1_000_000);
            stored.extend(
                crate::device_api::insert_events(tx, job.door_id, &job.events, job.received_us)
                    .await?
                    .into_iter()
                    .map(|(id, kind)| (id, kind, now)),
            );
        }
    }
    let hooks = crate::webhooks::enqueue_all(tx, &stored).await?;
    Ok((accepted, hooks))
}
