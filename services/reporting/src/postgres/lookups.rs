//! Finding a device by any identifier and reading its history (migration 0008): the
//! projection's writes of the facts (secondary identifiers, moves, delinks, deletions)
//! and the reads. Every read is confined to one reseller: another reseller's device is
//! simply not found.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Repository;
use crate::domain::{
    DeletionFacts, DelinkFacts, DeviceFacts, MoveFacts, MovedPart, RegistrationFacts, UploadedPart,
};

/// Records the secondary identifiers of an upload part's devices in the lookup table
/// (`insert_registrations` keeps them on the registration). Idempotent; no statement
/// when the part has none.
///
/// # Errors
/// Database errors.
pub async fn record_secondary_ids(
    conn: &mut PgConnection,
    part: &UploadedPart,
) -> Result<(), sqlx::Error> {
    let (identifiers, devices): (Vec<&str>, Vec<&str>) = part
        .devices
        .iter()
        .flat_map(|d| {
            d.secondary_ids
                .iter()
                .map(move |id| (id.as_str(), d.device_id.as_str()))
        })
        .unzip();
    if identifiers.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "INSERT INTO reporting.secondary_identifiers (identifier, device_id, upload_id)
         SELECT i, d, $3 FROM UNNEST($1::text[], $2::text[]) AS s (i, d)
         ON CONFLICT DO NOTHING",
        &identifiers as &[&str],
        &devices as &[&str],
        part.upload.upload_id,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records each registration's move (its history keeps every move; the registration
/// only the newest holder). Idempotent.
///
/// # Errors
/// Database errors.
pub async fn record_moves(conn: &mut PgConnection, part: &MovedPart) -> Result<(), sqlx::Error> {
    let from: Vec<&str> = part
        .registrations
        .iter()
        .map(|r| r.from_knox_id.as_str())
        .collect();
    let ids: Vec<&str> = part
        .registrations
        .iter()
        .map(|r| r.device.device_id.as_str())
        .collect();
    let uploads: Vec<Uuid> = part
        .registrations
        .iter()
        .map(|r| r.upload.upload_id)
        .collect();
    sqlx::query!(
        "INSERT INTO reporting.registration_moves
           (device_id, upload_id, seq, msp_id, from_knox_id, to_knox_id, moved_at)
         SELECT d, u, $4, $5, f, $6, $7 FROM UNNEST($1::text[], $2::uuid[], $3::text[]) AS m (d, u, f)
         ON CONFLICT DO NOTHING",
        &ids as &[&str],
        &uploads,
        &from as &[&str],
        part.seq,
        part.msp_id.as_str(),
        part.to.as_str(),
        part.moved_at,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records a delink (every one is kept: a device's history names those of the customer
/// holding it). Idempotent.
///
/// # Errors
/// Database errors.
pub async fn record_delink(
    conn: &mut PgConnection,
    delink: &DelinkFacts,
    event_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO reporting.delinks
           (customer_knox_id, seq, msp_id, requested_by, delinked_at, event_id)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        &delink.customer_knox_id,
        delink.seq,
        &delink.msp_id,
        &delink.requested_by,
        delink.delinked_at,
        event_id,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The delinks of `customer` from `msp_id` after `seq` (a move's), with their event IDs:
/// a move projected after them lists them for its resellers.
///
/// # Errors
/// Database errors.
pub async fn delinks_after(
    conn: &mut PgConnection,
    customer: &str,
    msp_id: &str,
    seq: i64,
) -> Result<Vec<(Uuid, DelinkFacts)>, sqlx::Error> {
    Ok(sqlx::query!(
        "SELECT event_id, customer_knox_id, seq, msp_id, requested_by, delinked_at
         FROM reporting.delinks WHERE customer_knox_id = $1 AND msp_id = $2 AND seq > $3",
        customer,
        msp_id,
        seq,
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|d| {
        (
            d.event_id,
            DelinkFacts {
                customer_knox_id: d.customer_knox_id,
                seq: d.seq,
                msp_id: d.msp_id,
                requested_by: d.requested_by,
                delinked_at: d.delinked_at,
            },
        )
    })
    .collect())
}

/// Where one identifier's device is, as the newest registration of the reseller that
/// has it as its device ID or a secondary identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// Index of the identifier in the request.
    pub index: usize,
    /// The device's primary identifier.
    pub device_id: String,
    /// `reseller.v1.DeviceIdKind`.
    pub id_kind: i16,
    /// Its model.
    pub model: String,
    /// Its secondary identifiers.
    pub secondary_ids: Vec<String>,
    /// The row of the Customers page it is placed under, if any.
    pub placed_knox_id: Option<String>,
    /// The account holding it.
    pub holder_knox_id: String,
    /// The MSP that last moved it ("" if none).
    pub moved_by_msp: String,
    /// For a virtual upload, the MSP it was uploaded to.
    pub via_msp_id: String,
    /// The account uploaded to, when it was an MSP (`None`: not an MSP, or not known yet).
    pub uploaded_to_msp: Option<String>,
    /// Its upload.
    pub upload_id: Uuid,
    /// The upload's order number.
    pub order_number: String,
    /// When it was uploaded.
    pub uploaded_at: OffsetDateTime,
    /// Placed as a virtual upload.
    pub virtual_upload: bool,
    /// Deleted.
    pub deleted: bool,
    /// The deletion, when deleted (and its record projected).
    pub deletion_id: Option<Uuid>,
    /// When it was deleted.
    pub deleted_at: Option<OffsetDateTime>,
}

impl Repository {
    /// The newest registration of the reseller for each of `keys` (canonical
    /// identifiers; request order kept by index), found by device ID or secondary
    /// identifier; a key no registration of the reseller has is absent from the answer.
    /// One statement: the keys are matched against both indexes at once.
    ///
    /// # Errors
    /// Database errors.
    pub async fn find_devices(
        &self,
        reseller_id: &str,
        keys: &[&str],
    ) -> Result<Vec<Located>, sqlx::Error> {
        let rows = sqlx::query!(
            r#"WITH asked AS (
                 SELECT k.id, k.n FROM UNNEST($2::text[]) WITH ORDINALITY AS k (id, n)),
               matched AS (
                 SELECT a.n, r.device_id, r.upload_id FROM asked a
                 JOIN reporting.registrations r ON r.device_id = a.id
                 WHERE r.reseller_id = $1
                 UNION ALL
                 SELECT a.n, s.device_id, s.upload_id FROM asked a
                 JOIN reporting.secondary_identifiers s ON s.identifier = a.id)
             SELECT DISTINCT ON (m.n) m.n AS "n!", r.device_id, r.id_kind, r.model,
               r.secondary_ids, r.placed_knox_id, r.holder_knox_id, r.moved_by_msp,
               r.via_msp_id, CASE WHEN r.uploaded_to_msp THEN r.uploaded_to END AS uploaded_to_msp,
               r.upload_id, r.order_number, r.uploaded_at, r.virtual, r.deleted,
               x.deletion_id AS "deletion_id?", x.deleted_at AS "deleted_at?"
             FROM matched m
             JOIN reporting.registrations r
               ON r.device_id = m.device_id AND r.upload_id = m.upload_id
             LEFT JOIN reporting.registration_deletions x
               ON x.device_id = r.device_id AND x.upload_id = r.upload_id
             WHERE r.reseller_id = $1 AND r.uploaded_to IS NOT NULL
             ORDER BY m.n, r.uploaded_at DESC, r.upload_id DESC"#,
            reseller_id,
            keys as &[&str],
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Located {
                index: (r.n - 1) as usize,
                device_id: r.device_id,
                id_kind: r.id_kind,
                model: r.model,
                secondary_ids: r.secondary_ids,
                placed_knox_id: r.placed_knox_id,
                holder_knox_id: r.holder_knox_id,
                moved_by_msp: r.moved_by_msp,
                via_msp_id: r.via_msp_id,
                uploaded_to_msp: r.uploaded_to_msp,
                upload_id: r.upload_id,
                order_number: r.order_number,
                uploaded_at: r.uploaded_at,
                virtual_upload: r.r#virtual,
                deleted: r.deleted,
                deletion_id: r.deletion_id,
                deleted_at: r.deleted_at,
            })
            .collect())
    }

    /// Everything stored about the reseller's device `device_id` (its primary
    /// identifier): registrations, moves, the delinks of the customers it was moved to,
    /// deletions; read from one snapshot. Empty registrations: not the reseller's.
    ///
    /// # Errors
    /// Database errors.
    pub async fn device_facts(
        &self,
        reseller_id: &str,
        device_id: &str,
    ) -> Result<DeviceFacts, sqlx::Error> {
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
        let registrations = sqlx::query!(
            r#"SELECT r.upload_id, r.uploaded_at, r.uploaded_to,
                 COALESCE(a.actor, '') AS "actor!"
               FROM reporting.registrations r
               LEFT JOIN reporting.activities a
                 ON a.reseller_id = r.reseller_id AND a.activity_id = r.upload_id::text
               WHERE r.device_id = $1 AND r.reseller_id = $2"#,
            device_id,
            reseller_id,
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| RegistrationFacts {
            upload_id: r.upload_id,
            uploaded_at: r.uploaded_at,
            uploaded_to: r.uploaded_to,
            actor: r.actor,
        })
        .collect::<Vec<_>>();
        if registrations.is_empty() {
            return Ok(DeviceFacts::default());
        }
        let uploads: Vec<Uuid> = registrations.iter().map(|r| r.upload_id).collect();
        let moves = sqlx::query!(
            "SELECT upload_id, seq, msp_id, from_knox_id, to_knox_id, moved_at
             FROM reporting.registration_moves
             WHERE device_id = $1 AND upload_id = ANY($2::uuid[])",
            device_id,
            &uploads,
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|m| MoveFacts {
            upload_id: m.upload_id,
            seq: m.seq,
            msp_id: m.msp_id,
            from_knox_id: m.from_knox_id,
            to_knox_id: m.to_knox_id,
            moved_at: m.moved_at,
        })
        .collect::<Vec<_>>();
        let holders: Vec<&str> = moves.iter().map(|m| m.to_knox_id.as_str()).collect();
        let delinks = sqlx::query!(
            "SELECT customer_knox_id, seq, msp_id, requested_by, delinked_at
             FROM reporting.delinks WHERE customer_knox_id = ANY($1::text[])",
            &holders as &[&str],
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|d| DelinkFacts {
            customer_knox_id: d.customer_knox_id,
            seq: d.seq,
            msp_id: d.msp_id,
            requested_by: d.requested_by,
            delinked_at: d.delinked_at,
        })
        .collect();
        let deletions = sqlx::query!(
            r#"SELECT x.upload_id, x.deletion_id, x.deleted_at, COALESCE(a.actor, '') AS "actor!"
               FROM reporting.registration_deletions x
               LEFT JOIN reporting.activities a
                 ON a.reseller_id = $3 AND a.activity_id = x.deletion_id::text
               WHERE x.device_id = $1 AND x.upload_id = ANY($2::uuid[])"#,
            device_id,
            &uploads,
            reseller_id,
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|d| DeletionFacts {
            upload_id: d.upload_id,
            deletion_id: d.deletion_id,
            deleted_at: d.deleted_at,
            actor: d.actor,
        })
        .collect();
        tx.commit().await?;
        Ok(DeviceFacts {
            registrations,
            moves,
            delinks,
            deletions,
        })
    }
}
