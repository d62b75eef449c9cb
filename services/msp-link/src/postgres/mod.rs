//! msp-link-service's repository: links, moves and the MSP portal. Every command is one
//! transaction that reads the customer's live link under an advisory lock on the
//! customer, lets the domain decide (`crate::domain`), and writes the change with its
//! events to the outbox; the lock makes the events' `seq` numbers follow commit order.
//! Queries are checked against the schema at compile time (`sqlx::query!`); the MSP
//! portal's page is `portal_page.sql`, and the one lookup rule of a move's identifiers
//! is the SQL function `msp.named_registrations` (migration 0006).

use std::collections::{BTreeSet, HashSet};

use reseller_kit::CommandError;
use reseller_kit::ids::KnoxId;
use reseller_kit::outbox::Outbox;
use reseller_kit::portal::PortalDevice;
use reseller_proto::v1 as pb;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{
    DelinkRequest, Link, Mode, MspError, check_link, check_move_target, managed_by,
};
use crate::events::published::{self as events, MovedRegistration};

/// The service's outbox.
pub const OUTBOX: Outbox = Outbox::new(crate::SCHEMA);

/// Why a repository command failed: [`MspError`] when a rule refused it, or the database.
pub type Error = CommandError<MspError>;

impl From<MspError> for Error {
    fn from(refused: MspError) -> Self {
        CommandError::Refused(refused)
    }
}

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
        sqlx::query!(
            r#"SELECT true AS "locked!"
               FROM pg_advisory_xact_lock(hashtext('msp-customer:' || $1::text))"#,
            customer,
        )
        .fetch_one(&mut *tx)
        .await?;
    }
    Ok(())
}

/// The next `seq` of msp-link's events (events.proto).
async fn next_seq(tx: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT nextval('msp.event_seq') AS "seq!""#)
        .fetch_one(&mut *tx)
        .await
}

/// Publishes the event `event(seq)`, numbered by the next `seq`.
async fn publish(
    tx: &mut PgConnection,
    event: impl FnOnce(i64) -> pb::Event,
) -> Result<(), sqlx::Error> {
    let seq = next_seq(tx).await?;
    OUTBOX.enqueue(tx, &[event(seq)]).await
}

/// An `msp.links` row.
struct LinkRow {
    msp_id: String,
    customer_knox_id: String,
    mode: i16,
    since: OffsetDateTime,
}

impl From<LinkRow> for Link {
    fn from(row: LinkRow) -> Self {
        Link {
            msp_id: row.msp_id,
            customer_knox_id: row.customer_knox_id,
            mode: Mode::from_i16(row.mode),
            since: row.since,
        }
    }
}

/// The live link of `customer`, if any.
async fn live_link(tx: &mut PgConnection, customer: &KnoxId) -> Result<Option<Link>, sqlx::Error> {
    let row = sqlx::query_as!(
        LinkRow,
        "SELECT msp_id, customer_knox_id, mode, since FROM msp.links WHERE customer_knox_id = $1",
        customer.as_str(),
    )
    .fetch_optional(&mut *tx)
    .await?;
    Ok(row.map(Link::from))
}

/// Locks `customer` and reads its live link: the state every link command decides on.
async fn locked_link(
    tx: &mut PgConnection,
    customer: &KnoxId,
) -> Result<Option<Link>, sqlx::Error> {
    lock_customers(tx, &BTreeSet::from([customer.to_string()])).await?;
    live_link(tx, customer).await
}

impl Repository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Links `customer` to `msp`.
    ///
    /// # Errors
    /// [`MspError::AlreadyLinked`] or [`MspError::LinkedElsewhere`] when it has a link.
    pub async fn link(&self, msp: &KnoxId, customer: &KnoxId, mode: Mode) -> Result<Link, Error> {
        let mut tx = self.pool.begin().await?;
        check_link(
            msp,
            customer,
            locked_link(&mut tx, customer).await?.as_ref(),
        )?;
        let link: Link = sqlx::query_as!(
            LinkRow,
            "INSERT INTO msp.links (customer_knox_id, msp_id, mode, since) \
             VALUES ($1, $2, $3, now()) RETURNING msp_id, customer_knox_id, mode, since",
            customer.as_str(),
            msp.as_str(),
            mode.as_i16(),
        )
        .fetch_one(&mut *tx)
        .await?
        .into();
        publish(&mut tx, |seq| events::linked(&link, seq)).await?;
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
    ) -> Result<Link, Error> {
        let mut tx = self.pool.begin().await?;
        let live = locked_link(&mut tx, customer).await?;
        let link = managed_by(msp, customer, live.as_ref())?;
        let Some(mode) = link.mode.to_jointly_managed() else {
            return Ok(link.clone());
        };
        let link: Link = sqlx::query_as!(
            LinkRow,
            "UPDATE msp.links SET mode = $2, since = now() WHERE customer_knox_id = $1 \
             RETURNING msp_id, customer_knox_id, mode, since",
            customer.as_str(),
            mode.as_i16(),
        )
        .fetch_one(&mut *tx)
        .await?
        .into();
        publish(&mut tx, |seq| events::mode_changed(&link, seq)).await?;
        tx.commit().await?;
        Ok(link)
    }

    /// Ends the live link of `request.customer` as [`DelinkRequest::decide`] allows,
    /// asked for by `requested_by` (the caller's token subject, kept in the history).
    ///
    /// # Errors
    /// [`MspError::LinkNotFound`] when the caller has no link to end;
    /// [`MspError::FullyManaged`] when the customer is fully managed.
    pub async fn delink(&self, request: &DelinkRequest, requested_by: &str) -> Result<Link, Error> {
        let customer = &request.customer;
        let mut tx = self.pool.begin().await?;
        let live = locked_link(&mut tx, customer).await?;
        let link = request.decide(live.as_ref())?.clone();
        let delinked_at = sqlx::query_scalar!(
            "WITH ended AS ( \
                 DELETE FROM msp.links WHERE customer_knox_id = $1 \
                 RETURNING customer_knox_id, msp_id, since) \
             INSERT INTO msp.link_history \
                 (customer_knox_id, msp_id, linked_at, delinked_at, requested_by) \
             SELECT customer_knox_id, msp_id, since, now(), $2 FROM ended RETURNING delinked_at",
            customer.as_str(),
            requested_by,
        )
        .fetch_one(&mut *tx)
        .await?;
        let ended = Link {
            mode: Mode::Delinked,
            since: delinked_at,
            ..link
        };
        publish(&mut tx, |seq| events::delinked(&ended, requested_by, seq)).await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// The live link of `customer`, if any.
    ///
    /// # Errors
    /// Database errors.
    pub async fn link_of(&self, customer: &KnoxId) -> Result<Option<Link>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        live_link(&mut conn, customer).await
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
        let rows = sqlx::query_as!(
            LinkRow,
            "SELECT msp_id, customer_knox_id, mode, since FROM msp.links WHERE msp_id = $1 \
             AND ($2::text IS NULL OR customer_knox_id > $2) ORDER BY customer_knox_id LIMIT $3",
            msp.as_str(),
            after,
            limit,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Link::from).collect())
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
    ) -> Result<HashSet<String>, Error> {
        let mut tx = self.pool.begin().await?;
        // Lock the target and every current holder, then read again under the locks.
        let holders = sqlx::query_scalar!(
            r#"SELECT DISTINCT d.holder_knox_id AS "holder!" FROM msp.named_registrations($1) r
             JOIN msp.devices d ON d.device_id = r.device_id AND d.upload_id = r.upload_id"#,
            keys,
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut locked: BTreeSet<String> = holders.into_iter().collect();
        locked.insert(target.to_string());
        lock_customers(&mut tx, &locked).await?;
        check_move_target(msp, target, live_link(&mut tx, target).await?.as_ref())?;
        // Held by the MSP: in its own pool, or at a customer it links.
        let rows = sqlx::query!(
            r#"SELECT r.key AS "key!", d.device_id, d.upload_id, d.reseller_id, d.holder_knox_id,
                      d.id_kind, d.model, d.uploaded_at, d.order_number
               FROM msp.named_registrations($1) r
               JOIN msp.devices d ON d.device_id = r.device_id AND d.upload_id = r.upload_id
               WHERE d.holder_knox_id = $2 AND d.uploaded_to = $2
                  OR EXISTS (SELECT 1 FROM msp.links l
                             WHERE l.customer_knox_id = d.holder_knox_id AND l.msp_id = $2)
               FOR UPDATE OF d"#,
            keys,
            msp.as_str(),
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut held = HashSet::new();
        let mut registrations = HashSet::new();
        let mut to_move = Vec::new();
        for row in rows {
            held.insert(row.key);
            // Named twice (IMEI 1 and IMEI 2), moved once.
            if row.holder_knox_id != target.as_str()
                && registrations.insert((row.device_id.clone(), row.upload_id))
            {
                to_move.push(MovedRegistration {
                    device_id: row.device_id,
                    upload_id: row.upload_id,
                    reseller_id: row.reseller_id,
                    from_knox_id: row.holder_knox_id,
                    id_kind: row.id_kind,
                    model: row.model,
                    uploaded_at: row.uploaded_at,
                    order_number: row.order_number,
                });
            }
        }
        if !to_move.is_empty() {
            let seq = next_seq(&mut tx).await?;
            let ids: Vec<String> = to_move.iter().map(|m| m.device_id.clone()).collect();
            let uploads: Vec<Uuid> = to_move.iter().map(|m| m.upload_id).collect();
            sqlx::query!(
                "UPDATE msp.devices d SET holder_knox_id = $1, moved_by_msp = $2, move_seq = $3 \
                 FROM UNNEST($4::text[], $5::uuid[]) AS m (device_id, upload_id) \
                 WHERE d.device_id = m.device_id AND d.upload_id = m.upload_id",
                target.as_str(),
                msp.as_str(),
                seq,
                &ids,
                &uploads,
            )
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
                let mut holders = sqlx::query_scalar!(
                    "SELECT customer_knox_id FROM msp.links WHERE msp_id = $1",
                    msp.as_str(),
                )
                .fetch_all(&mut *conn)
                .await?;
                holders.push(msp.to_string());
                holders
            }
        };
        let (after_device, after_upload) = after.unzip();
        sqlx::query_file_as!(
            PortalDevice,
            "src/postgres/portal_page.sql",
            &holders,
            after_device,
            after_upload,
            limit,
        )
        .fetch_all(&mut *conn)
        .await
    }
}
