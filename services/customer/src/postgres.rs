//! customer-service's repository: every command is one transaction that also writes its
//! events to the outbox.

use reseller_kit::ids::{KnoxId, ResellerId};
use reseller_kit::outbox::Outbox;
use reseller_kit::portal::PortalDevice;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use time::OffsetDateTime;

use crate::domain::{
    Account, AccountKind, Approval, Customer, CustomerError, CustomerStatus, InternalReference,
    NewAccount,
};
use crate::events;

/// The service's outbox.
pub const OUTBOX: Outbox = Outbox::new(crate::SCHEMA);

/// Accounts, reseller customers and approvals in PostgreSQL.
#[derive(Debug, Clone)]
pub struct Repository {
    pool: PgPool,
}

const CUSTOMER_COLUMNS: &str = "rc.reseller_id, rc.internal_reference, rc.reference_revision, rc.added_at, \
     a.knox_id, a.kind, a.company_name, a.country, a.created_at, ap.approved, \
     coalesce(ap.revision, 0) AS status_revision";

fn account_from_row(row: &PgRow) -> Result<Account, sqlx::Error> {
    Ok(Account {
        knox_id: row.try_get("knox_id")?,
        kind: AccountKind::from_db(row.try_get("kind")?)?,
        company_name: row.try_get("company_name")?,
        country: row.try_get("country")?,
        created_at: row.try_get("created_at")?,
    })
}

fn customer_from_row(reseller_id: &ResellerId, row: &PgRow) -> Result<Customer, sqlx::Error> {
    Ok(Customer {
        reseller_id: reseller_id.clone(),
        account: account_from_row(row)?,
        internal_reference: row.try_get("internal_reference")?,
        reference_revision: row.try_get("reference_revision")?,
        status_revision: row.try_get("status_revision")?,
        status: CustomerStatus::from_approval(row.try_get("approved")?),
        added_at: row.try_get("added_at")?,
    })
}

impl Repository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Registers an account.
    ///
    /// # Errors
    /// [`CustomerError::AccountExists`] when the Knox ID is taken.
    pub async fn register_account(&self, new: NewAccount) -> Result<Account, CustomerError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO customer.accounts (knox_id, kind, company_name, country) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (knox_id) DO NOTHING \
             RETURNING knox_id, kind, company_name, country, created_at",
        )
        .bind(new.knox_id.as_str())
        .bind(new.kind.as_db())
        .bind(new.company_name.as_str())
        .bind(new.country.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| CustomerError::AccountExists(new.knox_id.to_string()))?;
        let account = account_from_row(&row)?;
        OUTBOX
            .enqueue(&mut tx, &[events::account_registered(&account)])
            .await?;
        tx.commit().await?;
        Ok(account)
    }

    /// Reads an account.
    ///
    /// # Errors
    /// [`CustomerError::AccountNotFound`] when unknown.
    pub async fn account(&self, knox_id: &KnoxId) -> Result<Account, CustomerError> {
        let row = sqlx::query(
            "SELECT knox_id, kind, company_name, country, created_at FROM customer.accounts \
             WHERE knox_id = $1",
        )
        .bind(knox_id.as_str())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| CustomerError::AccountNotFound(knox_id.to_string()))?;
        Ok(account_from_row(&row)?)
    }

    /// Adds an account to a reseller's customers, with the status its approval gives.
    ///
    /// # Errors
    /// [`CustomerError::AccountNotFound`] for an unregistered Knox ID;
    /// [`CustomerError::CustomerExists`] when the reseller added it before.
    pub async fn add_customer(
        &self,
        reseller_id: &ResellerId,
        knox_id: &KnoxId,
        reference: &InternalReference,
    ) -> Result<Customer, CustomerError> {
        let mut tx = self.pool.begin().await?;
        // FOR SHARE: an approval of this account (FOR UPDATE) commits before or after
        // us, never in between, so the status we publish is never stale.
        let exists = sqlx::query("SELECT 1 FROM customer.accounts WHERE knox_id = $1 FOR SHARE")
            .bind(knox_id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(CustomerError::AccountNotFound(knox_id.to_string()));
        }
        let inserted = sqlx::query(
            "INSERT INTO customer.reseller_customers (reseller_id, knox_id, internal_reference) \
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(reseller_id.as_str())
        .bind(knox_id.as_str())
        .bind(reference.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(CustomerError::CustomerExists(knox_id.to_string()));
        }
        let customer = Self::customer_in(&mut tx, reseller_id, knox_id)
            .await?
            .ok_or_else(|| CustomerError::CustomerNotFound(knox_id.to_string()))?;
        OUTBOX
            .enqueue(&mut tx, &[events::customer_added(&customer)])
            .await?;
        tx.commit().await?;
        Ok(customer)
    }

    /// Replaces a reseller's internal reference for one of its customers.
    ///
    /// # Errors
    /// [`CustomerError::CustomerNotFound`] unless the reseller added the account.
    pub async fn update_reference(
        &self,
        reseller_id: &ResellerId,
        knox_id: &KnoxId,
        reference: &InternalReference,
    ) -> Result<Customer, CustomerError> {
        let mut tx = self.pool.begin().await?;
        let previous: Option<String> = sqlx::query_scalar(
            "SELECT internal_reference FROM customer.reseller_customers \
             WHERE reseller_id = $1 AND knox_id = $2 FOR UPDATE",
        )
        .bind(reseller_id.as_str())
        .bind(knox_id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let previous =
            previous.ok_or_else(|| CustomerError::CustomerNotFound(knox_id.to_string()))?;
        if previous != reference.as_str() {
            let revision: i64 = sqlx::query_scalar(
                "UPDATE customer.reseller_customers \
                 SET internal_reference = $3, reference_revision = reference_revision + 1 \
                 WHERE reseller_id = $1 AND knox_id = $2 RETURNING reference_revision",
            )
            .bind(reseller_id.as_str())
            .bind(knox_id.as_str())
            .bind(reference.as_str())
            .fetch_one(&mut *tx)
            .await?;
            OUTBOX
                .enqueue(
                    &mut tx,
                    &[events::customer_reference_updated(
                        reseller_id,
                        knox_id,
                        reference,
                        revision,
                    )],
                )
                .await?;
        }
        let customer = Self::customer_in(&mut tx, reseller_id, knox_id)
            .await?
            .ok_or_else(|| CustomerError::CustomerNotFound(knox_id.to_string()))?;
        tx.commit().await?;
        Ok(customer)
    }

    /// Reads one of a reseller's customers.
    ///
    /// # Errors
    /// [`CustomerError::CustomerNotFound`] unless the reseller added the account.
    pub async fn customer(
        &self,
        reseller_id: &ResellerId,
        knox_id: &KnoxId,
    ) -> Result<Customer, CustomerError> {
        let mut conn = self.pool.acquire().await?;
        Self::customer_in(&mut conn, reseller_id, knox_id)
            .await?
            .ok_or_else(|| CustomerError::CustomerNotFound(knox_id.to_string()))
    }

    async fn customer_in(
        conn: &mut PgConnection,
        reseller_id: &ResellerId,
        knox_id: &KnoxId,
    ) -> Result<Option<Customer>, sqlx::Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customer.reseller_customers rc \
             JOIN customer.accounts a ON a.knox_id = rc.knox_id \
             LEFT JOIN customer.approvals ap ON ap.knox_id = rc.knox_id AND ap.reseller_id = rc.reseller_id \
             WHERE rc.reseller_id = $1 AND rc.knox_id = $2"
        )))
        .bind(reseller_id.as_str())
        .bind(knox_id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|r| customer_from_row(reseller_id, &r)).transpose()
    }

    /// Records an account's approval or revocation of a reseller. Repeating the current
    /// decision changes nothing and publishes nothing.
    ///
    /// # Errors
    /// [`CustomerError::AccountNotFound`] when no account of `kind` has that Knox ID;
    /// [`CustomerError::NotApproved`] when revoking an approval never given.
    pub async fn decide(
        &self,
        knox_id: &KnoxId,
        kind: AccountKind,
        reseller_id: &ResellerId,
        approve: bool,
    ) -> Result<Approval, CustomerError> {
        let mut tx = self.pool.begin().await?;
        // FOR UPDATE on the account serialises approvals with AddCustomer (see there).
        let exists = sqlx::query(
            "SELECT 1 FROM customer.accounts WHERE knox_id = $1 AND kind = $2 FOR UPDATE",
        )
        .bind(knox_id.as_str())
        .bind(kind.as_db())
        .fetch_optional(&mut *tx)
        .await?;
        if exists.is_none() {
            return Err(CustomerError::AccountNotFound(knox_id.to_string()));
        }
        let current: Option<bool> = sqlx::query_scalar(
            "SELECT approved FROM customer.approvals WHERE knox_id = $1 AND reseller_id = $2",
        )
        .bind(knox_id.as_str())
        .bind(reseller_id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if !approve && current.is_none() {
            return Err(CustomerError::NotApproved {
                knox_id: knox_id.to_string(),
                reseller_id: reseller_id.to_string(),
            });
        }
        if current != Some(approve) {
            let revision: i64 = sqlx::query_scalar(
                "INSERT INTO customer.approvals (knox_id, reseller_id, approved, changed_at, revision) \
                 VALUES ($1, $2, $3, $4, 1) ON CONFLICT (knox_id, reseller_id) \
                 DO UPDATE SET approved = EXCLUDED.approved, changed_at = EXCLUDED.changed_at, \
                 revision = customer.approvals.revision + 1 RETURNING revision",
            )
            .bind(knox_id.as_str())
            .bind(reseller_id.as_str())
            .bind(approve)
            .bind(OffsetDateTime::now_utc())
            .fetch_one(&mut *tx)
            .await?;
            let status = CustomerStatus::from_approval(Some(approve));
            OUTBOX
                .enqueue(
                    &mut tx,
                    &[events::customer_status_changed(
                        reseller_id,
                        knox_id,
                        status,
                        revision,
                    )],
                )
                .await?;
        }
        tx.commit().await?;
        Ok(Approval {
            reseller_id: reseller_id.clone(),
            knox_id: knox_id.clone(),
            approved: approve,
        })
    }
}

impl Repository {
    /// A page of the customer portal of `holder`, after the keyset `after`
    /// (device ID, upload ID), in device-ID order.
    ///
    /// # Errors
    /// Database errors.
    pub async fn portal_devices(
        &self,
        holder: &KnoxId,
        after: Option<(String, uuid::Uuid)>,
        limit: i64,
    ) -> Result<Vec<PortalDevice>, sqlx::Error> {
        let (after_device, after_upload) = after.unzip();
        let rows = sqlx::query(
            "SELECT device_id, id_kind, model, reseller_id, upload_id, holder_knox_id, moved_by_msp, msp_id, uploaded_at \
             FROM customer.portal_devices WHERE holder_knox_id = $1 \
             AND ($2::text IS NULL OR (device_id, upload_id) > ($2, $3)) \
             ORDER BY device_id, upload_id LIMIT $4",
        )
        .bind(holder.as_str())
        .bind(after_device)
        .bind(after_upload)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PortalDevice {
                    device_id: r.try_get("device_id")?,
                    id_kind: r.try_get("id_kind")?,
                    model: r.try_get("model")?,
                    reseller_id: r.try_get("reseller_id")?,
                    upload_id: r.try_get("upload_id")?,
                    holder_knox_id: r.try_get("holder_knox_id")?,
                    moved_by_msp: r
                        .try_get::<bool, _>("moved_by_msp")?
                        .then(|| r.try_get("msp_id"))
                        .transpose()?,
                    uploaded_at: r.try_get("uploaded_at")?,
                })
            })
            .collect()
    }
}
