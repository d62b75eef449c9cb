//! The projection's writes. Each runs inside the idempotent consumer's transaction, which
//! also records the event in the inbox, so one event is one transaction.

use std::collections::HashSet;

use reseller_kit::events::tombstones_cte;
use reseller_kit::ids::{KnoxId, ResellerId};
use reseller_kit::one_statement::Params;
use reseller_kit::portal::upload_has_tombstones;
use reseller_kit::sql::{copy_unless_conflict, push_copy_field};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{
    Account, AccountKind, AddedCustomer, CustomerStatus, DeletedPart, PLACEMENT_KINDS, Placement,
    PlacementDelta, UploadedPart, merge,
};

/// Records an account, and brings the account's rows of every reseller up to date if
/// they say otherwise.
///
/// # Errors
/// Database errors.
pub async fn upsert_account(conn: &mut PgConnection, account: &Account) -> Result<(), sqlx::Error> {
    let changed = sqlx::query!(
        "INSERT INTO reporting.accounts (knox_id, kind, company_name, country)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (knox_id) DO UPDATE
         SET kind = EXCLUDED.kind, company_name = EXCLUDED.company_name, country = EXCLUDED.country
         WHERE (accounts.kind, accounts.company_name, accounts.country)
               IS DISTINCT FROM (EXCLUDED.kind, EXCLUDED.company_name, EXCLUDED.country)",
        account.knox_id.as_str(),
        account.kind.as_db(),
        &account.company_name,
        &account.country,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if changed > 0 {
        sqlx::query!(
            "UPDATE reporting.customer_rows SET kind = $2, company_name = $3, country = $4
             WHERE knox_id = $1 AND (kind, company_name, country) IS DISTINCT FROM ($2, $3, $4)",
            account.knox_id.as_str(),
            account.kind.as_db(),
            &account.company_name,
            &account.country,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Records that a reseller added an account: creates its row, or completes the row that
/// already exists (a repeated event, or a row that an upload's counters, virtual uploads
/// or a reference update created first). The counters are never touched here: they
/// belong to the device events.
///
/// The reference and the status each keep the value of the highest revision seen: the
/// reference from this event or an earlier-applied `customer_reference_updated`; the
/// status from this event or the decision `approvals` recorded (whichever reflects the
/// newer decision; the same revision is the same decision).
///
/// # Errors
/// Database errors.
pub async fn add_customer(
    conn: &mut PgConnection,
    customer: &AddedCustomer,
) -> Result<(), sqlx::Error> {
    lock_customer_row(&mut *conn, &customer.reseller_id, &customer.account.knox_id).await?;
    upsert_account(&mut *conn, &customer.account).await?;
    sqlx::query!(
        "INSERT INTO reporting.customer_rows AS r
           (reseller_id, knox_id, kind, company_name, country, internal_reference,
            reference_revision, status, status_revision, added, added_at)
         SELECT $1, $2, $3, $4, $5, $6, $7,
           CASE WHEN a.revision >= $9 THEN a.status ELSE $8 END, GREATEST(a.revision, $9),
           true, $10
         FROM (VALUES (1)) AS one (x)
         LEFT JOIN reporting.approvals a ON a.reseller_id = $1 AND a.knox_id = $2
         ON CONFLICT (reseller_id, knox_id) DO UPDATE
         SET kind = EXCLUDED.kind, company_name = EXCLUDED.company_name,
             country = EXCLUDED.country,
             internal_reference = CASE WHEN r.reference_revision > EXCLUDED.reference_revision
               THEN r.internal_reference ELSE EXCLUDED.internal_reference END,
             reference_revision = GREATEST(r.reference_revision, EXCLUDED.reference_revision),
             status = CASE WHEN r.added AND r.status_revision > EXCLUDED.status_revision
               THEN r.status ELSE EXCLUDED.status END,
             status_revision = CASE WHEN r.added
               THEN GREATEST(r.status_revision, EXCLUDED.status_revision)
               ELSE EXCLUDED.status_revision END,
             added = true, added_at = EXCLUDED.added_at",
        customer.reseller_id.as_str(),
        customer.account.knox_id.as_str(),
        customer.account.kind.as_db(),
        &customer.account.company_name,
        &customer.account.country,
        &customer.internal_reference,
        customer.reference_revision,
        customer.status.as_db(),
        customer.status_revision,
        customer.added_at,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records a reseller's internal reference for an account at `revision`, unless a newer
/// revision is recorded. When the reseller's `customer_added` has not been projected yet,
/// the reference waits in an unlisted row (as an upload's counters do; its status is the
/// column's default for such rows, migration 0006), which `add_customer` completes
/// without overwriting the newer reference.
///
/// # Errors
/// Database errors.
pub async fn update_reference(
    conn: &mut PgConnection,
    reseller_id: &ResellerId,
    knox_id: &KnoxId,
    reference: &str,
    revision: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO reporting.customer_rows AS r
           (reseller_id, knox_id, kind, company_name, country, internal_reference,
            reference_revision)
         SELECT $1, $2, COALESCE(a.kind, 'CUSTOMER'), COALESCE(a.company_name, ''),
           COALESCE(a.country, ''), $3, $4
         FROM (VALUES (1)) AS one (x) LEFT JOIN reporting.accounts a ON a.knox_id = $2
         ON CONFLICT (reseller_id, knox_id) DO UPDATE
         SET internal_reference = EXCLUDED.internal_reference,
             reference_revision = EXCLUDED.reference_revision
         WHERE r.reference_revision <= EXCLUDED.reference_revision",
        reseller_id.as_str(),
        knox_id.as_str(),
        reference,
        revision,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records the status an account's decision (at `revision`) gives a reseller, unless a
/// newer decision is recorded, and shows it on the row if the reseller added the account
/// (rows that exist only through virtual uploads show `ACTIVE` whatever the decision,
/// DOMAIN.md; `add_customer` reads the decision recorded here).
///
/// # Errors
/// Database errors.
pub async fn change_status(
    conn: &mut PgConnection,
    reseller_id: &ResellerId,
    knox_id: &KnoxId,
    status: CustomerStatus,
    revision: i64,
    changed_at: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    lock_customer_row(&mut *conn, reseller_id, knox_id).await?;
    sqlx::query!(
        "INSERT INTO reporting.approvals AS a (reseller_id, knox_id, status, changed_at, revision)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (reseller_id, knox_id) DO UPDATE
         SET status = EXCLUDED.status, changed_at = EXCLUDED.changed_at,
             revision = EXCLUDED.revision
         WHERE a.revision <= EXCLUDED.revision",
        reseller_id.as_str(),
        knox_id.as_str(),
        status.as_db(),
        changed_at,
        revision,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE reporting.customer_rows SET status = $3, status_revision = $4
         WHERE reseller_id = $1 AND knox_id = $2 AND added AND status_revision <= $4",
        reseller_id.as_str(),
        knox_id.as_str(),
        status.as_db(),
        revision,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Serialises, until the transaction ends, the handlers that read one of the reseller's
/// customer facts (the row, its recorded decision) to write the other: `add_customer`
/// reads `approvals` to set the row's status, `change_status` updates the row only if it
/// exists. Two consumer replicas applying both at once would each miss the other's
/// uncommitted write, and the row would keep the older status for good. The consumers'
/// serializable transactions (`reseller_kit::inbox::BEGIN_SERIALIZABLE`) are what rule
/// that out: the second to commit is aborted (40001) and applied again. The lock makes
/// the second wait for the first to finish instead of racing it, so the conflict shows
/// at once rather than at commit.
async fn lock_customer_row(
    conn: &mut PgConnection,
    reseller_id: &ResellerId,
    knox_id: &KnoxId,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('reporting.customer:' || $1 || '/' || $2, 0))",
        reseller_id.as_str(),
        knox_id.as_str(),
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What an upload part did to the registrations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InsertedPart {
    /// Registrations inserted, placed under the part's placement.
    pub inserted: i64,
    /// Of them, not deleted.
    pub live: i64,
    /// Registrations a move announced before this upload (placed nowhere so far) that the
    /// part completed with the upload's facts: the caller places them.
    pub completed: Vec<String>,
}

/// Whether registrations of `upload_id` announced by a move are waiting for their upload
/// (the caller then takes the MSP placement lock before completing them).
///
/// # Errors
/// Database errors.
pub async fn awaits_upload(conn: &mut PgConnection, upload_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM reporting.registrations
                          WHERE upload_id = $1 AND uploaded_to IS NULL) AS "awaits!""#,
        upload_id,
    )
    .fetch_one(&mut *conn)
    .await
}

/// Registers one part of an upload: inserts its registrations under `placement` (rule 1:
/// not moved yet, they are placed under the account uploaded to), and completes those a
/// move projected first with the upload's facts (see [`InsertedPart`]).
///
/// A registration already projected from an upload (a redelivered or repeated part) is
/// left alone. One whose deletion was projected first (a tombstone) is inserted as
/// deleted: it never shows, yet counts in UPLOADS as any deleted device does, so the
/// counts end the same whichever event arrived first.
///
/// # Errors
/// Database errors.
pub async fn insert_registrations(
    conn: &mut PgConnection,
    part: &UploadedPart,
    placement: &Placement<'_>,
) -> Result<InsertedPart, sqlx::Error> {
    let n = part.devices.len();
    let mut ids = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut models = Vec::with_capacity(n);
    // A device's secondary identifiers as one cell ("" for none): UNNEST cannot take a
    // ragged text[][] (canonical identifiers never hold a comma).
    let mut secondaries = Vec::with_capacity(n);
    // One row per device: an upsert may not touch a row twice.
    let mut seen = HashSet::with_capacity(n);
    for device in part.devices.iter().filter(|d| seen.insert(&d.device_id)) {
        ids.push(device.device_id.as_str());
        kinds.push(device.kind.as_i16());
        models.push(device.model.as_str());
        secondaries.push(device.secondary_ids.join(","));
    }
    let upload = &part.upload;
    // `xmax = 0` tells a row inserted by this statement from a row it updated.
    let row = sqlx::query!(
        r#"WITH upserted AS (
           INSERT INTO reporting.registrations AS r
             (device_id, upload_id, reseller_id, id_kind, model, uploaded_at, order_number,
              uploaded_to, uploaded_to_msp, holder_knox_id, placed_knox_id, virtual, via_msp_id,
              deleted, secondary_ids)
           SELECT d.device_id, $1, $2, d.id_kind, d.model, $3, $4, $5, $6, $5, $7, $8, $9,
             EXISTS (SELECT 1 FROM reporting.deleted_registrations x
                     WHERE x.device_id = d.device_id AND x.upload_id = $1),
             COALESCE(string_to_array(NULLIF(d.secondary, ''), ','), '{}')
           FROM UNNEST($10::text[], $11::smallint[], $12::text[], $13::text[])
             AS d (device_id, id_kind, model, secondary)
           ON CONFLICT (device_id, upload_id) DO UPDATE
           SET reseller_id = EXCLUDED.reseller_id, id_kind = EXCLUDED.id_kind,
               model = EXCLUDED.model, uploaded_at = EXCLUDED.uploaded_at,
               order_number = EXCLUDED.order_number, uploaded_to = EXCLUDED.uploaded_to,
               uploaded_to_msp = EXCLUDED.uploaded_to_msp, secondary_ids = EXCLUDED.secondary_ids
           WHERE r.uploaded_to IS NULL
           RETURNING r.device_id, r.deleted, r.xmax = 0 AS inserted)
         SELECT count(*) FILTER (WHERE inserted) AS "inserted!",
           count(*) FILTER (WHERE inserted AND NOT deleted) AS "live!",
           COALESCE(array_agg(device_id) FILTER (WHERE NOT inserted), '{}') AS "completed!"
         FROM upserted"#,
        upload.upload_id,
        &upload.reseller_id,
        upload.uploaded_at,
        &upload.order_number,
        part.target.as_str(),
        part.target_kind == AccountKind::Msp,
        placement.knox_id,
        placement.virtual_upload,
        placement.via_msp_id,
        &ids as &[&str],
        &kinds,
        &models as &[&str],
        &secondaries,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(InsertedPart {
        inserted: row.inserted,
        live: row.live,
        completed: row.completed,
    })
}

/// The fast path of [`insert_registrations`] for the usual part (issue #12, the views'
/// catch-up after a big upload): its rows `COPY`ed into `reporting.registrations` under
/// a savepoint, at about half the per-row cost of the exact `INSERT … ON CONFLICT`.
/// The caller takes it only when no registration of the upload awaits it
/// ([`awaits_upload`]: a move projected first, which the exact statement completes);
/// here it is also given up (`None`) when a deletion of the upload was projected first
/// (its tombstones must insert those rows as deleted), for an upload time `COPY`'s text
/// cannot carry ([`reseller_kit::timestamp::copy_text`]), and, rolled back to the
/// savepoint, when a row is there already (a part applied again, or a device twice in the
/// part).
/// `Some` counts every row inserted and live, none completed.
///
/// # Errors
/// Database errors other than a unique violation.
pub async fn copy_registrations(
    conn: &mut PgConnection,
    part: &UploadedPart,
    placement: &Placement<'_>,
) -> Result<Option<InsertedPart>, sqlx::Error> {
    let upload = &part.upload;
    if upload_has_tombstones(conn, crate::SCHEMA, upload.upload_id).await? {
        return Ok(None);
    }
    // A time `COPY`'s text cannot carry (before the year 1) is left to the exact statement.
    let Some(uploaded_at) = reseller_kit::timestamp::copy_text(upload.uploaded_at) else {
        return Ok(None);
    };
    // Every column after the device's own three, the same for the whole part.
    let mut tail = Vec::new();
    for (i, field) in [
        upload.upload_id.to_string().as_str(),
        upload.reseller_id.as_str(),
        uploaded_at.as_str(),
        upload.order_number.as_str(),
        part.target.as_str(),
        if part.target_kind == AccountKind::Msp {
            "t"
        } else {
            "f"
        },
        part.target.as_str(),
        placement.knox_id,
        if placement.virtual_upload { "t" } else { "f" },
        placement.via_msp_id,
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            tail.push(b'\t');
        }
        push_copy_field(&mut tail, field);
    }
    let mut buf = Vec::with_capacity(part.devices.len() * 160);
    for device in &part.devices {
        push_copy_field(&mut buf, &device.device_id);
        buf.push(b'\t');
        buf.extend_from_slice(device.kind.as_i16().to_string().as_bytes());
        buf.push(b'\t');
        push_copy_field(&mut buf, &device.model);
        buf.push(b'\t');
        push_copy_field(&mut buf, &text_array_literal(&device.secondary_ids));
        buf.push(b'\t');
        buf.extend_from_slice(&tail);
        buf.push(b'\n');
    }
    let copied = copy_unless_conflict(
        conn,
        "COPY reporting.registrations \
           (device_id, id_kind, model, secondary_ids, upload_id, reseller_id, uploaded_at, \
            order_number, uploaded_to, uploaded_to_msp, holder_knox_id, placed_knox_id, \
            virtual, via_msp_id) \
         FROM STDIN",
        buf,
    )
    .await?;
    let n = part.devices.len() as i64;
    Ok(copied.then(|| InsertedPart {
        inserted: n,
        live: n,
        completed: Vec::new(),
    }))
}

/// `values` as a PostgreSQL array literal (`{"a","b"}`, `{}` for none), each element
/// quoted so that no character in it can end it (PostgreSQL's documentation, "Arrays",
/// "Array Value Input").
fn text_array_literal(values: &[String]) -> String {
    let mut literal = String::from("{");
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            literal.push(',');
        }
        literal.push('"');
        for c in value.chars() {
            if c == '"' || c == '\\' {
                literal.push('\\');
            }
            literal.push(c);
        }
        literal.push('"');
    }
    literal.push('}');
    literal
}

/// The counter CTEs `placements` and `counters` (`placement_counters.sql`): they apply
/// the deltas of the relation `deltas`, for [`apply_deltas`] and for
/// [`delete_registrations_ctes`] alike, so both change the counters one way.
const PLACEMENT_COUNTERS: &str = include_str!("placement_counters.sql");

/// Marks one part's registrations deleted (matched by device AND upload, only the
/// deleting reseller's, only those still live), records a tombstone for each (so an upload
/// projected later never shows it) and takes the shown ones out of DEVICES: CTEs for the
/// consumer's one statement. The CTE `removed` lists the devices that were shown (placed)
/// and are now removed.
///
/// The counters change as [`apply_deltas`] changes them ([`PLACEMENT_COUNTERS`]), with
/// one delta per placement the deleted devices were shown under: live −1 each, devices
/// unchanged (deleted devices stay in their uploads, so no placement empties). The
/// placement's kind is looked up in [`PLACEMENT_KINDS`], the table of
/// `domain::placement_kind`.
pub fn delete_registrations_ctes(part: &DeletedPart, params: &mut Params) -> String {
    let (ids, uploads): (Vec<&str>, Vec<Uuid>) = part
        .registrations
        .iter()
        .map(|(device_id, upload_id)| (device_id.as_str(), *upload_id))
        .unzip();
    let ids = params.bind(ids);
    let uploads = params.bind(uploads);
    let reseller = params.bind(part.reseller_id.as_str().to_owned());
    let (kind_msp, kind_virtual, kind): (Vec<bool>, Vec<bool>, Vec<&str>) = PLACEMENT_KINDS
        .iter()
        .map(|(uploaded_to_msp, virtual_upload, kind)| {
            (*uploaded_to_msp, *virtual_upload, kind.as_db())
        })
        .collect();
    let kind_msp = params.bind(kind_msp);
    let kind_virtual = params.bind(kind_virtual);
    let kind = params.bind(kind);
    format!(
        "{tombstones}, \
         marked AS ( \
           UPDATE reporting.registrations r SET deleted = true \
           FROM UNNEST({ids}::text[], {uploads}::uuid[]) AS d (device_id, upload_id) \
           WHERE r.device_id = d.device_id AND r.upload_id = d.upload_id \
             AND r.reseller_id = {reseller} AND NOT r.deleted \
           RETURNING r.device_id, r.upload_id, r.uploaded_at, r.order_number, r.placed_knox_id, \
             COALESCE(r.uploaded_to_msp, false) AS uploaded_to_msp, r.virtual, r.via_msp_id), \
         removed AS (SELECT * FROM marked WHERE placed_knox_id IS NOT NULL), \
         deltas AS ( \
           SELECT {reseller} AS reseller_id, m.upload_id, m.placed_knox_id AS knox_id, \
             min(k.kind) AS kind, min(m.uploaded_at) AS uploaded_at, \
             min(m.order_number) AS order_number, bool_or(m.virtual) AS virtual, \
             min(m.via_msp_id) AS via_msp_id, 0::bigint AS devices, -count(*) AS live \
           FROM removed m \
           JOIN UNNEST({kind_msp}::boolean[], {kind_virtual}::boolean[], {kind}::text[]) \
             AS k (uploaded_to_msp, virtual, kind) \
             ON k.uploaded_to_msp = m.uploaded_to_msp AND k.virtual = m.virtual \
           GROUP BY m.upload_id, m.placed_knox_id), \
         {PLACEMENT_COUNTERS}, \
         {history}",
        tombstones = tombstones_cte(&ids, &uploads),
        history = super::activity::deletion_part_ctes(
            part.reseller_id.as_str(),
            part.deletion_id,
            part.requested_at,
            &part.actor,
            &ids,
            &uploads,
            params,
        ),
    )
}

/// Applies placement deltas to the detail's uploads (`upload_placements`) and to the
/// rows' UPLOADS, DEVICES, LAST UPLOADED and virtual-upload counts, set-based: one
/// statement for any number of deltas ([`PLACEMENT_COUNTERS`]), plus two when a
/// placement may have emptied.
///
/// # Errors
/// Database errors.
pub async fn apply_deltas(
    conn: &mut PgConnection,
    deltas: Vec<PlacementDelta>,
) -> Result<(), sqlx::Error> {
    let deltas = merge(deltas);
    if deltas.is_empty() {
        return Ok(());
    }
    let n = deltas.len();
    let mut resellers = Vec::with_capacity(n);
    let mut uploads = Vec::with_capacity(n);
    let mut rows = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    let mut orders = Vec::with_capacity(n);
    let mut virtuals = Vec::with_capacity(n);
    let mut vias = Vec::with_capacity(n);
    let mut devices = Vec::with_capacity(n);
    let mut lives = Vec::with_capacity(n);
    for d in &deltas {
        resellers.push(d.upload.reseller_id.as_str());
        uploads.push(d.upload.upload_id);
        rows.push(d.knox_id.as_str());
        kinds.push(d.kind.as_db());
        times.push(d.upload.uploaded_at);
        orders.push(d.upload.order_number.as_str());
        virtuals.push(d.virtual_upload);
        vias.push(d.via_msp_id.as_str());
        devices.push(d.devices);
        lives.push(d.live);
    }
    // Compile-time text: the deltas as a relation, then the shared counter CTEs.
    sqlx::query(concat!(
        "WITH deltas AS ( \
           SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::text[], $4::text[], \
             $5::timestamptz[], $6::text[], $7::boolean[], $8::text[], $9::bigint[], \
             $10::bigint[]) \
           AS d (reseller_id, upload_id, knox_id, kind, uploaded_at, order_number, virtual, \
             via_msp_id, devices, live)),\n",
        include_str!("placement_counters.sql"),
        "\nSELECT"
    ))
    .bind(&resellers)
    .bind(&uploads)
    .bind(&rows)
    .bind(&kinds)
    .bind(&times)
    .bind(&orders)
    .bind(&virtuals)
    .bind(&vias)
    .bind(&devices)
    .bind(&lives)
    .execute(&mut *conn)
    .await?;

    // Devices leaving a placement (issue #4: moves and delinks) may empty it: the detail
    // no longer lists it, and LAST UPLOADED is the newest placement left under the row.
    // Deletions never get here: deleted devices stay in their uploads.
    if deltas.iter().any(|d| d.devices < 0) {
        let emptied = sqlx::query!(
            "DELETE FROM reporting.upload_placements p
             USING UNNEST($1::text[], $2::uuid[], $3::text[]) AS d (reseller_id, upload_id, knox_id)
             WHERE p.reseller_id = d.reseller_id AND p.upload_id = d.upload_id
               AND p.placed_knox_id = d.knox_id AND p.device_count = 0
             RETURNING p.reseller_id, p.placed_knox_id",
            &resellers as &[&str],
            &uploads,
            &rows as &[&str],
        )
        .fetch_all(&mut *conn)
        .await?;
        if !emptied.is_empty() {
            let (resellers, rows): (Vec<String>, Vec<String>) = emptied
                .into_iter()
                .map(|e| (e.reseller_id, e.placed_knox_id))
                .unzip();
            sqlx::query!(
                "UPDATE reporting.customer_rows c
                 SET last_uploaded_at = (SELECT max(p.uploaded_at) FROM reporting.upload_placements p
                                         WHERE p.reseller_id = c.reseller_id
                                           AND p.placed_knox_id = c.knox_id)
                 FROM (SELECT DISTINCT * FROM UNNEST($1::text[], $2::text[])) AS e (reseller_id, knox_id)
                 WHERE c.reseller_id = e.reseller_id AND c.knox_id = e.knox_id",
                &resellers,
                &rows,
            )
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use reseller_kit::device_id::DeviceIdKind;
    use sqlx::PgPool;
    use time::OffsetDateTime;
    use uuid::Uuid;

    use super::*;
    use crate::domain::UploadRef;
    use crate::domain::UploadedDevice;

    const MSP: &str = "980000001";

    fn part(upload: Uuid, devices: &[&str], uploaded_at: OffsetDateTime) -> UploadedPart {
        UploadedPart {
            upload: UploadRef {
                reseller_id: "acme".into(),
                upload_id: upload,
                uploaded_at,
                order_number: String::new(),
            },
            target: KnoxId::parse(MSP).unwrap(),
            target_kind: AccountKind::Msp,
            devices: devices
                .iter()
                .map(|id| UploadedDevice {
                    device_id: (*id).into(),
                    kind: DeviceIdKind::Imei,
                    model: String::new(),
                    secondary_ids: Vec::new(),
                })
                .collect(),
        }
    }

    /// The fast path takes a part only when nothing stands in its way, and otherwise
    /// leaves it to the exact statement with the transaction still usable: the row is
    /// there already, a device is twice in the part, the upload has a tombstone, or the
    /// time is one `COPY`'s text cannot carry.
    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn copy_registrations_takes_a_part_only_when_nothing_stands_in_its_way(pool: PgPool) {
        let placement = Placement {
            knox_id: MSP,
            kind: AccountKind::Msp,
            virtual_upload: false,
            via_msp_id: "",
        };
        let now = OffsetDateTime::now_utc();
        let mut tx = pool.begin().await.unwrap();
        let copied = |done: Option<InsertedPart>| done.map(|d| (d.inserted, d.live, d.completed));
        let fresh = part(Uuid::now_v7(), &["350000000049508", "350000000049516"], now);
        let taken = copy_registrations(&mut tx, &fresh, &placement)
            .await
            .unwrap();
        assert_eq!(copied(taken), Some((2, 2, Vec::new())));

        let again = copy_registrations(&mut tx, &fresh, &placement)
            .await
            .unwrap();
        assert_eq!(copied(again), None, "a part applied again was copied");

        let twice = part(Uuid::now_v7(), &["350000000049524", "350000000049524"], now);
        let taken = copy_registrations(&mut tx, &twice, &placement)
            .await
            .unwrap();
        assert_eq!(copied(taken), None, "a device twice in a part was copied");

        let tombstoned = part(Uuid::now_v7(), &["350000000049532"], now);
        sqlx::query("INSERT INTO reporting.deleted_registrations VALUES ($1, $2)")
            .bind("350000000049540")
            .bind(tombstoned.upload.upload_id)
            .execute(&mut *tx)
            .await
            .unwrap();
        let taken = copy_registrations(&mut tx, &tombstoned, &placement)
            .await
            .unwrap();
        assert_eq!(copied(taken), None, "an upload with a tombstone was copied");

        let year_zero = time::macros::datetime!(0000-06-01 00:00 UTC);
        let ancient = part(Uuid::now_v7(), &["350000000049557"], year_zero);
        let taken = copy_registrations(&mut tx, &ancient, &placement)
            .await
            .unwrap();
        assert_eq!(copied(taken), None, "a time COPY cannot carry was copied");

        // Only the fresh part's rows went in, and the transaction commits.
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM reporting.registrations")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(rows, 2);
        tx.commit().await.unwrap();
    }
}
