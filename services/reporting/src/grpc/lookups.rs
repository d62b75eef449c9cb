//! `FindDevices` and `GetDeviceHistory` (DOMAIN.md "Finding devices, history and the
//! activity log"): identifiers normalised by the upload's rule (kit's `lookup_key`), a
//! device another reseller uploaded answering exactly as an unknown one.

use reseller_kit::device_id::{echo_id, lookup_key};
use reseller_kit::ids::ResellerId;
use reseller_kit::timestamp;
use reseller_kit::{ApiError, Reason, Refusal};
use reseller_proto::v1 as pb;

use crate::domain::{HistoryEntry, HistoryKind, assemble};
use crate::postgres::{Located, Repository};

/// Most identifiers one `FindDevices` names (CONTRACT.md).
pub const MAX_FIND_IDS: usize = 1000;

/// Where each named device is, in request order.
///
/// # Errors
/// `INVALID_ARGUMENT` on `device_ids` when it names none or more than
/// [`MAX_FIND_IDS`]; `UNAVAILABLE` when the database is.
pub async fn find_devices(
    repo: &Repository,
    reseller: &ResellerId,
    device_ids: &[String],
) -> Result<pb::FindDevicesResponse, ApiError> {
    if device_ids.is_empty() || device_ids.len() > MAX_FIND_IDS {
        return Err(ApiError::invalid(
            "device_ids",
            format!(
                "must name 1 to {MAX_FIND_IDS} identifiers, got {}",
                device_ids.len()
            ),
        ));
    }
    let keys: Vec<Option<String>> = device_ids.iter().map(|id| lookup_key(id)).collect();
    // Only identifiers a device can have are looked up; `asked[i]` is the request index
    // of the i-th one.
    let (asked, lookups): (Vec<usize>, Vec<&str>) = keys
        .iter()
        .enumerate()
        .filter_map(|(i, k)| k.as_deref().map(|k| (i, k)))
        .unzip();
    let found = if lookups.is_empty() {
        Vec::new()
    } else {
        repo.find_devices(reseller.as_str(), &lookups).await?
    };
    let mut devices: Vec<pb::DeviceLocation> = device_ids
        .iter()
        .map(|id| pb::DeviceLocation {
            device_id: echo_id(id),
            ..Default::default()
        })
        .collect();
    for located in found {
        let index = asked[located.index];
        let asked_as = std::mem::take(&mut devices[index].device_id);
        devices[index] = location(asked_as, located);
    }
    Ok(pb::FindDevicesResponse { devices })
}

fn location(device_id: String, l: Located) -> pb::DeviceLocation {
    // The MSP to name: the one that moved it, else the MSP of its virtual upload, else
    // the MSP it was uploaded to (its pool).
    let msp_id = [&l.moved_by_msp, &l.via_msp_id]
        .into_iter()
        .find(|m| !m.is_empty())
        .cloned()
        .or(l.uploaded_to_msp)
        .unwrap_or_default();
    pb::DeviceLocation {
        device_id,
        found: true,
        id_kind: i32::from(l.id_kind),
        model: l.model,
        secondary_ids: l.secondary_ids,
        placed_under_knox_id: l.placed_knox_id.unwrap_or_default(),
        holder_knox_id: l.holder_knox_id,
        moved_by_msp: !l.moved_by_msp.is_empty(),
        msp_id,
        upload_id: l.upload_id.to_string(),
        order_number: l.order_number,
        uploaded_at: Some(timestamp::to_proto(l.uploaded_at)),
        r#virtual: l.virtual_upload,
        deleted: l.deleted,
        deletion_id: l.deletion_id.map(|d| d.to_string()).unwrap_or_default(),
        deleted_at: timestamp::opt_to_proto(l.deleted_at),
        primary_device_id: l.device_id,
    }
}

/// The history of the device `device_id` names (any of its identifiers), oldest first.
///
/// # Errors
/// `INVALID_ARGUMENT` on `device_id` when no device can have it; `NOT_FOUND` when the
/// reseller has no such device; `UNAVAILABLE` when the database is down.
pub async fn device_history(
    repo: &Repository,
    reseller: &ResellerId,
    device_id: &str,
) -> Result<pb::DeviceHistory, ApiError> {
    let Some(key) = lookup_key(device_id) else {
        return Err(ApiError::invalid(
            "device_id",
            format!(
                "{} is not an IMEI, MEID or serial number",
                echo_id(device_id)
            ),
        ));
    };
    let not_found = || -> ApiError {
        Refusal::new(
            Reason::DeviceNotFound,
            format!("device {key} not found: no device you uploaded has this identifier"),
        )
        .with("device_id", &key)
        .into()
    };
    let primary = repo
        .find_devices(reseller.as_str(), &[key.as_str()])
        .await?
        .into_iter()
        .next()
        .ok_or_else(not_found)?
        .device_id;
    let facts = repo.device_facts(reseller.as_str(), &primary).await?;
    if facts.registrations.is_empty() {
        return Err(not_found());
    }
    Ok(pb::DeviceHistory {
        device_id: primary,
        entries: assemble(&facts).into_iter().map(entry).collect(),
    })
}

fn entry(e: HistoryEntry) -> pb::DeviceHistoryEntry {
    pb::DeviceHistoryEntry {
        occurred_at: Some(timestamp::to_proto(e.occurred_at)),
        kind: match e.kind {
            HistoryKind::Uploaded => pb::DeviceEventKind::Uploaded,
            HistoryKind::MovedByMsp => pb::DeviceEventKind::MovedByMsp,
            HistoryKind::Delinked => pb::DeviceEventKind::Delinked,
            HistoryKind::Deleted => pb::DeviceEventKind::Deleted,
        } as i32,
        actor: e.actor,
        upload_id: e.upload_id.to_string(),
        deletion_id: e.deletion_id.map(|d| d.to_string()).unwrap_or_default(),
        from_knox_id: e.from_knox_id,
        to_knox_id: e.to_knox_id,
    }
}
