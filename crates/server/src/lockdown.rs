//! Lockdown: the admin puts a site into lockdown, or lifts it, with one order that every door of
//! the site takes. Under lockdown a door refuses every credential but EMERGENCY ones
//! (`DENIED_LOCKDOWN`); its exit button still opens it.
//!
//! An order is signed with the site key this server holds
//! ([`chronolock_core::lockdown::LockdownOrder`]), under a sequence number that rises by one per
//! site: a door takes only an order above the one it holds, so an old order replayed to it
//! changes nothing, and it keeps the order across reboots. The newest order is handed out with
//! every sync ([`crate::device_api::SqlDevices`]) and wakes every held watch
//! ([`crate::watch`]), so online doors learn it within a second or two. The stored orders are
//! also the record of who gave each and when.

use chronolock_core::lockdown::LockdownOrder;
use serde::Serialize;
use utoipa::ToSchema;

use crate::model::ModelError;
use crate::AppState;

/// One order, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Order {
    /// The site.
    pub site_id: i64,
    /// Its sequence number on the site (1, 2, …).
    pub seq: i64,
    /// Lockdown on (`true`) or lifted.
    pub on: bool,
    /// When it was given (Unix seconds, as signed).
    pub issued_at: i64,
    /// The admin who gave it (`null`: not given from the admin UI).
    pub admin: Option<String>,
}

type OrderRow = (i64, i64, i32, i64, Option<String>);

const ORDER_SELECT: &str =
    "SELECT site_id, seq, active, issued_at, admin_name FROM lockdown_orders";

fn order_of((site_id, seq, active, issued_at, admin): OrderRow) -> Order {
    Order {
        site_id,
        seq,
        on: active != 0,
        issued_at,
        admin,
    }
}

/// Who gives an order.
#[derive(Clone, Copy, Debug)]
pub struct GivenBy<'a> {
    /// The admin's id.
    pub admin_id: i64,
    /// The admin's name, kept with the order.
    pub admin: &'a str,
}

/// Puts the site into lockdown (`on`) or lifts it, signed with the site key, and wakes the
/// doors' watches. An order that would not change the site's state is not given: the current
/// one is returned.
pub async fn give(
    state: &AppState,
    site_id: i64,
    on: bool,
    by: Option<GivenBy<'_>>,
) -> Result<Order, ModelError> {
    // Two server processes may give an order at once: the sequence is unique per site, and the
    // loser signs the next number.
    for _attempt in 0..5 {
        let latest = latest(state, site_id).await?;
        if let Some(current) = latest.as_ref().filter(|o| o.on == on) {
            return Ok(current.clone());
        }
        let seq = latest.map_or(1, |o| o.seq + 1);
        let issued_at = crate::now_unix();
        let signed = LockdownOrder {
            seq: seq as u64,
            on,
            issued_unix: issued_at,
        }
        .sign(&state.signing_key);
        let inserted = sqlx::query(
            "INSERT INTO lockdown_orders (site_id, seq, active, issued_at, admin_id, admin_name, signed) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(site_id)
        .bind(seq)
        .bind(i32::from(on))
        .bind(issued_at)
        .bind(by.map(|b| b.admin_id))
        .bind(by.map(|b| b.admin.to_string()))
        .bind(signed.to_vec())
        .execute(state.db.pool())
        .await;
        match inserted {
            Ok(_) => {
                tracing::info!(
                    site_id,
                    seq,
                    on,
                    admin = by.map_or("-", |b| b.admin),
                    "lockdown order given"
                );
                // Syncs and watches answered from memory see the order before they are woken.
                state.door_cache.reload_site(&state.db, site_id).await?;
                state.watches.everything_changed();
                return Ok(Order {
                    site_id,
                    seq,
                    on,
                    issued_at,
                    admin: by.map(|b| b.admin.to_string()),
                });
            }
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => continue,
            Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
                return Err(ModelError::NotFound)
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(crate::model::invalid(
        "lockdown",
        "orders kept being given at the same time; try again",
    ))
}

/// The site's newest order, if it ever had one.
pub async fn latest(state: &AppState, site_id: i64) -> Result<Option<Order>, ModelError> {
    let row: Option<OrderRow> = sqlx::query_as(&format!(
        "{ORDER_SELECT} WHERE site_id = $1 ORDER BY seq DESC LIMIT 1"
    ))
    .bind(site_id)
    .fetch_optional(state.db.pool())
    .await?;
    Ok(row.map(order_of))
}

/// Every site's newest order (sites that never had one are left out), by site id.
pub async fn latest_per_site(state: &AppState) -> Result<Vec<Order>, ModelError> {
    let rows: Vec<OrderRow> = sqlx::query_as(&format!(
        "{ORDER_SELECT} o WHERE seq = (SELECT MAX(x.seq) FROM lockdown_orders x \
         WHERE x.site_id = o.site_id) ORDER BY site_id"
    ))
    .fetch_all(state.db.pool())
    .await?;
    Ok(rows.into_iter().map(order_of).collect())
}

/// The site's orders, newest first, at most `limit`.
pub async fn history(state: &AppState, site_id: i64, limit: i64) -> Result<Vec<Order>, ModelError> {
    let rows: Vec<OrderRow> = sqlx::query_as(&format!(
        "{ORDER_SELECT} WHERE site_id = $1 ORDER BY seq DESC LIMIT $2"
    ))
    .bind(site_id)
    .bind(limit)
    .fetch_all(state.db.pool())
    .await?;
    Ok(rows.into_iter().map(order_of).collect())
}
