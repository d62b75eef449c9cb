//! Deletions and the receipts that track them across the three portals.

use reseller_kit::ids::ResellerId;
use reseller_kit::one_statement::Params;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{OUTBOX, Repository};
use crate::domain::{
    Deletion, EVENT_PART_SIZE, Lookup, MAX_INLINE_ECHOES, PortalState, fold_portal, part_count,
};
use crate::events::{self, DeletedRegistration};

/// `reseller.v1.Portal` numbers.
const PORTALS: [i16; 3] = [1, 2, 3];

impl Repository {
    /// Deletes the devices that `lookups` name by any of their identifiers and that
    /// `reseller` uploaded, with all their identifiers, in one transaction with its
    /// `devices_deleted` events. Every other ID (unknown, deleted already, someone
    /// else's, or no identifier at all) is reported as not found; the answer keeps the
    /// first [`MAX_INLINE_ECHOES`] of them and their count.
    ///
    /// # Errors
    /// Database errors; nothing is deleted then.
    pub async fn delete(
        &self,
        reseller: &ResellerId,
        lookups: &[Lookup],
    ) -> Result<Deletion, sqlx::Error> {
        let deletion_id = Uuid::now_v7();
        let keys: Vec<&str> = lookups
            .iter()
            .filter_map(|l| match l {
                Lookup::Key(key) => Some(key.as_str()),
                Lookup::Unknown(_) => None,
            })
            .collect();
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query_file!(
            "src/postgres/delete_devices.sql",
            deletion_id,
            reseller.as_str(),
            &keys as &[&str],
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut found = std::collections::HashSet::new();
        let mut deleted = Vec::with_capacity(rows.len());
        for row in rows {
            // One row per deleted device, found by at least one asked identifier.
            found.extend(row.asked.unwrap_or_default());
            deleted.push(DeletedRegistration {
                device_id: row.device_id,
                upload_id: row.upload_id,
                target_knox_id: row.target_knox_id,
            });
        }
        let mut deleted_ids = Vec::with_capacity(found.len());
        let mut not_found = Vec::new();
        let mut not_found_count: i64 = 0;
        for lookup in lookups {
            match lookup {
                Lookup::Key(key) if found.contains(key) => deleted_ids.push(key.clone()),
                Lookup::Key(id) | Lookup::Unknown(id) => {
                    not_found_count += 1;
                    if not_found.len() < MAX_INLINE_ECHOES {
                        not_found.push(id.clone());
                    }
                }
            }
        }
        let parts = part_count(deleted.len());
        let requested_at = sqlx::query_scalar!(
            "INSERT INTO device.deletions (deletion_id, reseller_id, requested_at, part_count,
               deleted_device_ids, not_found_device_ids, not_found_count)
             VALUES ($1, $2, now(), $3, $4, $5, $6) RETURNING requested_at",
            deletion_id,
            reseller.as_str(),
            parts as i32,
            &deleted_ids,
            &not_found,
            not_found_count,
        )
        .fetch_one(&mut *tx)
        .await?;
        let batch: Vec<_> = deleted
            .chunks(EVENT_PART_SIZE)
            .enumerate()
            .map(|(part, chunk)| {
                events::devices_deleted(
                    deletion_id,
                    reseller.as_str(),
                    part as u32,
                    parts as u32,
                    chunk,
                )
            })
            .collect();
        OUTBOX.enqueue(&mut tx, &batch).await?;
        let deletion = Self::deletion_in(&mut tx, reseller, deletion_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        tx.commit().await?;
        debug_assert_eq!(deletion.requested_at, requested_at);
        Ok(deletion)
    }

    /// One of a reseller's deletions with each portal's state; `None` when unknown or
    /// another reseller's.
    ///
    /// # Errors
    /// Database errors.
    pub async fn deletion(
        &self,
        reseller: &ResellerId,
        deletion_id: Uuid,
    ) -> Result<Option<Deletion>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        Self::deletion_in(&mut conn, reseller, deletion_id).await
    }

    async fn deletion_in(
        conn: &mut PgConnection,
        reseller: &ResellerId,
        deletion_id: Uuid,
    ) -> Result<Option<Deletion>, sqlx::Error> {
        // One round trip (GetDeletion is what callers poll): the deletion with its
        // receipts' portals and states as two aligned arrays.
        let Some(row) = sqlx::query!(
            r#"SELECT d.deletion_id, d.part_count, d.requested_at, d.deleted_device_ids,
                      d.not_found_device_ids, d.not_found_count,
                      array_remove(array_agg(r.portal), NULL) AS "portals!",
                      array_remove(array_agg(r.state), NULL) AS "states!"
               FROM device.deletions d LEFT JOIN device.deletion_receipts r USING (deletion_id)
               WHERE d.deletion_id = $1 AND d.reseller_id = $2 GROUP BY d.deletion_id"#,
            deletion_id,
            reseller.as_str(),
        )
        .fetch_optional(&mut *conn)
        .await?
        else {
            return Ok(None);
        };
        let receipts = Receipts {
            part_count: row.part_count,
            portals: row.portals,
            states: row.states,
        };
        Ok(Some(Deletion {
            deleted_count: row.deleted_device_ids.len() as i64,
            deleted_device_ids: row.deleted_device_ids,
            not_found_device_ids: row.not_found_device_ids,
            ..receipts.summary(row.deletion_id, row.not_found_count, row.requested_at)
        }))
    }

    /// A page of a reseller's deletions, newest first, as summaries (counts and portal
    /// states, the device lists left empty): up to `limit` older than `before`
    /// (`(requested_at, deletion_id)`, `None` for the first page).
    ///
    /// # Errors
    /// Database errors.
    pub async fn deletions(
        &self,
        reseller: &ResellerId,
        before: Option<(OffsetDateTime, Uuid)>,
        limit: i64,
    ) -> Result<Vec<Deletion>, sqlx::Error> {
        let rows = sqlx::query!(
            r#"SELECT d.deletion_id, d.part_count, d.requested_at, d.not_found_count,
                      cardinality(d.deleted_device_ids)::bigint AS "deleted_count!",
                      array_remove(array_agg(r.portal), NULL) AS "portals!",
                      array_remove(array_agg(r.state), NULL) AS "states!"
               FROM device.deletions d LEFT JOIN device.deletion_receipts r USING (deletion_id)
               WHERE d.reseller_id = $1
                 AND ($2::timestamptz IS NULL OR (d.requested_at, d.deletion_id) < ($2, $3))
               GROUP BY d.deletion_id ORDER BY d.requested_at DESC, d.deletion_id DESC LIMIT $4"#,
            reseller.as_str(),
            before.map(|(at, _)| at),
            before.map(|(_, id)| id),
            limit,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let receipts = Receipts {
                    part_count: row.part_count,
                    portals: row.portals,
                    states: row.states,
                };
                Deletion {
                    deleted_count: row.deleted_count,
                    ..receipts.summary(row.deletion_id, row.not_found_count, row.requested_at)
                }
            })
            .collect())
    }
}

/// A deletion's receipts as read with it: its part count and its receipts' portals and
/// states (two aligned arrays).
struct Receipts {
    part_count: i32,
    portals: Vec<i16>,
    states: Vec<i16>,
}

impl Receipts {
    /// The deletion as a summary: each portal's folded state, the not-found count, no
    /// device lists.
    fn summary(
        &self,
        deletion_id: Uuid,
        not_found_count: i64,
        requested_at: OffsetDateTime,
    ) -> Deletion {
        let [reseller_portal, msp_portal, customer_portal] = PORTALS.map(|portal| {
            let of_portal: Vec<PortalState> = self
                .portals
                .iter()
                .zip(&self.states)
                .filter(|(p, _)| **p == portal)
                .map(|(_, state)| PortalState::from_i16(*state))
                .collect();
            fold_portal(self.part_count, &of_portal)
        });
        Deletion {
            deletion_id,
            deleted_device_ids: Vec::new(),
            deleted_count: 0,
            not_found_device_ids: Vec::new(),
            not_found_count,
            reseller_portal,
            msp_portal,
            customer_portal,
            requested_at,
        }
    }
}

/// Records one portal's receipt for one part of a deletion (idempotent per part): a CTE
/// for the receipts consumer's one statement.
pub fn record_receipt_cte(
    params: &mut Params,
    deletion_id: Uuid,
    portal: i16,
    part: i32,
    state: PortalState,
) -> String {
    format!(
        "receipt AS (INSERT INTO device.deletion_receipts (deletion_id, portal, part, state) \
           VALUES ({}, {}, {}, {}) \
           ON CONFLICT (deletion_id, portal, part) DO UPDATE SET state = EXCLUDED.state)",
        params.bind(deletion_id),
        params.bind(portal),
        params.bind(part),
        params.bind(state.as_i16()),
    )
}
