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
use reseller_kit::portal::PortalProjection;
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
    secondary_ids(tx, upload_id, e).await
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
