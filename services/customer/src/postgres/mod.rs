//! customer-service's repository: every command is one transaction that reads what its
//! rule needs, lets the domain decide, and writes the change with its events to the
//! outbox. Queries are checked against the schema at compile time (`sqlx::query!`).

use reseller_kit::CommandError;
use reseller_kit::ids::{KnoxId, ResellerId};
use reseller_kit::outbox::Outbox;
use reseller_kit::portal::PortalDevice;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::domain::{
    Account, AccountKind, Approval, ApprovalRejected, ApprovalRequest, Customer, CustomerError,
    CustomerReference, CustomerStatus, NewAccount,
};
use crate::events::published as events;

/// The service's outbox.
pub const OUTBOX: Outbox = Outbox::new(crate::SCHEMA);

/// Why a repository command failed: [`CustomerError`] when a rule refused it, or the database.
pub type Error = CommandError<CustomerError>;

impl From<CustomerError> for Error {
    fn from(refused: CustomerError) -> Self {
        CommandError::Refused(refused)
    }
}

/// Accounts, reseller customers and approvals in PostgreSQL.
#[derive(Debug, Clone)]
pub struct Repository {
    pool: PgPool,
}

/// A `customer.accounts` row.
struct AccountRow {
    knox_id: String,
    kind: String,
    company_name: String,
    country: String,
    created_at: OffsetDateTime,
}

/// A stored kind this version does not know fails the read as a decode error of its
/// column (`reseller_kit::accounts::UnknownValue`), rather than be read as a guess.
impl TryFrom<AccountRow> for Account {
    type Error = sqlx::Error;

    fn try_from(row: AccountRow) -> Result<Self, sqlx::Error> {
        Ok(Account {
            knox_id: row.knox_id,
            kind: AccountKind::from_db(&row.kind)?,
            company_name: row.company_name,
            country: row.country,
            created_at: row.created_at,
        })
    }
}

/// A reseller customer with its account and the account's decision about the reseller
/// (`approved` is `None` before any).
struct CustomerRow {
    internal_reference: String,
    reference_revision: i64,
    added_at: OffsetDateTime,
    knox_id: String,
    kind: String,
    company_name: String,
    country: String,
    created_at: OffsetDateTime,
    approved: Option<bool>,
    status_revision: i64,
}

impl CustomerRow {
    /// # Errors
    /// A decode error when the account's stored kind is unknown (see [`Account`]'s
    /// `TryFrom<AccountRow>`).
    fn into_customer(self, reseller_id: &ResellerId) -> Result<Customer, sqlx::Error> {
        Ok(Customer {
            reseller_id: reseller_id.clone(),
            account: Account::try_from(AccountRow {
                knox_id: self.knox_id,
                kind: self.kind,
                company_name: self.company_name,
                country: self.country,
                created_at: self.created_at,
            })?,
            internal_reference: self.internal_reference,
            reference_revision: self.reference_revision,
            status_revision: self.status_revision,
            status: CustomerStatus::from_approval(self.approved),
            added_at: self.added_at,
        })
    }
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
    pub async fn register_account(&self, new: NewAccount) -> Result<Account, Error> {
        let mut tx = self.pool.begin().await?;
        let account: Account = sqlx::query_as!(
            AccountRow,
            "INSERT INTO customer.accounts (knox_id, kind, company_name, country) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (knox_id) DO NOTHING \
             RETURNING knox_id, kind, company_name, country, created_at",
            new.knox_id.as_str(),
            new.kind.as_db(),
            new.company_name.as_str(),
            new.country.as_str(),
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| CustomerError::AccountExists(new.knox_id.to_string()))?
        .try_into()?;
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
    pub async fn account(&self, knox_id: &KnoxId) -> Result<Account, Error> {
        let row = sqlx::query_as!(
            AccountRow,
            "SELECT knox_id, kind, company_name, country, created_at FROM customer.accounts \
             WHERE knox_id = $1",
            knox_id.as_str(),
        )
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| CustomerError::AccountNotFound(knox_id.to_string()))?;
        Ok(row.try_into()?)
    }

    /// Adds an account to a reseller's customers, with the status its approval gives,
    /// recording who added it (`entry.actor`).
    ///
    /// # Errors
    /// [`CustomerError::AccountNotFound`] for an unregistered Knox ID;
    /// [`CustomerError::CustomerExists`] when the reseller added it before.
    pub async fn add_customer(&self, entry: &CustomerReference) -> Result<Customer, Error> {
        let mut tx = self.pool.begin().await?;
        // FOR SHARE: an approval of this account (FOR UPDATE) commits before or after
        // us, never in between, so the status we publish is never stale.
        sqlx::query_scalar!(
            r#"SELECT true AS "found!" FROM customer.accounts WHERE knox_id = $1 FOR SHARE"#,
            entry.knox_id.as_str(),
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| CustomerError::AccountNotFound(entry.knox_id.to_string()))?;
        let inserted = sqlx::query!(
            "INSERT INTO customer.reseller_customers \
               (reseller_id, knox_id, internal_reference, added_by) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            entry.reseller_id.as_str(),
            entry.knox_id.as_str(),
            entry.reference.as_str(),
            entry.actor,
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(CustomerError::CustomerExists(entry.knox_id.to_string()).into());
        }
        let customer = Self::customer_in(&mut tx, &entry.reseller_id, &entry.knox_id).await?;
        OUTBOX
            .enqueue(&mut tx, &[events::customer_added(&customer, &entry.actor)])
            .await?;
        tx.commit().await?;
        Ok(customer)
    }

    /// Replaces a reseller's internal reference for one of its customers, recording who
    /// edited it (`entry.actor`); the same reference again changes nothing and publishes
    /// nothing.
    ///
    /// # Errors
    /// [`CustomerError::CustomerNotFound`] unless the reseller added the account.
    pub async fn update_reference(&self, entry: &CustomerReference) -> Result<Customer, Error> {
        let mut tx = self.pool.begin().await?;
        let previous = sqlx::query_scalar!(
            "SELECT internal_reference FROM customer.reseller_customers \
             WHERE reseller_id = $1 AND knox_id = $2 FOR UPDATE",
            entry.reseller_id.as_str(),
            entry.knox_id.as_str(),
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| CustomerError::CustomerNotFound(entry.knox_id.to_string()))?;
        if previous != entry.reference.as_str() {
            let revision = sqlx::query_scalar!(
                "UPDATE customer.reseller_customers \
                 SET internal_reference = $3, reference_revision = reference_revision + 1, \
                     reference_updated_by = $4 \
                 WHERE reseller_id = $1 AND knox_id = $2 RETURNING reference_revision",
                entry.reseller_id.as_str(),
                entry.knox_id.as_str(),
                entry.reference.as_str(),
                entry.actor,
            )
            .fetch_one(&mut *tx)
            .await?;
            let updated = events::customer_reference_updated(entry, revision);
            OUTBOX.enqueue(&mut tx, &[updated]).await?;
        }
        let customer = Self::customer_in(&mut tx, &entry.reseller_id, &entry.knox_id).await?;
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
    ) -> Result<Customer, Error> {
        let mut conn = self.pool.acquire().await?;
        Self::customer_in(&mut conn, reseller_id, knox_id).await
    }

    /// One of a reseller's customers, read on `conn` (inside a command's transaction).
    async fn customer_in(
        conn: &mut PgConnection,
        reseller_id: &ResellerId,
        knox_id: &KnoxId,
    ) -> Result<Customer, Error> {
        let row = sqlx::query_as!(
            CustomerRow,
            r#"SELECT rc.internal_reference, rc.reference_revision, rc.added_at,
                      a.knox_id, a.kind, a.company_name, a.country, a.created_at,
                      ap.approved AS "approved?",
                      coalesce(ap.revision, 0) AS "status_revision!"
               FROM customer.reseller_customers rc
               JOIN customer.accounts a ON a.knox_id = rc.knox_id
               LEFT JOIN customer.approvals ap
                    ON ap.knox_id = rc.knox_id AND ap.reseller_id = rc.reseller_id
               WHERE rc.reseller_id = $1 AND rc.knox_id = $2"#,
            reseller_id.as_str(),
            knox_id.as_str(),
        )
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| CustomerError::CustomerNotFound(knox_id.to_string()))?;
        Ok(row.into_customer(reseller_id)?)
    }

    /// Records an account's approval or revocation of a reseller, as
    /// [`ApprovalRequest::decide`] decides against the account's current decision.
    ///
    /// # Errors
    /// [`CustomerError::AccountNotFound`] when no account of `kind` has that Knox ID;
    /// [`CustomerError::NotApproved`] when revoking an approval never given.
    pub async fn decide(
        &self,
        knox_id: &KnoxId,
        kind: AccountKind,
        reseller_id: &ResellerId,
        request: ApprovalRequest,
    ) -> Result<Approval, Error> {
        let mut tx = self.pool.begin().await?;
        // FOR UPDATE on the account serialises approvals with AddCustomer (see there).
        sqlx::query_scalar!(
            r#"SELECT true AS "found!" FROM customer.accounts
               WHERE knox_id = $1 AND kind = $2 FOR UPDATE"#,
            knox_id.as_str(),
            kind.as_db(),
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| CustomerError::AccountNotFound(knox_id.to_string()))?;
        let current = sqlx::query_scalar!(
            "SELECT approved FROM customer.approvals WHERE knox_id = $1 AND reseller_id = $2",
            knox_id.as_str(),
            reseller_id.as_str(),
        )
        .fetch_optional(&mut *tx)
        .await?;
        let change = request
            .decide(CustomerStatus::from_approval(current))
            .map_err(
                |ApprovalRejected::NothingToRevoke| CustomerError::NotApproved {
                    knox_id: knox_id.to_string(),
                    reseller_id: reseller_id.to_string(),
                },
            )?;
        if let Some(status) = change {
            let revision = sqlx::query_scalar!(
                "INSERT INTO customer.approvals (knox_id, reseller_id, approved, changed_at, revision) \
                 VALUES ($1, $2, $3, $4, 1) ON CONFLICT (knox_id, reseller_id) \
                 DO UPDATE SET approved = EXCLUDED.approved, changed_at = EXCLUDED.changed_at, \
                 revision = customer.approvals.revision + 1 RETURNING revision",
                knox_id.as_str(),
                reseller_id.as_str(),
                request.approves(),
                OffsetDateTime::now_utc(),
            )
            .fetch_one(&mut *tx)
            .await?;
            let changed = events::customer_status_changed(reseller_id, knox_id, status, revision);
            OUTBOX.enqueue(&mut tx, &[changed]).await?;
        }
        tx.commit().await?;
        Ok(Approval {
            reseller_id: reseller_id.clone(),
            knox_id: knox_id.clone(),
            approved: request.approves(),
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
        sqlx::query_as!(
            PortalDevice,
            // The table keeps the flag and the MSP apart (msp_id "" when not moved); the
            // portal's device names the MSP only when one moved it.
            r#"SELECT device_id, id_kind, model, reseller_id, upload_id, holder_knox_id,
                      CASE WHEN moved_by_msp THEN msp_id END AS "moved_by_msp?",
                      uploaded_at
               FROM customer.portal_devices WHERE holder_knox_id = $1
               AND ($2::text IS NULL OR (device_id, upload_id) > ($2, $3::uuid))
               ORDER BY device_id, upload_id LIMIT $4"#,
            holder.as_str(),
            after_device,
            after_upload,
            limit,
        )
        .fetch_all(&self.pool)
        .await
    }
}
