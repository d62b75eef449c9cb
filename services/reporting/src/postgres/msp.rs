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
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{
    LinkFact, MovedPart, PlacementDelta, RegistrationGroup, StoredPlacement, UploadRef,
};

/// Serialises the transactions that change link facts or re-place registrations.
///
/// # Errors
/// Database errors.
pub async fn lock_msp_placements(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtext('reporting.msp-placements'))")
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
    let before = sqlx::query!(
        "SELECT CASE WHEN linked THEN msp_id END AS linked_msp, delinked_seq FROM reporting.msp_links
         WHERE customer_knox_id = $1",
        fact.customer.as_str(),
    )
    .fetch_optional(&mut *conn)
    .await?
    .map(|row| (row.linked_msp, row.delinked_seq));
    let after = sqlx::query!(
        "INSERT INTO reporting.msp_links AS l (customer_knox_id, msp_id, linked, seq, delinked_seq)
         VALUES ($1, $2, $3, $4::bigint, CASE WHEN $3 THEN 0 ELSE $4::bigint END)
         ON CONFLICT (customer_knox_id) DO UPDATE
         SET msp_id = CASE WHEN EXCLUDED.seq > l.seq THEN EXCLUDED.msp_id ELSE l.msp_id END,
             linked = CASE WHEN EXCLUDED.seq > l.seq THEN EXCLUDED.linked ELSE l.linked END,
             seq = GREATEST(l.seq, EXCLUDED.seq),
             delinked_seq = GREATEST(l.delinked_seq, EXCLUDED.delinked_seq)
         WHERE EXCLUDED.seq > l.seq OR EXCLUDED.delinked_seq > l.delinked_seq
         RETURNING CASE WHEN l.linked THEN l.msp_id END AS linked_msp, l.delinked_seq",
        fact.customer.as_str(),
        fact.msp_id.as_str(),
        fact.linked,
        fact.seq,
    )
    .fetch_optional(&mut *conn)
    .await?
    .map(|row| (row.linked_msp, row.delinked_seq));
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
    sqlx::query!(
        "INSERT INTO reporting.registrations AS r
           (device_id, upload_id, reseller_id, id_kind, model, uploaded_at, order_number,
            holder_knox_id, moved_by_msp, move_seq, deleted)
         SELECT m.device_id, m.upload_id, m.reseller_id, m.id_kind, m.model, m.uploaded_at,
           m.order_number, $1, $2, $3,
           EXISTS (SELECT 1 FROM reporting.deleted_registrations x
                   WHERE x.device_id = m.device_id AND x.upload_id = m.upload_id)
         FROM UNNEST($4::text[], $5::uuid[], $6::text[], $7::smallint[], $8::text[],
           $9::timestamptz[], $10::text[])
           AS m (device_id, upload_id, reseller_id, id_kind, model, uploaded_at, order_number)
         ON CONFLICT (device_id, upload_id) DO UPDATE
         SET holder_knox_id = EXCLUDED.holder_knox_id, moved_by_msp = EXCLUDED.moved_by_msp,
             move_seq = EXCLUDED.move_seq
         WHERE r.move_seq < EXCLUDED.move_seq",
        part.to.as_str(),
        part.msp_id.as_str(),
        part.seq,
        &ids,
        &uploads,
        &resellers as &[&str],
        &kinds,
        &models as &[&str],
        &times,
        &orders as &[&str],
    )
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

/// One group as `select_groups.sql` reads it, with the holder's newest delink `seq`
/// (needed to find the group's registrations again).
struct Group {
    group: RegistrationGroup,
    delinked_seq: i64,
}

impl Affected<'_> {
    /// The parameters `$1` to `$3` of `select_groups.sql` and `update_groups.sql`: the
    /// customer, or the registrations' device IDs and upload IDs (the other left empty).
    fn keys(&self) -> (Option<&str>, &[String], &[Uuid]) {
        match *self {
            Affected::HeldFromMsp(customer) => (Some(customer), &[], &[]),
            Affected::Registrations(ids, uploads) => (None, ids, uploads),
        }
    }
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
    let (customer, ids, uploads) = affected.keys();
    let groups: Vec<Group> =
        sqlx::query_file!("src/postgres/select_groups.sql", customer, ids, uploads,)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|row| Group {
                group: RegistrationGroup {
                    upload: UploadRef {
                        reseller_id: row.reseller_id,
                        upload_id: row.upload_id,
                        uploaded_at: row.uploaded_at,
                        order_number: row.order_number,
                    },
                    uploaded_to: row.uploaded_to,
                    uploaded_to_msp: row.uploaded_to_msp.unwrap_or(false),
                    holder: row.holder_knox_id,
                    holder_msp: row.holder_msp,
                    delinked_since_move: row.delinked_since_move,
                    placed: row.placed_knox_id.map(|knox_id| StoredPlacement {
                        knox_id,
                        virtual_upload: row.virtual_upload,
                        via_msp_id: row.via_msp_id,
                    }),
                    devices: row.devices,
                    live: row.live,
                },
                delinked_seq: row.delinked_seq,
            })
            .collect();

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

    let updated = sqlx::query_file!(
        "src/postgres/update_groups.sql",
        customer,
        ids,
        uploads,
        &resellers as &[&str],
        &upload_ids,
        &holders as &[&str],
        &delinked_seqs,
        &delinked,
        &old_knox_ids as &[Option<&str>],
        &old_virtuals,
        &old_vias as &[&str],
        &new_knox_ids as &[Option<&str>],
        &new_virtuals,
        &new_vias as &[&str],
    )
    .fetch_one(&mut *conn)
    .await?;
    if updated.updated != expected {
        return Err(ApplyError::Failed(anyhow!(
            "re-placing registrations: expected to update {expected}, updated {}",
            updated.updated
        )));
    }
    // Deleted registrations placed elsewhere: their deletions are listed where they are
    // now (`relist_deletions`).
    super::relist_deletions(conn, &updated.deleted_ids, &updated.deleted_uploads).await?;
    Ok(deltas)
}
