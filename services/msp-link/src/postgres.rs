//! msp-link-service's repository: links, moves and the MSP portal. Every command is one
//! transaction that also writes its events to the outbox; commands about one customer
//! are serialised by an advisory lock on it, so their `seq` numbers follow commit order.

use std::collections::{BTreeSet, HashSet};

use reseller_kit::ids::KnoxId;
use reseller_kit::outbox::Outbox;
use reseller_kit::portal::PortalDevice;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{Link, Mode, MspError, check_delink};
use crate::events::{self, MovedRegistration};

/// The service's outbox.
pub const OUTBOX: Outbox = Outbox::new(crate::SCHEMA);

/// Links, device holders and the MSP portal in PostgreSQL.
#[derive(Debug, Clone)]
pub struct Repository {
    pool: PgPool,
}

/// Serialises commands about the given customers (sorted, so two commands never wait on
/// each other in opposite orders).
async fn lock_customers(
    tx: &mut PgConnection,
    customers: &BTreeSet<String>,
) -> Result<(), sqlx::Error> {
    for customer in customers {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('msp-customer:' || $1))")
            .bind(customer)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

async fn next_seq(tx: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT nextval('msp.event_seq')")
        .fetch_one(&mut *tx)
        .await
}

fn link_from_row(row: &PgRow) -> Result<Link, sqlx::Error> {
    Ok(Link {
        msp_id: row.try_get("msp_id")?,
        customer_knox_id: row.try_get("customer_knox_id")?,
        mode: Mode::from_i16(row.try_get("mode")?),
        since: row.try_get("since")?,
    })
}

async fn live_link(tx: &mut PgConnection, customer: &str) -> Result<Option<Link>, sqlx::Error> {
    sqlx::query(
        "SELECT msp_id, customer_knox_id, mode, since FROM msp.links WHERE customer_knox_id = $1",
    )
    .bind(customer)
    .fetch_optional(&mut *tx)
    .await?
    .map(|r| link_from_row(&r))
    .transpose()
}

/// The registrations a move's canonical identifiers (`$1`) name, as `registrations (key,
/// device_id, upload_id)`: by device ID or by any secondary identifier (the one lookup
/// rule). A registration named twice (by IMEI 1 and IMEI 2) appears once per key.
const NAMED_REGISTRATIONS: &str = "WITH named AS (SELECT DISTINCT unnest($1::text[]) AS key),      registrations AS (        SELECT n.key, d.device_id, d.upload_id FROM named n JOIN msp.devices d ON d.device_id = n.key        UNION        SELECT n.key, s.device_id, s.upload_id FROM named n JOIN msp.secondary_ids s ON s.secondary_id = n.key) ";

impl Repository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Links `customer` to `msp`.
    ///
    /// # Errors
    /// [`MspError::AlreadyLinked`] or [`MspError::LinkedElsewhere`] when it has a link.
    pub async fn link(
        &self,
        msp: &KnoxId,
        customer: &KnoxId,
        mode: Mode,
    ) -> Result<Link, MspError> {
        let mut tx = self.pool.begin().await?;
        lock_customers(&mut tx, &BTreeSet::from([customer.to_string()])).await?;
        if let Some(existing) = live_link(&mut tx, customer.as_str()).await? {
            return Err(if existing.msp_id == msp.as_str() {
                MspError::AlreadyLinked(customer.to_string())
            } else {
                MspError::LinkedElsewhere(customer.to_string())
            });
        }
        let row = sqlx::query(
            "INSERT INTO msp.links (customer_knox_id, msp_id, mode, since) VALUES ($1, $2, $3, now()) \
             RETURNING msp_id, customer_knox_id, mode, since",
        )
        .bind(customer.as_str())
        .bind(msp.as_str())
        .bind(mode.as_i16())
        .fetch_one(&mut *tx)
        .await?;
        let link = link_from_row(&row)?;
        let seq = next_seq(&mut tx).await?;
        OUTBOX
            .enqueue(&mut tx, &[events::linked(&link, seq)])
            .await?;
        tx.commit().await?;
        Ok(link)
    }

    /// Switches a fully managed customer of `msp` to jointly managed (no-op when it is
    /// already).
    ///
    /// # Errors
    /// [`MspError::LinkNotFound`] unless `msp` links `customer`.
    pub async fn set_jointly_managed(
        &self,
        msp: &KnoxId,
        customer: &KnoxId,
    ) -> Result<Link, MspError> {
        let mut tx = self.pool.begin().await?;
        lock_customers(&mut tx, &BTreeSet::from([customer.to_string()])).await?;
        let link = live_link(&mut tx, customer.as_str())
            .await?
            .filter(|l| l.msp_id == msp.as_str())
            .ok_or_else(|| MspError::LinkNotFound {
                msp_id: msp.to_string(),
                customer: customer.to_string(),
            })?;
        if link.mode == Mode::JointlyManaged {
            return Ok(link);
        }
        let row = sqlx::query(
            "UPDATE msp.links SET mode = $2, since = now() WHERE customer_knox_id = $1 \
             RETURNING msp_id, customer_knox_id, mode, since",
        )
        .bind(customer.as_str())
        .bind(Mode::JointlyManaged.as_i16())
        .fetch_one(&mut *tx)
        .await?;
        let link = link_from_row(&row)?;
        let seq = next_seq(&mut tx).await?;
        OUTBOX
            .enqueue(&mut tx, &[events::mode_changed(&link, seq)])
            .await?;
        tx.commit().await?;
        Ok(link)
    }

    /// Ends the link between `msp` and `customer`, asked for by `requested_by`.
    ///
    /// # Errors
    /// [`MspError::LinkNotFound`] when they are not linked; [`MspError::FullyManaged`]
    /// when the customer is fully managed.
    pub async fn delink(
        &self,
        msp: &KnoxId,
        customer: &KnoxId,
        requested_by: &str,
    ) -> Result<Link, MspError> {
        let mut tx = self.pool.begin().await?;
        lock_customers(&mut tx, &BTreeSet::from([customer.to_string()])).await?;
        let link = live_link(&mut tx, customer.as_str())
            .await?
            .filter(|l| l.msp_id == msp.as_str())
            .ok_or_else(|| MspError::LinkNotFound {
                msp_id: msp.to_string(),
                customer: customer.to_string(),
            })?;
        check_delink(link.mode, customer.as_str())?;
        let delinked_at: OffsetDateTime = sqlx::query_scalar(
            "WITH ended AS (DELETE FROM msp.links WHERE customer_knox_id = $1 RETURNING customer_knox_id, msp_id, since) \
             INSERT INTO msp.link_history (customer_knox_id, msp_id, linked_at, delinked_at, requested_by) \
             SELECT customer_knox_id, msp_id, since, now(), $2 FROM ended RETURNING delinked_at",
        )
        .bind(customer.as_str())
        .bind(requested_by)
        .fetch_one(&mut *tx)
        .await?;
        let ended = Link {
            mode: Mode::Delinked,
            since: delinked_at,
            ..link
        };
        let seq = next_seq(&mut tx).await?;
        OUTBOX
            .enqueue(&mut tx, &[events::delinked(&ended, requested_by, seq)])
            .await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// The live link of `customer`, if any.
    ///
    /// # Errors
    /// Database errors.
    pub async fn link_of(&self, customer: &KnoxId) -> Result<Option<Link>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        live_link(&mut conn, customer.as_str()).await
    }

    /// A page of `msp`'s links, by customer Knox ID after `after`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn links(
        &self,
        msp: &KnoxId,
        after: Option<String>,
        limit: i64,
    ) -> Result<Vec<Link>, sqlx::Error> {
        sqlx::query(
            "SELECT msp_id, customer_knox_id, mode, since FROM msp.links WHERE msp_id = $1 \
             AND ($2::text IS NULL OR customer_knox_id > $2) ORDER BY customer_knox_id LIMIT $3",
        )
        .bind(msp.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(link_from_row)
        .collect()
    }

    /// Moves the devices `msp` holds (in its pool or at one of its customers) named by
    /// `keys` (canonical identifiers: device IDs or secondary ones) to `target`, which it
    /// must link. Returns the keys that named a device it holds: those are at the target
    /// now (moved, or there already).
    ///
    /// # Errors
    /// [`MspError::TargetNotLinked`] when `msp` does not link `target`.
    pub async fn move_devices(
        &self,
        msp: &KnoxId,
        target: &KnoxId,
        keys: &[String],
    ) -> Result<HashSet<String>, MspError> {
        let mut tx = self.pool.begin().await?;
        // Lock the target and every current holder, then read again under the locks.
        // (The statements are built from constants only; every value is bound.)
        let holders: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "{NAMED_REGISTRATIONS} SELECT DISTINCT d.holder_knox_id FROM registrations r \
             JOIN msp.devices d ON d.device_id = r.device_id AND d.upload_id = r.upload_id"
        )))
        .bind(keys)
        .fetch_all(&mut *tx)
        .await?;
        let mut locked: BTreeSet<String> = holders.into_iter().collect();
        locked.insert(target.to_string());
        lock_customers(&mut tx, &locked).await?;
        match live_link(&mut tx, target.as_str()).await? {
            Some(link) if link.msp_id == msp.as_str() => {}
            _ => return Err(MspError::TargetNotLinked(target.to_string())),
        }
        // Held by the MSP: in its own pool, or at a customer it links.
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{NAMED_REGISTRATIONS} \
             SELECT r.key, d.device_id, d.upload_id, d.reseller_id, d.holder_knox_id, d.id_kind, d.model, \
                    d.uploaded_at, d.order_number \
             FROM registrations r JOIN msp.devices d ON d.device_id = r.device_id AND d.upload_id = r.upload_id \
             WHERE d.holder_knox_id = $2 AND d.uploaded_to = $2 \
                OR EXISTS (SELECT 1 FROM msp.links l WHERE l.customer_knox_id = d.holder_knox_id AND l.msp_id = $2) \
             FOR UPDATE OF d"
        )))
        .bind(keys)
        .bind(msp.as_str())
        .fetch_all(&mut *tx)
        .await?;
        let mut held = HashSet::new();
        let mut registrations = HashSet::new();
        let mut to_move = Vec::new();
        for row in &rows {
            held.insert(row.try_get::<String, _>("key")?);
            let device_id: String = row.try_get("device_id")?;
            let upload_id: Uuid = row.try_get("upload_id")?;
            let holder: String = row.try_get("holder_knox_id")?;
            // Named twice (IMEI 1 and IMEI 2), moved once.
            if holder != target.as_str() && registrations.insert((device_id.clone(), upload_id)) {
                to_move.push(MovedRegistration {
                    device_id,
                    upload_id,
                    reseller_id: row.try_get("reseller_id")?,
                    from_knox_id: holder,
                    id_kind: row.try_get("id_kind")?,
                    model: row.try_get("model")?,
                    uploaded_at: row.try_get("uploaded_at")?,
                    order_number: row.try_get("order_number")?,
                });
            }
        }
        if !to_move.is_empty() {
            let seq = next_seq(&mut tx).await?;
            let ids: Vec<&str> = to_move.iter().map(|m| m.device_id.as_str()).collect();
            let uploads: Vec<Uuid> = to_move.iter().map(|m| m.upload_id).collect();
            sqlx::query(
                "UPDATE msp.devices d SET holder_knox_id = $1, moved_by_msp = $2, move_seq = $3 \
                 FROM UNNEST($4::text[], $5::uuid[]) AS m (device_id, upload_id) \
                 WHERE d.device_id = m.device_id AND d.upload_id = m.upload_id",
            )
            .bind(target.as_str())
            .bind(msp.as_str())
            .bind(seq)
            .bind(&ids)
            .bind(&uploads)
            .execute(&mut *tx)
            .await?;
            // Events name each registration by its device ID, whichever identifier the
            // caller used: that is how every projection keys it.
            let batch: Vec<_> = to_move
                .chunks(reseller_kit::event_parts::EVENT_PART_SIZE)
                .map(|chunk| events::devices_moved(msp.as_str(), target.as_str(), chunk, seq))
                .collect();
            OUTBOX.enqueue(&mut tx, &batch).await?;
        }
        tx.commit().await?;
        Ok(held)
    }

    /// A page of the MSP portal of `msp`: its pool and what its linked customers hold
    /// (or only what `customer` holds), after the keyset `after`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn portal(
        &self,
        msp: &KnoxId,
        customer: Option<&KnoxId>,
        after: Option<(String, Uuid)>,
        limit: i64,
    ) -> Result<Vec<PortalDevice>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let holders: Vec<String> = match customer {
            Some(customer) => vec![customer.to_string()],
            None => {
                let mut holders: Vec<String> =
                    sqlx::query_scalar("SELECT customer_knox_id FROM msp.links WHERE msp_id = $1")
                        .bind(msp.as_str())
                        .fetch_all(&mut *conn)
                        .await?;
                holders.push(msp.to_string());
                holders
            }
        };
        let (after_device, after_upload) = after.unzip();
        // One ordered index range per holder, merged: `holder = ANY(..) ORDER BY` would
        // walk every device of every holder.
        let rows = sqlx::query(
            "SELECT d.* FROM UNNEST($1::text[]) AS h (holder), LATERAL ( \
                 SELECT device_id, id_kind, model, reseller_id, upload_id, holder_knox_id, moved_by_msp, uploaded_at \
                 FROM msp.devices WHERE holder_knox_id = h.holder \
                 AND ($2::text IS NULL OR (device_id, upload_id) > ($2, $3)) \
                 ORDER BY device_id, upload_id LIMIT $4) AS d \
             ORDER BY d.device_id, d.upload_id LIMIT $4",
        )
        .bind(&holders)
        .bind(after_device)
        .bind(after_upload)
        .bind(limit)
        .fetch_all(&mut *conn)
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
                    moved_by_msp: Some(r.try_get::<String, _>("moved_by_msp")?)
                        .filter(|msp| !msp.is_empty()),
                    uploaded_at: r.try_get("uploaded_at")?,
                })
            })
            .collect()
    }
}
