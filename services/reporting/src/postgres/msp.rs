//! The projection's writes for msp-link's events: the customers' link facts, the holders
//! of moved registrations, and re-placing registrations whose facts changed (DOMAIN.md
//! rules 2 and 3).
//!
//! A registration's placement columns say where its counts are; its facts (upload target,
//! holder, move `seq`, the holder's link) say where they belong. Every write here changes
//! facts only, then [`replace_registrations`] compares the two for the registrations
//! concerned, one group of registrations sharing their facts at a time, and returns the
//! deltas that move the counts (the caller applies them with `apply_deltas`).
//!
//! Concurrency: the handlers that re-place take [`lock_msp_placements`] first, so link
//! facts do not change under a re-placement (several replicas may consume at once), and
//! [`replace_registrations`] locks the rows it re-places, so a deletion applied at the
//! same time counts its device where the re-placement left it.

use std::collections::HashSet;

use anyhow::anyhow;
use reseller_kit::inbox::ApplyError;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{
    LinkFact, MovedPart, PlacementDelta, RegistrationGroup, StoredPlacement, UploadRef,
};

/// Serialises the transactions that change link facts or re-place registrations.
///
/// # Errors
/// Database errors.
pub async fn lock_msp_placements(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('reporting.msp-placements'))")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records a customer's link fact: the fact with the highest `seq` is the current link,
/// and a delink also raises the customer's newest delink `seq`. Returns whether that
/// changed what placements depend on (the linked MSP, or the newest delink).
///
/// # Errors
/// Database errors.
pub async fn upsert_link(conn: &mut PgConnection, fact: &LinkFact) -> Result<bool, sqlx::Error> {
    type Link = (Option<String>, i64);
    let before: Option<Link> = sqlx::query_as(
        "SELECT CASE WHEN linked THEN msp_id END, delinked_seq FROM reporting.msp_links \
         WHERE customer_knox_id = $1",
    )
    .bind(fact.customer.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let after: Option<Link> = sqlx::query_as(
        "INSERT INTO reporting.msp_links AS l (customer_knox_id, msp_id, linked, seq, delinked_seq) \
         VALUES ($1, $2, $3, $4, CASE WHEN $3 THEN 0 ELSE $4 END) \
         ON CONFLICT (customer_knox_id) DO UPDATE \
         SET msp_id = CASE WHEN EXCLUDED.seq > l.seq THEN EXCLUDED.msp_id ELSE l.msp_id END, \
             linked = CASE WHEN EXCLUDED.seq > l.seq THEN EXCLUDED.linked ELSE l.linked END, \
             seq = GREATEST(l.seq, EXCLUDED.seq), \
             delinked_seq = GREATEST(l.delinked_seq, EXCLUDED.delinked_seq) \
         WHERE EXCLUDED.seq > l.seq OR EXCLUDED.delinked_seq > l.delinked_seq \
         RETURNING CASE WHEN l.linked THEN l.msp_id END, l.delinked_seq",
    )
    .bind(fact.customer.as_str())
    .bind(fact.msp_id.as_str())
    .bind(fact.linked)
    .bind(fact.seq)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(after.is_some_and(|after| before != Some(after)))
}

/// Records a move's new holder on its registrations where no newer move is recorded,
/// deleted ones included (a deletion racing a move ends the same in any order). A
/// registration whose upload has not been projected yet is recorded from the move (placed
/// nowhere; the upload completes it), or as deleted when its deletion came first.
/// Returns the moved registrations' keys (device IDs, upload IDs) to re-place.
///
/// # Errors
/// Database errors.
pub async fn move_registrations(
    conn: &mut PgConnection,
    part: &MovedPart,
) -> Result<(Vec<String>, Vec<Uuid>), sqlx::Error> {
    let n = part.registrations.len();
    let mut ids = Vec::with_capacity(n);
    let mut uploads = Vec::with_capacity(n);
    let mut resellers = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut models = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    let mut orders = Vec::with_capacity(n);
    // One row per registration: an upsert may not touch a row twice.
    let mut seen = HashSet::with_capacity(n);
    for moved in &part.registrations {
        if !seen.insert((moved.device.device_id.as_str(), moved.upload.upload_id)) {
            continue;
        }
        ids.push(moved.device.device_id.clone());
        uploads.push(moved.upload.upload_id);
        resellers.push(moved.upload.reseller_id.as_str());
        kinds.push(moved.device.kind.as_i16());
        models.push(moved.device.model.as_str());
        times.push(moved.upload.uploaded_at);
        orders.push(moved.upload.order_number.as_str());
    }
    sqlx::query(
        "INSERT INTO reporting.registrations AS r \
           (device_id, upload_id, reseller_id, id_kind, model, uploaded_at, order_number, \
            holder_knox_id, moved_by_msp, move_seq, deleted) \
         SELECT m.device_id, m.upload_id, m.reseller_id, m.id_kind, m.model, m.uploaded_at, \
           m.order_number, $1, $2, $3, \
           EXISTS (SELECT 1 FROM reporting.deleted_registrations x \
                   WHERE x.device_id = m.device_id AND x.upload_id = m.upload_id) \
         FROM UNNEST($4::text[], $5::uuid[], $6::text[], $7::smallint[], $8::text[], \
           $9::timestamptz[], $10::text[]) \
           AS m (device_id, upload_id, reseller_id, id_kind, model, uploaded_at, order_number) \
         ON CONFLICT (device_id, upload_id) DO UPDATE \
         SET holder_knox_id = EXCLUDED.holder_knox_id, moved_by_msp = EXCLUDED.moved_by_msp, \
             move_seq = EXCLUDED.move_seq \
         WHERE r.move_seq < EXCLUDED.move_seq",
    )
    .bind(part.to.as_str())
    .bind(part.msp_id.as_str())
    .bind(part.seq)
    .bind(&ids)
    .bind(&uploads)
    .bind(&resellers)
    .bind(&kinds)
    .bind(&models)
    .bind(&times)
    .bind(&orders)
    .execute(&mut *conn)
    .await?;
    Ok((ids, uploads))
}

/// The registrations to re-place.
#[derive(Debug, Clone, Copy)]
pub enum Affected<'a> {
    /// Those uploaded to an MSP that this customer holds: the ones its link decides.
    HeldFromMsp(&'a str),
    /// These (device IDs, upload IDs, pairwise).
    Registrations(&'a [String], &'a [Uuid]),
}

/// `WHERE` the registrations uploaded to an MSP that the customer `$p` holds (the
/// predicate of the index `registrations_held_from_msp`).
macro_rules! held_from_msp {
    ($p:literal) => {
        concat!(
            "r.holder_knox_id = ",
            $p,
            " AND r.uploaded_to_msp AND r.holder_knox_id <> r.uploaded_to"
        )
    };
}

/// `WHERE` the registrations named by the arrays `$ids` and `$uploads`.
macro_rules! registrations_in {
    ($ids:literal, $uploads:literal) => {
        concat!(
            "(r.device_id, r.upload_id) IN (SELECT * FROM UNNEST(",
            $ids,
            "::text[], ",
            $uploads,
            "::uuid[]))"
        )
    };
}

/// Locks the registrations `$filter` selects and counts them by group: what decides their
/// placement (upload, holder, the holder's link, whether the holder was delinked since
/// the move) and where they are placed now. Registrations whose upload is not known yet
/// are placed nowhere and stay so.
macro_rules! select_groups {
    ($filter:expr) => {
        concat!(
            "WITH locked AS ( \
               SELECT r.reseller_id, r.upload_id, r.uploaded_at, r.order_number, r.uploaded_to, \
                 r.uploaded_to_msp, r.holder_knox_id, r.move_seq, r.placed_knox_id, r.virtual, \
                 r.via_msp_id, r.deleted \
               FROM reporting.registrations r WHERE ",
            $filter,
            " FOR UPDATE) \
             SELECT k.reseller_id, k.upload_id, k.uploaded_at, k.order_number, k.uploaded_to, \
               k.uploaded_to_msp, k.holder_knox_id, \
               CASE WHEN l.linked THEN l.msp_id END AS holder_msp, \
               COALESCE(l.delinked_seq, 0) AS delinked_seq, \
               k.move_seq < COALESCE(l.delinked_seq, 0) AS delinked_since_move, \
               k.placed_knox_id, k.virtual, k.via_msp_id, \
               count(*) AS devices, count(*) FILTER (WHERE NOT k.deleted) AS live \
             FROM locked k LEFT JOIN reporting.msp_links l ON l.customer_knox_id = k.holder_knox_id \
             WHERE k.uploaded_to IS NOT NULL \
             GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13"
        )
    };
}

/// Moves the groups `$1`..`$11` name (by what `select_groups` grouped them on) to their new
/// placements, among the registrations `$filter` selects.
macro_rules! update_groups {
    ($filter:expr) => {
        concat!(
            "UPDATE reporting.registrations r \
             SET placed_knox_id = g.new_knox_id, virtual = g.new_virtual, via_msp_id = g.new_via \
             FROM UNNEST($1::text[], $2::uuid[], $3::text[], $4::bigint[], $5::boolean[], \
               $6::text[], $7::boolean[], $8::text[], $9::text[], $10::boolean[], $11::text[]) \
               AS g (reseller_id, upload_id, holder, delinked_seq, delinked_since_move, \
                 old_knox_id, old_virtual, old_via, new_knox_id, new_virtual, new_via) \
             WHERE ",
            $filter,
            " AND r.uploaded_to IS NOT NULL \
               AND r.reseller_id = g.reseller_id AND r.upload_id = g.upload_id \
               AND r.holder_knox_id = g.holder \
               AND (r.move_seq < g.delinked_seq) = g.delinked_since_move \
               AND r.placed_knox_id IS NOT DISTINCT FROM g.old_knox_id \
               AND r.virtual = g.old_virtual AND r.via_msp_id = g.old_via"
        )
    };
}

/// One group as `select_groups` reads it, with the holder's newest delink `seq` (needed
/// to find the group's registrations again).
struct Group {
    group: RegistrationGroup,
    delinked_seq: i64,
}

fn group_from(row: &sqlx::postgres::PgRow) -> Result<Group, sqlx::Error> {
    let placed: Option<String> = row.try_get("placed_knox_id")?;
    let virtual_upload: bool = row.try_get("virtual")?;
    let via_msp_id: String = row.try_get("via_msp_id")?;
    let uploaded_at: OffsetDateTime = row.try_get("uploaded_at")?;
    Ok(Group {
        group: RegistrationGroup {
            upload: UploadRef {
                reseller_id: row.try_get("reseller_id")?,
                upload_id: row.try_get("upload_id")?,
                uploaded_at,
                order_number: row.try_get("order_number")?,
            },
            uploaded_to: row.try_get("uploaded_to")?,
            uploaded_to_msp: row
                .try_get::<Option<bool>, _>("uploaded_to_msp")?
                .unwrap_or(false),
            holder: row.try_get("holder_knox_id")?,
            holder_msp: row.try_get("holder_msp")?,
            delinked_since_move: row.try_get("delinked_since_move")?,
            placed: placed.map(|knox_id| StoredPlacement {
                knox_id,
                virtual_upload,
                via_msp_id,
            }),
            devices: row.try_get("devices")?,
            live: row.try_get("live")?,
        },
        delinked_seq: row.try_get("delinked_seq")?,
    })
}

/// Re-places the `affected` registrations: each group whose placement is not the one its
/// facts give ([`RegistrationGroup::replace`], one `place` per group) is moved there, and
/// the deltas that move its counts are returned. Call with [`lock_msp_placements`] held.
///
/// # Errors
/// Database errors; a failure when the registrations changed under the re-placement
/// (cannot happen while the lock is held; the event is then retried).
pub async fn replace_registrations(
    conn: &mut PgConnection,
    affected: Affected<'_>,
) -> Result<Vec<PlacementDelta>, ApplyError> {
    let rows = match affected {
        Affected::HeldFromMsp(customer) => {
            sqlx::query(select_groups!(held_from_msp!("$1")))
                .bind(customer)
                .fetch_all(&mut *conn)
                .await?
        }
        Affected::Registrations(ids, uploads) => {
            sqlx::query(select_groups!(registrations_in!("$1", "$2")))
                .bind(ids)
                .bind(uploads)
                .fetch_all(&mut *conn)
                .await?
        }
    };
    let groups = rows.iter().map(group_from).collect::<Result<Vec<_>, _>>()?;

    let mut deltas = Vec::new();
    let mut expected = 0i64;
    let mut resellers = Vec::new();
    let mut upload_ids = Vec::new();
    let mut holders = Vec::new();
    let mut delinked_seqs = Vec::new();
    let mut delinked = Vec::new();
    let mut old_knox_ids = Vec::new();
    let mut old_virtuals = Vec::new();
    let mut old_vias = Vec::new();
    let mut new_knox_ids = Vec::new();
    let mut new_virtuals = Vec::new();
    let mut new_vias = Vec::new();
    for Group {
        group,
        delinked_seq,
    } in &groups
    {
        let Some((to, moved)) = group.replace() else {
            continue;
        };
        expected += group.devices;
        deltas.extend(moved);
        resellers.push(group.upload.reseller_id.as_str());
        upload_ids.push(group.upload.upload_id);
        holders.push(group.holder.as_str());
        delinked_seqs.push(*delinked_seq);
        delinked.push(group.delinked_since_move);
        old_knox_ids.push(group.placed.as_ref().map(|p| p.knox_id.as_str()));
        old_virtuals.push(group.placed.as_ref().is_some_and(|p| p.virtual_upload));
        old_vias.push(group.placed.as_ref().map_or("", |p| p.via_msp_id.as_str()));
        new_knox_ids.push(to.map(|p| p.knox_id));
        new_virtuals.push(to.is_some_and(|p| p.virtual_upload));
        new_vias.push(to.map_or("", |p| p.via_msp_id));
    }
    if expected == 0 {
        return Ok(deltas);
    }

    let update = match affected {
        Affected::HeldFromMsp(_) => sqlx::query(update_groups!(held_from_msp!("$12"))),
        Affected::Registrations(..) => sqlx::query(update_groups!(registrations_in!("$12", "$13"))),
    }
    .bind(&resellers)
    .bind(&upload_ids)
    .bind(&holders)
    .bind(&delinked_seqs)
    .bind(&delinked)
    .bind(&old_knox_ids)
    .bind(&old_virtuals)
    .bind(&old_vias)
    .bind(&new_knox_ids)
    .bind(&new_virtuals)
    .bind(&new_vias);
    let update = match affected {
        Affected::HeldFromMsp(customer) => update.bind(customer),
        Affected::Registrations(ids, uploads) => update.bind(ids).bind(uploads),
    };
    let updated = update.execute(&mut *conn).await?.rows_affected();
    if i64::try_from(updated).ok() != Some(expected) {
        return Err(ApplyError::Failed(anyhow!(
            "re-placing registrations: expected to update {expected}, updated {updated}"
        )));
    }
    Ok(deltas)
}
