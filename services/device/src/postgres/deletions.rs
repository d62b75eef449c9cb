//! Deletions and the receipts that track them across the three portals.

use reseller_kit::ids::ResellerId;
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
    /// `devices_deleted` events and one `deletion_recorded` (even when nothing was
    /// found), recording `actor` (who acted for `reseller`) on the deletion and its
    /// events. Every other ID (unknown, deleted already, someone
    /// else's, or no identifier at all) is reported as not found; the answer keeps the
    /// first [`MAX_INLINE_ECHOES`] of them and their count.
    ///
    /// # Errors
    /// Database errors; nothing is deleted then.
    pub async fn delete(
        &self,
        reseller: &ResellerId,
        actor: &str,
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
               deleted_device_ids, not_found_device_ids, not_found_count, actor)
             VALUES ($1, $2, now(), $3, $4, $5, $6, $7) RETURNING requested_at",
            deletion_id,
            reseller.as_str(),
            parts as i32,
            &deleted_ids,
            &not_found,
            not_found_count,
            actor,
        )
        .fetch_one(&mut *tx)
        .await?;
        let context = events::DeletionContext {
            deletion_id,
            reseller_id: reseller.as_str(),
            actor,
            requested_at,
            part_count: parts as u32,
        };
        let mut batch: Vec<_> = deleted
            .chunks(EVENT_PART_SIZE)
            .enumerate()
            .map(|(part, chunk)| events::devices_deleted(&context, part as u32, chunk))
            .collect();
        // The log counts devices: a dual-SIM phone asked by both IMEIs is one.
        batch.push(events::deletion_recorded(
            &context,
            deleted.len() as i64,
            not_found_count,
        ));
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
                      coalesce(d.actor, d.reseller_id) AS "actor!",
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
            ..receipts.summary(
                row.deletion_id,
                row.not_found_count,
                row.requested_at,
                row.actor,
            )
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
                      coalesce(d.actor, d.reseller_id) AS "actor!",
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
                    ..receipts.summary(
                        row.deletion_id,
                        row.not_found_count,
                        row.requested_at,
                        row.actor,
                    )
                }
            })
            .collect())
    }
}

/// How far before a deletion's `requested_at` (the database's clock at its transaction's
/// start) its ID may lie: the ID (a UUID v7, time-ordered) is taken on the clock of the
/// replica that made it, just before that transaction.
const DELETION_ID_MARGIN: std::time::Duration = std::time::Duration::from_secs(600);

/// The samples of incomplete deletions, each reading only the deletions from a mark on:
/// a margin before the oldest deletion incomplete at the last sample (or before that
/// sample, when none was): the ones before were complete then, and a deletion never
/// becomes incomplete again. So a sample costs what is recent or still open, not the
/// whole history.
#[derive(Debug, Default)]
pub struct DeletionSampler {
    /// Deletion IDs from here on are read; nil at first (all of them).
    from: Uuid,
}

impl DeletionSampler {
    /// Reads, per portal, the deletions that portal has not answered for every part yet
    /// and the oldest of them, into [`reseller_kit::metrics::DELETIONS_PENDING`]
    /// (`portal`: `reseller`, `msp`, `customer`) and
    /// [`reseller_kit::metrics::DELETION_OLDEST_INCOMPLETE_AGE`] (seconds, 0 when none):
    /// one query.
    ///
    /// # Errors
    /// Database errors.
    pub async fn sample(&mut self, repo: &Repository) -> Result<(), sqlx::Error> {
        let rows = sqlx::query!(
            r#"SELECT p.portal AS "portal!", count(d.deletion_id) AS "pending!",
                      (extract(epoch FROM coalesce(min(d.requested_at), now())) * 1000)::bigint
                        AS "oldest_ms!",
                      coalesce(extract(epoch FROM now() - min(d.requested_at)), 0)::float8
                        AS "oldest_age!"
               FROM unnest($2::smallint[]) AS p (portal)
               LEFT JOIN device.deletions d
                 ON d.deletion_id >= $1 AND d.part_count > (
                      SELECT count(*) FROM device.deletion_receipts r
                      WHERE r.deletion_id = d.deletion_id AND r.portal = p.portal)
               GROUP BY p.portal"#,
            self.from,
            &PORTALS[..],
        )
        .fetch_all(&repo.pool)
        .await?;
        let mut oldest_age: f64 = 0.0;
        // The database's clock: the oldest incomplete deletion's time, or now.
        let mut oldest_ms = i64::MAX;
        for row in &rows {
            let portal = match row.portal {
                1 => "reseller",
                2 => "msp",
                _ => "customer",
            };
            ::metrics::gauge!(reseller_kit::metrics::DELETIONS_PENDING, "portal" => portal)
                .set(row.pending as f64);
            oldest_age = oldest_age.max(row.oldest_age);
            oldest_ms = oldest_ms.min(row.oldest_ms);
        }
        ::metrics::gauge!(reseller_kit::metrics::DELETION_OLDEST_INCOMPLETE_AGE)
            .set(oldest_age.max(0.0));
        // Next time: from a margin before the oldest still incomplete (or before now),
        // for deletions still committing and for the replicas' clocks.
        if oldest_ms != i64::MAX {
            let from_ms = oldest_ms.saturating_sub(DELETION_ID_MARGIN.as_millis() as i64);
            self.from = first_v7_of_millisecond(from_ms.max(0) as u64);
        }
        Ok(())
    }
}

/// The smallest UUID v7 of the Unix millisecond `millis`: every v7 taken in it or later
/// sorts at or after it.
fn first_v7_of_millisecond(millis: u64) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6] = 0x70; // version 7
    bytes[8] = 0x80; // the RFC variant
    Uuid::from_bytes(bytes)
}

/// A deletion's receipts as read with it: its part count and its receipts' portals and
/// states (two aligned arrays).
struct Receipts {
    part_count: i32,
    portals: Vec<i16>,
    states: Vec<i16>,
}

impl Receipts {
    /// Each portal's folded state: reseller, MSP, customer.
    fn folded(&self) -> [PortalState; 3] {
        PORTALS.map(|portal| {
            let of_portal: Vec<PortalState> = self
                .portals
                .iter()
                .zip(&self.states)
                .filter(|(p, _)| **p == portal)
                .map(|(_, state)| PortalState::from_i16(*state))
                .collect();
            fold_portal(self.part_count, &of_portal)
        })
    }

    /// The deletion as a summary: each portal's folded state, the not-found count, who
    /// asked, no device lists.
    fn summary(
        &self,
        deletion_id: Uuid,
        not_found_count: i64,
        requested_at: OffsetDateTime,
        actor: String,
    ) -> Deletion {
        let [reseller_portal, msp_portal, customer_portal] = self.folded();
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
            actor,
        }
    }
}

/// What recording a receipt found: the deletion's reseller and, when this receipt was
/// the last one missing, each portal's final state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRecorded {
    /// The deletion's reseller.
    pub reseller_id: String,
    /// The reseller, MSP and customer portals' final states, when this receipt
    /// completed the deletion (`None` otherwise, and for a receipt recorded before).
    pub completed: Option<[PortalState; 3]>,
}

/// Records one portal's receipt for one part of a deletion (idempotent per part), in the
/// receipts consumer's transaction, and says whether it completed the deletion: one
/// statement, which sees the receipts recorded before it (not its own row), so the
/// receipt that completes is the one inserted when all but it were there. Under the
/// consumer's serializable transaction two receipts recorded at once cannot both miss
/// each other (one of them is retried).
///
/// # Errors
/// Database errors; `RowNotFound` for a receipt of an unknown deletion.
pub async fn record_receipt(
    conn: &mut PgConnection,
    deletion_id: Uuid,
    portal: i16,
    part: i32,
    state: PortalState,
) -> Result<ReceiptRecorded, sqlx::Error> {
    let row = sqlx::query!(
        r#"WITH mine AS (
             INSERT INTO device.deletion_receipts (deletion_id, portal, part, state)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (deletion_id, portal, part) DO UPDATE SET state = EXCLUDED.state
             RETURNING xmax = 0 AS inserted)
           SELECT d.reseller_id, d.part_count,
                  (SELECT inserted FROM mine) AS "inserted!",
                  array_remove(array_agg(r.portal), NULL) AS "portals!",
                  array_remove(array_agg(r.state), NULL) AS "states!"
           FROM device.deletions d LEFT JOIN device.deletion_receipts r USING (deletion_id)
           WHERE d.deletion_id = $1 GROUP BY d.deletion_id"#,
        deletion_id,
        portal,
        part,
        state.as_i16(),
    )
    .fetch_one(&mut *conn)
    .await?;
    let mut receipts = Receipts {
        part_count: row.part_count,
        portals: row.portals,
        states: row.states,
    };
    let all = 3 * row.part_count as usize;
    let completed = (row.inserted && receipts.portals.len() + 1 == all).then(|| {
        receipts.portals.push(portal);
        receipts.states.push(state.as_i16());
        receipts.folded()
    });
    Ok(ReceiptRecorded {
        reseller_id: row.reseller_id,
        completed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_v7_of_a_millisecond_sorts_before_every_v7_of_it_and_after_earlier_ones() {
        let millis: u64 = 1_790_000_000_123;
        let at = |ms: u64| {
            uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, (ms % 1000) as u32 * 1_000_000)
        };
        let floor = first_v7_of_millisecond(millis);
        assert_eq!(floor.get_version_num(), 7);
        for _ in 0..100 {
            assert!(Uuid::new_v7(at(millis)) >= floor);
            assert!(Uuid::new_v7(at(millis + 1)) > floor);
            assert!(Uuid::new_v7(at(millis - 1)) < floor);
        }
    }
}
