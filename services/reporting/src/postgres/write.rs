//! The projection's writes. Each runs inside the idempotent consumer's transaction, which
//! also records the event in the inbox, so one event is one transaction.

use reseller_kit::ids::{KnoxId, ResellerId};
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::domain::{Account, AddedCustomer, CustomerStatus};

/// Records an account, and brings the account's rows of every reseller up to date if
/// they say otherwise.
///
/// # Errors
/// Database errors.
pub async fn upsert_account(conn: &mut PgConnection, account: &Account) -> Result<(), sqlx::Error> {
    let changed = sqlx::query(
        "INSERT INTO reporting.accounts (knox_id, kind, company_name, country) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (knox_id) DO UPDATE \
         SET kind = EXCLUDED.kind, company_name = EXCLUDED.company_name, country = EXCLUDED.country \
         WHERE (accounts.kind, accounts.company_name, accounts.country) \
               IS DISTINCT FROM (EXCLUDED.kind, EXCLUDED.company_name, EXCLUDED.country)",
    )
    .bind(account.knox_id.as_str())
    .bind(account.kind.as_db())
    .bind(&account.company_name)
    .bind(&account.country)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if changed > 0 {
        sqlx::query(
            "UPDATE reporting.customer_rows SET kind = $2, company_name = $3, country = $4 \
             WHERE knox_id = $1 AND (kind, company_name, country) IS DISTINCT FROM ($2, $3, $4)",
        )
        .bind(account.knox_id.as_str())
        .bind(account.kind.as_db())
        .bind(&account.company_name)
        .bind(&account.country)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Records that a reseller added an account: creates its row, or completes the row that
/// already exists (a repeated event, or a row that virtual uploads created first).
///
/// The status is the one the last `customer_status_changed` for the pair recorded, when
/// there is one, else the event's. In stream order both agree (customer-service derives
/// the event's status from the same approvals); when a retried event arrives late, the
/// recorded decision is the newer information.
///
/// # Errors
/// Database errors.
pub async fn add_customer(
    conn: &mut PgConnection,
    customer: &AddedCustomer,
) -> Result<(), sqlx::Error> {
    upsert_account(&mut *conn, &customer.account).await?;
    sqlx::query(
        "INSERT INTO reporting.customer_rows AS r \
           (reseller_id, knox_id, kind, company_name, country, internal_reference, status, \
            added, added_at) \
         VALUES ($1, $2, $3, $4, $5, $6, \
           COALESCE((SELECT a.status FROM reporting.approvals a \
                     WHERE a.reseller_id = $1 AND a.knox_id = $2), $7), \
           true, $8) \
         ON CONFLICT (reseller_id, knox_id) DO UPDATE \
         SET kind = EXCLUDED.kind, company_name = EXCLUDED.company_name, \
             country = EXCLUDED.country, internal_reference = EXCLUDED.internal_reference, \
             status = EXCLUDED.status, added = true, added_at = EXCLUDED.added_at",
    )
    .bind(customer.reseller_id.as_str())
    .bind(customer.account.knox_id.as_str())
    .bind(customer.account.kind.as_db())
    .bind(&customer.account.company_name)
    .bind(&customer.account.country)
    .bind(&customer.internal_reference)
    .bind(customer.status.as_db())
    .bind(customer.added_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Replaces a reseller's internal reference for an account it added. Returns `false`
/// when the reseller has no such customer (yet).
///
/// # Errors
/// Database errors.
pub async fn update_reference(
    conn: &mut PgConnection,
    reseller_id: &ResellerId,
    knox_id: &KnoxId,
    reference: &str,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE reporting.customer_rows SET internal_reference = $3 \
         WHERE reseller_id = $1 AND knox_id = $2 AND added",
    )
    .bind(reseller_id.as_str())
    .bind(knox_id.as_str())
    .bind(reference)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(updated > 0)
}

/// Records the status an account's decision gives a reseller, and shows it on the row if
/// the reseller added the account (rows that exist only through virtual uploads show
/// `ACTIVE` whatever the decision, DOMAIN.md).
///
/// # Errors
/// Database errors.
pub async fn change_status(
    conn: &mut PgConnection,
    reseller_id: &ResellerId,
    knox_id: &KnoxId,
    status: CustomerStatus,
    changed_at: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO reporting.approvals (reseller_id, knox_id, status, changed_at) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (reseller_id, knox_id) DO UPDATE \
         SET status = EXCLUDED.status, changed_at = EXCLUDED.changed_at",
    )
    .bind(reseller_id.as_str())
    .bind(knox_id.as_str())
    .bind(status.as_db())
    .bind(changed_at)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE reporting.customer_rows SET status = $3 \
         WHERE reseller_id = $1 AND knox_id = $2 AND added AND status <> $3",
    )
    .bind(reseller_id.as_str())
    .bind(knox_id.as_str())
    .bind(status.as_db())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
