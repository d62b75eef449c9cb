//! msp-link-service's view of devices, fed by device events, and its deletion receipts.
//!
//! Every live registration is kept with the account it was uploaded to and the account
//! holding it now, and with its secondary identifiers (IMEI 2, serial), so a move finds
//! it by any of them. msp-link's own moves update the holder in the command's transaction;
//! applying its `msp_devices_moved` events again here changes nothing (the later `seq`
//! wins), but lets the view be rebuilt from the stream in any order: a move that
//! arrives before its upload leaves a stub (`uploaded_to` empty) the upload completes. A deletion removes it (remembering it, so a late upload event never
//! brings it back) and is answered with a `portal_deletion_applied` receipt for the MSP
//! portal in the same statement: REMOVED when some MSP portal showed it, else
//! NOT_APPLICABLE.

use reseller_kit::device_id::lookup_key;
use reseller_kit::events::{MovedColumns, uuid_field};
use reseller_kit::inbox::{ApplyError, Change};
use reseller_kit::portal::{PortalProjection, push_uploaded_device, upload_has_tombstones};
use reseller_kit::sql::{copy_unless_conflict, push_copy_field};
use reseller_kit::timestamp;
use reseller_proto::v1 as pb;
use sqlx::PgConnection;

/// The MSP portal consumer's handler.
#[derive(Debug, Clone, Default)]
pub struct MspPortal;

impl PortalProjection for MspPortal {
    const PORTAL: pb::Portal = pb::Portal::Msp;

    /// Every upload, to an MSP or to a customer: the view keeps every live registration,
    /// since a customer's devices show in the portal of an MSP that links it.
    fn uploaded(&self, e: pb::DevicesUploaded) -> Change {
        Change::in_transaction(move |tx| Box::pin(async move { uploaded(tx, &e).await }))
    }

    fn moved(&self, e: pb::MspDevicesMoved) -> Change {
        Change::in_transaction(move |tx| Box::pin(async move { moved(tx, &e).await }))
    }

    /// Every registration of the view is removed (their secondary identifiers go with
    /// them, by the foreign key's cascade); the receipt names those shown in an MSP
    /// portal: in an MSP's pool, or held by a customer an MSP links.
    fn removing(&self, ids: &str, uploads: &str) -> String {
        format!(
            "deleted AS ( \
               DELETE FROM msp.devices m USING UNNEST({ids}::text[], {uploads}::uuid[]) AS d (device_id, upload_id) \
               WHERE m.device_id = d.device_id AND m.upload_id = d.upload_id \
               RETURNING m.device_id, ((m.uploaded_to_msp AND m.holder_knox_id = m.uploaded_to) OR EXISTS \
                 (SELECT 1 FROM msp.links l WHERE l.customer_knox_id = m.holder_knox_id)) AS shown), \
             removed AS (SELECT device_id FROM deleted WHERE shown)"
        )
    }
}

async fn uploaded(tx: &mut PgConnection, e: &pb::DevicesUploaded) -> Result<(), ApplyError> {
    let upload_id = uuid_field("upload_id", &e.upload_id)?;
    if !copy_uploaded(tx, e, upload_id).await? {
        insert_uploaded(tx, e, upload_id).await?;
    }
    secondary_ids(tx, upload_id, e).await
}

/// The fast path of an upload part: its rows `COPY`ed into `msp.devices` under a
/// savepoint, at about half the per-row cost of [`insert_uploaded`] (the views' catch-up
/// after a big upload, issue #12). Taken only when no deletion of the upload was
/// projected first (its tombstones must keep those devices out), and given up (`false`,
/// rolled back) when a row is there already: a move projected before the upload, or a
/// part applied again. Then [`insert_uploaded`] decides.
///
/// # Errors
/// Database errors other than a unique violation.
async fn copy_uploaded(
    tx: &mut PgConnection,
    e: &pb::DevicesUploaded,
    upload_id: uuid::Uuid,
) -> Result<bool, ApplyError> {
    if upload_has_tombstones(tx, crate::SCHEMA, upload_id).await? {
        return Ok(false);
    }
    // A time `COPY`'s text cannot carry (before the year 1) is left to the exact statement.
    let Some(uploaded_at) = timestamp::copy_text(timestamp::from_proto(e.uploaded_at.as_ref()))
    else {
        return Ok(false);
    };
    // Every column after the model is the part's: reseller, order number, time, the
    // account uploaded to, whether it is an MSP, and the holder (that account).
    let mut tail = vec![b'\t'];
    push_copy_field(&mut tail, &e.reseller_id);
    tail.push(b'\t');
    push_copy_field(&mut tail, &e.order_number);
    tail.push(b'\t');
    tail.extend_from_slice(uploaded_at.as_bytes());
    tail.push(b'\t');
    push_copy_field(&mut tail, &e.target_knox_id);
    tail.extend_from_slice(if e.target_kind == pb::AccountKind::Msp as i32 {
        b"\tt\t"
    } else {
        b"\tf\t"
    });
    push_copy_field(&mut tail, &e.target_knox_id);
    tail.push(b'\n');
    let upload = upload_id.to_string();
    let mut buf = Vec::with_capacity(e.devices.len() * 128);
    for d in &e.devices {
        push_uploaded_device(&mut buf, d, &upload);
        buf.extend_from_slice(&tail);
    }
    Ok(copy_unless_conflict(
        tx,
        "COPY msp.devices (device_id, upload_id, id_kind, model, reseller_id, order_number, \
         uploaded_at, uploaded_to, uploaded_to_msp, holder_knox_id) FROM STDIN",
        buf,
    )
    .await?)
}

/// The exact statement of an upload part: skips a device deleted first (tombstone), and
/// completes a registration a move projected first with the upload's facts.
async fn insert_uploaded(
    tx: &mut PgConnection,
    e: &pb::DevicesUploaded,
    upload_id: uuid::Uuid,
) -> Result<(), ApplyError> {
    let ids: Vec<&str> = e.devices.iter().map(|d| d.device_id.as_str()).collect();
    let kinds: Vec<i16> = e.devices.iter().map(|d| d.id_kind as i16).collect();
    let models: Vec<&str> = e.devices.iter().map(|d| d.model.as_str()).collect();
    sqlx::query!(
        "INSERT INTO msp.devices (device_id, upload_id, reseller_id, id_kind, model, \
             order_number, uploaded_at, uploaded_to, uploaded_to_msp, holder_knox_id) \
         SELECT d.device_id, $1, $2, d.id_kind, d.model, $3, $4, $5, $6, $5 \
         FROM UNNEST($7::text[], $8::smallint[], $9::text[]) AS d (device_id, id_kind, model) \
         WHERE NOT EXISTS (SELECT 1 FROM msp.deleted_registrations x \
                           WHERE x.device_id = d.device_id AND x.upload_id = $1) \
         ON CONFLICT (device_id, upload_id) DO UPDATE SET uploaded_to = EXCLUDED.uploaded_to, \
             uploaded_to_msp = EXCLUDED.uploaded_to_msp \
         WHERE msp.devices.uploaded_to = ''",
        upload_id,
        e.reseller_id,
        e.order_number,
        timestamp::from_proto(e.uploaded_at.as_ref()),
        e.target_knox_id,
        e.target_kind == pb::AccountKind::Msp as i32,
        &ids as &[&str],
        &kinds,
        &models as &[&str],
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Stores the secondary identifiers of an upload part's devices, for the registrations
/// stored (not those a deletion overtook). Each is canonicalised again by the lookup rule
/// (device-service sends them canonical): one that is not canonical could never be
/// found, and one holding a NUL would fail this event forever.
async fn secondary_ids(
    tx: &mut PgConnection,
    upload_id: uuid::Uuid,
    e: &pb::DevicesUploaded,
) -> Result<(), ApplyError> {
    let (devices, secondaries): (Vec<&str>, Vec<String>) = e
        .devices
        .iter()
        .flat_map(|d| {
            d.secondary_ids
                .iter()
                .filter_map(|s| lookup_key(s))
                .map(move |s| (d.device_id.as_str(), s))
        })
        .unzip();
    if devices.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "INSERT INTO msp.secondary_ids (secondary_id, device_id, upload_id) \
         SELECT s.secondary_id, s.device_id, $1 \
         FROM UNNEST($2::text[], $3::text[]) AS s (device_id, secondary_id) \
         WHERE EXISTS (SELECT 1 FROM msp.devices d \
                       WHERE d.device_id = s.device_id AND d.upload_id = $1) \
         ON CONFLICT DO NOTHING",
        upload_id,
        &devices as &[&str],
        &secondaries,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn moved(tx: &mut PgConnection, e: &pb::MspDevicesMoved) -> Result<(), ApplyError> {
    let moved = MovedColumns::of(e)?;
    // One statement for the whole event; the later move (by `seq`) wins.
    sqlx::query!(
        "INSERT INTO msp.devices (device_id, upload_id, reseller_id, id_kind, model, \
             order_number, uploaded_at, uploaded_to, uploaded_to_msp, holder_knox_id, \
             moved_by_msp, move_seq) \
         SELECT d.device_id, d.upload_id, d.reseller_id, d.id_kind, d.model, d.order_number, \
                d.uploaded_at, '', false, $1, $2, $3 \
         FROM UNNEST($4::text[], $5::uuid[], $6::smallint[], $7::text[], $8::text[], \
                     $9::timestamptz[], $10::text[]) \
             AS d (device_id, upload_id, id_kind, model, reseller_id, uploaded_at, order_number) \
         WHERE NOT EXISTS (SELECT 1 FROM msp.deleted_registrations x \
                           WHERE x.device_id = d.device_id AND x.upload_id = d.upload_id) \
         ON CONFLICT (device_id, upload_id) DO UPDATE SET holder_knox_id = EXCLUDED.holder_knox_id, \
             moved_by_msp = EXCLUDED.moved_by_msp, move_seq = EXCLUDED.move_seq \
         WHERE msp.devices.move_seq < EXCLUDED.move_seq",
        e.to_customer_knox_id,
        e.msp_id,
        e.seq,
        &moved.device_ids,
        &moved.upload_ids,
        &moved.id_kinds,
        &moved.models,
        &moved.reseller_ids,
        &moved.uploaded_at,
        &moved.order_numbers,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use reseller_kit::inbox::ConsumerSpec;
    use reseller_kit::test_events::{
        self, CUSTOMER, DEVICE, MODEL, MSP, ORDER_NUMBER, deleted, moved, uploaded_to_msp,
    };
    use sqlx::PgPool;
    use uuid::Uuid;

    use super::MspPortal;

    fn spec() -> ConsumerSpec {
        ConsumerSpec {
            name: "msp-portal".into(),
            schema: crate::SCHEMA,
            filter_subject: reseller_kit::subjects::ALL_EVENTS.into(),
        }
    }

    async fn apply(pool: &PgPool, payload: reseller_proto::v1::event::Payload) {
        test_events::apply(spec(), pool, MspPortal, payload).await;
    }

    /// The registration of `upload`: model, order number, uploaded to, to an MSP, holder,
    /// moved by, and its secondary identifiers.
    async fn row(
        pool: &PgPool,
        upload: Uuid,
    ) -> Option<(String, String, String, bool, String, String, i64)> {
        sqlx::query_as(
            "SELECT model, order_number, uploaded_to, uploaded_to_msp, holder_knox_id, moved_by_msp, \
                    (SELECT count(*) FROM msp.secondary_ids s \
                     WHERE s.device_id = d.device_id AND s.upload_id = d.upload_id) \
             FROM msp.devices d WHERE upload_id = $1",
        )
        .bind(upload)
        .fetch_optional(pool)
        .await
        .unwrap()
    }

    /// Two replicas apply an upload part (its row `COPY`ed) and the device's deletion at
    /// the same time: the deleted device must not stay.
    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn an_upload_copied_beside_its_deletion_never_shows_the_device(pool: PgPool) {
        let upload = Uuid::now_v7();
        test_events::race_upload_with_deletion(
            spec(),
            &pool,
            MspPortal,
            uploaded_to_msp(upload),
            deleted(upload, DEVICE),
        )
        .await;
        assert_eq!(row(&pool, upload).await, None, "a deleted device is stored");
    }

    /// An upload part is `COPY`ed when nothing stands in its way, and otherwise the exact
    /// statement applies it: after a move projected first (completed with the upload's
    /// facts, the move's holder kept), again (a part applied twice), and after the
    /// device's deletion (never stored).
    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn an_upload_part_is_applied_whatever_was_projected_before_it(pool: PgPool) {
        let upload = Uuid::now_v7();
        apply(&pool, uploaded_to_msp(upload)).await;
        test_events::assert_upload_time_stored(&pool, "msp.devices", upload).await;
        let stored = (
            MODEL.to_owned(),
            ORDER_NUMBER.to_owned(),
            MSP.to_owned(),
            true,
            MSP.to_owned(),
            String::new(),
            1,
        );
        assert_eq!(row(&pool, upload).await, Some(stored.clone()));
        // The same part again, as another event: its row is there, nothing changes.
        apply(&pool, uploaded_to_msp(upload)).await;
        assert_eq!(row(&pool, upload).await, Some(stored));

        // A move projected before its upload: the upload completes the move's row.
        let moved_first = Uuid::now_v7();
        apply(&pool, moved(moved_first)).await;
        apply(&pool, uploaded_to_msp(moved_first)).await;
        let (_, _, uploaded_to, to_msp, holder, moved_by, _) = row(&pool, moved_first)
            .await
            .expect("the moved registration");
        assert_eq!(
            (
                uploaded_to.as_str(),
                to_msp,
                holder.as_str(),
                moved_by.as_str()
            ),
            (MSP, true, CUSTOMER, MSP),
            "the upload did not complete the move projected before it"
        );

        // A deletion projected before its upload: the device is never stored.
        let deleted_first = Uuid::now_v7();
        apply(&pool, deleted(deleted_first, DEVICE)).await;
        apply(&pool, uploaded_to_msp(deleted_first)).await;
        assert_eq!(row(&pool, deleted_first).await, None);
    }
}
