//! What the MSP portal and the customer portal share (DOMAIN.md "What each portal shows",
//! "Deleting devices"): how their projections follow the device events
//! ([`PortalProjection`]), and a device as they show it: both answer
//! `reseller.v1.PortalDevice`, msp-link-service from its device view, customer-service
//! from its portal table, and convert it here once.

use reseller_proto::v1::{self as pb, event::Payload};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::events::{DeletedColumns, ReceivedEvent, portal_receipt_cte, tombstones_cte};
use crate::inbox::{ApplyError, Change, EventHandler};
use crate::one_statement::{OneStatement, Params};
use crate::timestamp;

/// A portal's projection of the device events, applied by its consumer. What differs
/// between the portals is what they store and which registrations they show; the rule
/// they share is here: uploads and moves are applied in the consumer's transaction, a
/// deletion part as one statement that removes the registrations, remembers them (so an
/// upload event arriving later never shows them again, see [`tombstones_cte`]) and
/// answers with the portal's receipt ([`portal_receipt_cte`]) in the same round trip.
/// Every other event is ignored.
///
/// Every `PortalProjection` is the [`EventHandler`] of its consumer.
pub trait PortalProjection: Send + Sync + 'static {
    /// The portal whose receipts the projection writes (`PortalDeletionApplied.portal`).
    const PORTAL: pb::Portal;

    /// How a `devices_uploaded` part is applied (in the consumer's transaction, see
    /// [`Change::in_transaction`]); [`Change::Ignored`] when the portal never shows
    /// uploads to that kind of account.
    fn uploaded(&self, event: pb::DevicesUploaded) -> Change;

    /// How an `msp_devices_moved` part is applied (in the consumer's transaction).
    fn moved(&self, event: pb::MspDevicesMoved) -> Change;

    /// The CTEs that remove a deletion part's registrations from the projection, given
    /// the placeholders of their device IDs (`text[]`) and upload IDs (`uuid[]`), to be
    /// read with `UNNEST`. The last is `removed AS (…)`: its `device_id` column (text)
    /// lists the devices the portal showed, the ones its receipt names.
    fn removing(&self, device_ids: &str, upload_ids: &str) -> String;
}

impl<P: PortalProjection> EventHandler for P {
    fn change(&self, event: ReceivedEvent, params: &mut Params) -> Result<Change, ApplyError> {
        Ok(match event.payload {
            Payload::DevicesUploaded(e) => self.uploaded(e),
            Payload::MspDevicesMoved(e) => self.moved(e),
            Payload::DevicesDeleted(e) => Change::OneStatement(deletion(self, &e, params)?),
            _ => Change::Ignored,
        })
    }
}

/// The one statement applying a deletion part to `portal`'s projection: tombstones,
/// the portal's removal, and the receipt for what it removed.
fn deletion<P: PortalProjection>(
    portal: &P,
    e: &pb::DevicesDeleted,
    params: &mut Params,
) -> Result<OneStatement, ApplyError> {
    let deleted = DeletedColumns::of(e)?;
    let ids = params.bind(deleted.device_ids);
    let uploads = params.bind(deleted.upload_ids);
    let ctes = format!(
        "{tombstones}, {removing}, {receipt}",
        tombstones = tombstones_cte(&ids, &uploads),
        removing = portal.removing(&ids, &uploads),
        receipt = portal_receipt_cte(e, P::PORTAL, "removed", params),
    );
    Ok(OneStatement {
        ctes,
        emits: Some("receipt"),
    })
}

/// One registration on a portal page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalDevice {
    /// The device ID (canonical).
    pub device_id: String,
    /// Its `reseller.v1.DeviceIdKind`.
    pub id_kind: i16,
    /// Its model ("" when none).
    pub model: String,
    /// The reseller that uploaded it.
    pub reseller_id: String,
    /// The upload.
    pub upload_id: Uuid,
    /// The account holding it now (an MSP itself for its pool).
    pub holder_knox_id: String,
    /// The MSP that moved it to its holder, when one did.
    pub moved_by_msp: Option<String>,
    /// When it was uploaded.
    pub uploaded_at: OffsetDateTime,
}

impl From<PortalDevice> for pb::PortalDevice {
    fn from(d: PortalDevice) -> Self {
        pb::PortalDevice {
            device_id: d.device_id,
            id_kind: i32::from(d.id_kind),
            model: d.model,
            reseller_id: d.reseller_id,
            upload_id: d.upload_id.to_string(),
            holder_knox_id: d.holder_knox_id,
            moved_by_msp: d.moved_by_msp.is_some(),
            msp_id: d.moved_by_msp.unwrap_or_default(),
            uploaded_at: Some(timestamp::to_proto(d.uploaded_at)),
        }
    }
}

/// Whether a deletion of `upload_id` was projected before its upload: any tombstone of it
/// in `schema`'s `deleted_registrations` (each projection keeps its own, indexed by
/// upload: the two portals and reporting's views). A projection's upload fast path
/// (`COPY`) is taken only when there is none, so that a device deleted first never shows.
///
/// # Errors
/// Database errors.
pub async fn upload_has_tombstones(
    conn: &mut sqlx::PgConnection,
    schema: &'static str,
    upload_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        crate::sql::Schema::new(schema).sql(
            "SELECT EXISTS (SELECT 1 FROM {schema}.deleted_registrations WHERE upload_id = $1)",
        ),
    )
    .bind(upload_id)
    .fetch_one(conn)
    .await
}

/// Appends an upload part's device to a `COPY` text line in the portals' column order
/// `device_id, upload_id, id_kind, model` (no tab after it): the middle of a line of a
/// portal's upload fast path, `upload` being the part's upload ID as text.
pub fn push_uploaded_device(buf: &mut Vec<u8>, device: &pb::UploadedDevice, upload: &str) {
    crate::sql::push_copy_field(buf, &device.device_id);
    buf.push(b'\t');
    buf.extend_from_slice(upload.as_bytes());
    buf.push(b'\t');
    buf.extend_from_slice((device.id_kind as i16).to_string().as_bytes());
    buf.push(b'\t');
    crate::sql::push_copy_field(buf, &device.model);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(moved_by_msp: Option<&str>) -> PortalDevice {
        PortalDevice {
            device_id: "R58M-1".into(),
            id_kind: 3,
            model: "Galaxy".into(),
            reseller_id: "acme".into(),
            upload_id: Uuid::nil(),
            holder_knox_id: "123456".into(),
            moved_by_msp: moved_by_msp.map(str::to_owned),
            uploaded_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_move_by_an_msp_is_flagged_and_names_the_msp() {
        let moved = pb::PortalDevice::from(device(Some("980000001")));
        assert!(moved.moved_by_msp);
        assert_eq!(moved.msp_id, "980000001");
        assert_eq!(moved.upload_id, Uuid::nil().to_string());
        let uploaded = pb::PortalDevice::from(device(None));
        assert!(!uploaded.moved_by_msp);
        assert_eq!(uploaded.msp_id, "");
    }
}
