//! The projection: applies events to the reseller views. Each event is checked here, then
//! written by `postgres` inside the consumer's transaction.
//!
//! Content that can never apply (a malformed ID, an unspecified enum) is poison and goes
//! to the dead-letter subject. A reference update for a customer that is not projected
//! yet can only mean its `customer_added` is still being retried (customer-service
//! publishes the one only after the other), so it is retried too.
//!
//! Device events are applied set-based, a part (at most 1,000 devices) per statement:
//! an upload part inserts its registrations, places them (`domain::place`) and adds the
//! placement's delta to the counters; a deletion part marks its registrations deleted,
//! takes them out of DEVICES (UPLOADS keeps them) and enqueues the reseller portal's
//! `portal_deletion_applied` receipt in the same transaction. Device events and
//! customer-service's events are not ordered relative to each other: an upload may be
//! projected before the reseller's `customer_added` (its counters wait in an unlisted
//! row) and a deletion before its upload (a tombstone keeps the device from showing).

use reseller_kit::device_id::{DeviceId, DeviceIdKind};
use reseller_kit::events::{ReceivedEvent, new_event};
use reseller_kit::ids::{KnoxId, ResellerId};
use reseller_kit::inbox::{ApplyError, EventHandler};
use reseller_kit::timestamp;
use reseller_proto::v1::{self as pb, event::Payload};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::convert;
use crate::domain::{
    Account, AccountKind, AddedCustomer, DeletedPart, PlacementFacts, UploadRef, UploadedDevice,
    UploadedPart, place, transfer,
};
use crate::postgres::{self, OUTBOX};

/// The reseller views' event handler (the `reporting` consumer's).
#[derive(Debug, Clone, Default)]
pub struct Projection;

impl EventHandler for Projection {
    async fn apply(&self, tx: &mut PgConnection, event: &ReceivedEvent) -> Result<(), ApplyError> {
        match &event.payload {
            Payload::AccountRegistered(e) => {
                let account = account(&e.knox_id, e.kind, &e.company_name, &e.country)?;
                postgres::upsert_account(tx, &account).await?;
            }
            Payload::CustomerAdded(e) => {
                let customer = added_customer(e)?;
                postgres::add_customer(tx, &customer).await?;
            }
            Payload::CustomerReferenceUpdated(e) => {
                let reseller_id = reseller_id(&e.reseller_id)?;
                let knox_id = knox_id("knox_id", &e.knox_id)?;
                let reference = text("internal_reference", &e.internal_reference, false)?;
                if !postgres::update_reference(tx, &reseller_id, &knox_id, &reference).await? {
                    return Err(ApplyError::Failed(anyhow::anyhow!(
                        "customer {knox_id} of reseller {reseller_id} is not projected yet \
                         (its customer_added has not been applied)"
                    )));
                }
            }
            Payload::CustomerStatusChanged(e) => {
                let reseller_id = reseller_id(&e.reseller_id)?;
                let knox_id = knox_id("knox_id", &e.knox_id)?;
                let status = convert::status_from_proto(e.status).map_err(ApplyError::Poison)?;
                postgres::change_status(tx, &reseller_id, &knox_id, status, event.occurred_at)
                    .await?;
            }
            Payload::DevicesUploaded(e) => uploaded(tx, &uploaded_part(e)?).await?,
            Payload::DevicesDeleted(e) => deleted(tx, &deleted_part(e)?).await?,
            // MSP links and moves place devices by rules 2 and 3 (issue #4).
            Payload::MspCustomerLinked(_)
            | Payload::MspManagementModeChanged(_)
            | Payload::MspCustomerDelinked(_)
            | Payload::MspDevicesMoved(_)
            | Payload::PortalDeletionApplied(_) => {}
        }
        Ok(())
    }
}

/// Registers an upload part and counts it under its placement.
async fn uploaded(tx: &mut PgConnection, part: &UploadedPart) -> Result<(), ApplyError> {
    // Not moved yet: the holder is the account uploaded to, so rule 1 applies whatever
    // that account's links are.
    let placement = place(&PlacementFacts {
        uploaded_to: part.target.as_str(),
        uploaded_to_msp: part.target_kind == AccountKind::Msp,
        holder: part.target.as_str(),
        holder_msp: None,
    });
    let (inserted, live) = postgres::insert_registrations(tx, part, &placement).await?;
    let deltas = transfer(&part.upload, None, Some(&placement), inserted, live);
    postgres::apply_deltas(tx, deltas).await?;
    Ok(())
}

/// Removes a deletion part's devices and answers with the reseller portal's receipt:
/// REMOVED when the portal showed at least one of them, else NOT_APPLICABLE.
async fn deleted(tx: &mut PgConnection, part: &DeletedPart) -> Result<(), ApplyError> {
    let (deltas, removed) = postgres::delete_registrations(tx, part).await?;
    postgres::apply_deltas(tx, deltas).await?;
    let state = if removed.is_empty() {
        pb::PortalState::NotApplicable
    } else {
        pb::PortalState::Removed
    };
    let receipt = new_event(
        Payload::PortalDeletionApplied(pb::PortalDeletionApplied {
            deletion_id: part.deletion_id.to_string(),
            portal: pb::Portal::Reseller as i32,
            state: state as i32,
            part: part.part,
            part_count: part.part_count,
            removed_device_ids: removed,
        }),
        OffsetDateTime::now_utc(),
    );
    OUTBOX.enqueue(tx, &[receipt]).await?;
    Ok(())
}

fn uploaded_part(e: &pb::DevicesUploaded) -> Result<UploadedPart, ApplyError> {
    let devices = if e.devices.is_empty() {
        // A producer that sends only the IDs: infer each kind, as an upload would.
        e.device_ids
            .iter()
            .map(|id| uploaded_device(id, 0, ""))
            .collect::<Result<_, _>>()?
    } else {
        e.devices
            .iter()
            .map(|d| uploaded_device(&d.device_id, d.id_kind, &d.model))
            .collect::<Result<_, _>>()?
    };
    Ok(UploadedPart {
        upload: UploadRef {
            reseller_id: reseller_id(&e.reseller_id)?.as_str().to_owned(),
            upload_id: uuid("upload_id", &e.upload_id)?,
            uploaded_at: timestamp::from_proto(e.uploaded_at.as_ref()),
            order_number: e.order_number.clone(),
        },
        target: knox_id("target_knox_id", &e.target_knox_id)?,
        target_kind: convert::kind_from_proto(e.target_kind)
            .map_err(|m| ApplyError::Poison(format!("target_{m}")))?,
        devices,
    })
}

/// A device as the event names it; a kind left unspecified is inferred from the ID.
fn uploaded_device(device_id: &str, kind: i32, model: &str) -> Result<UploadedDevice, ApplyError> {
    let given = i16::try_from(kind).ok().and_then(DeviceIdKind::from_i16);
    let (device_id, kind) = match given {
        Some(kind) if !device_id.is_empty() => (device_id.to_owned(), kind),
        _ => {
            let parsed = DeviceId::parse(device_id, None)
                .map_err(|m| ApplyError::Poison(format!("device_id {device_id:?} {m}")))?;
            let kind = parsed.kind();
            (parsed.into_string(), kind)
        }
    };
    Ok(UploadedDevice {
        device_id,
        kind,
        model: model.to_owned(),
    })
}

fn deleted_part(e: &pb::DevicesDeleted) -> Result<DeletedPart, ApplyError> {
    if e.devices.is_empty() && !e.device_ids.is_empty() {
        // Without the upload of each device, the registration cannot be told apart from
        // an earlier, already deleted one of the same device.
        return Err(ApplyError::Poison(
            "devices_deleted names device_ids without their registrations (devices)".into(),
        ));
    }
    Ok(DeletedPart {
        deletion_id: uuid("deletion_id", &e.deletion_id)?,
        reseller_id: reseller_id(&e.reseller_id)?,
        part: e.part,
        part_count: e.part_count,
        registrations: e
            .devices
            .iter()
            .map(|d| Ok((d.device_id.clone(), uuid("upload_id", &d.upload_id)?)))
            .collect::<Result<_, ApplyError>>()?,
    })
}

fn uuid(field: &str, value: &str) -> Result<Uuid, ApplyError> {
    Uuid::parse_str(value)
        .map_err(|_| ApplyError::Poison(format!("{field} {value:?} is not a UUID")))
}

fn added_customer(e: &pb::CustomerAdded) -> Result<AddedCustomer, ApplyError> {
    Ok(AddedCustomer {
        reseller_id: reseller_id(&e.reseller_id)?,
        account: account(&e.knox_id, e.kind, &e.company_name, &e.country)?,
        internal_reference: text("internal_reference", &e.internal_reference, false)?,
        status: convert::status_from_proto(e.status).map_err(ApplyError::Poison)?,
        added_at: timestamp::from_proto(e.added_at.as_ref()),
    })
}

fn account(
    knox: &str,
    kind: i32,
    company_name: &str,
    country: &str,
) -> Result<Account, ApplyError> {
    Ok(Account {
        knox_id: knox_id("knox_id", knox)?,
        kind: convert::kind_from_proto(kind).map_err(ApplyError::Poison)?,
        company_name: text("company_name", company_name, true)?,
        country: text("country", country, true)?,
    })
}

fn knox_id(field: &str, value: &str) -> Result<KnoxId, ApplyError> {
    KnoxId::parse(value).map_err(|e| ApplyError::Poison(format!("{field} {e}")))
}

fn reseller_id(value: &str) -> Result<ResellerId, ApplyError> {
    ResellerId::parse(value).map_err(|e| ApplyError::Poison(format!("reseller_id {e}")))
}

/// Free text as customer-service stores it: trimmed, without control characters (the
/// search text relies on that), and present when `required`.
fn text(field: &str, value: &str, required: bool) -> Result<String, ApplyError> {
    let value = value.trim();
    if required && value.is_empty() {
        return Err(ApplyError::Poison(format!("{field} is required")));
    }
    if value.chars().any(char::is_control) {
        return Err(ApplyError::Poison(format!(
            "{field} contains control characters"
        )));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poison<T: std::fmt::Debug>(r: Result<T, ApplyError>) -> String {
        match r {
            Err(ApplyError::Poison(reason)) => reason,
            other => panic!("expected poison, got {other:?}"),
        }
    }

    fn added() -> pb::CustomerAdded {
        pb::CustomerAdded {
            reseller_id: "acme".into(),
            knox_id: "123456".into(),
            kind: pb::AccountKind::Customer as i32,
            company_name: "Acme GmbH".into(),
            country: "DE".into(),
            internal_reference: "PO-7".into(),
            status: pb::CustomerStatus::Active as i32,
            added_at: None,
            ..Default::default()
        }
    }

    fn upload_event() -> pb::DevicesUploaded {
        pb::DevicesUploaded {
            upload_id: Uuid::from_u128(1).to_string(),
            reseller_id: "acme".into(),
            target_knox_id: "123456".into(),
            devices: vec![
                pb::UploadedDevice {
                    device_id: "R58M-1".into(),
                    id_kind: pb::DeviceIdKind::Serial as i32,
                    model: "Galaxy".into(),
                },
                pb::UploadedDevice {
                    device_id: "356938035643809".into(),
                    id_kind: 0,
                    model: String::new(),
                },
            ],
            target_kind: pb::AccountKind::Msp as i32,
            order_number: "PO-1".into(),
            part: 1,
            part_count: 1,
            accepted_count: 2,
            ..Default::default()
        }
    }

    #[test]
    fn upload_parts_parse_and_unspecified_kinds_are_inferred() {
        let part = uploaded_part(&upload_event()).unwrap();
        assert_eq!(part.target.as_str(), "123456");
        assert_eq!(part.target_kind, AccountKind::Msp);
        assert_eq!(part.upload.order_number, "PO-1");
        let kinds: Vec<_> = part.devices.iter().map(|d| d.kind).collect();
        assert_eq!(kinds, [DeviceIdKind::Serial, DeviceIdKind::Imei]);

        // IDs only: kinds inferred, IDs normalised.
        let mut e = upload_event();
        e.devices.clear();
        e.device_ids = vec![" a0000000002329 ".into()];
        let part = uploaded_part(&e).unwrap();
        assert_eq!(part.devices[0].device_id, "A0000000002329");
        assert_eq!(part.devices[0].kind, DeviceIdKind::Meid);
    }

    #[test]
    fn device_events_that_can_never_apply_are_poison() {
        let mut e = upload_event();
        e.upload_id = "nope".into();
        assert!(poison(uploaded_part(&e)).starts_with("upload_id"));
        let mut e = upload_event();
        e.target_kind = 0;
        assert!(poison(uploaded_part(&e)).starts_with("target_kind"));
        let mut e = upload_event();
        e.devices[1].device_id = "bad id!".into();
        assert!(poison(uploaded_part(&e)).starts_with("device_id"));

        let deletion = pb::DevicesDeleted {
            deletion_id: Uuid::from_u128(2).to_string(),
            reseller_id: "acme".into(),
            device_ids: vec!["R58M-1".into()],
            part: 1,
            part_count: 1,
            devices: vec![pb::DeletedDevice {
                device_id: "R58M-1".into(),
                upload_id: Uuid::from_u128(1).to_string(),
                target_knox_id: "123456".into(),
            }],
        };
        let part = deleted_part(&deletion).unwrap();
        assert_eq!(
            part.registrations,
            [("R58M-1".to_owned(), Uuid::from_u128(1))]
        );
        let mut e = deletion.clone();
        e.devices[0].upload_id = "x".into();
        assert!(poison(deleted_part(&e)).starts_with("upload_id"));
        let mut e = deletion.clone();
        e.devices.clear();
        poison(deleted_part(&e));
        let mut e = deletion;
        e.deletion_id = String::new();
        assert!(poison(deleted_part(&e)).starts_with("deletion_id"));
    }

    #[test]
    fn well_formed_events_parse() {
        let customer = added_customer(&added()).unwrap();
        assert_eq!(customer.reseller_id.as_str(), "acme");
        assert_eq!(customer.account.knox_id.as_str(), "123456");
        assert_eq!(customer.internal_reference, "PO-7");
    }

    #[test]
    fn content_that_can_never_apply_is_poison() {
        let mut e = added();
        e.knox_id = "12ab".into();
        assert!(poison(added_customer(&e)).starts_with("knox_id"));
        let mut e = added();
        e.reseller_id = "a b".into();
        assert!(poison(added_customer(&e)).starts_with("reseller_id"));
        let mut e = added();
        e.status = 0;
        poison(added_customer(&e));
        let mut e = added();
        e.kind = 0;
        poison(added_customer(&e));
        let mut e = added();
        e.internal_reference = "a\u{1f}b".into();
        assert!(poison(added_customer(&e)).starts_with("internal_reference"));
        let mut e = added();
        e.company_name = " ".into();
        assert!(poison(added_customer(&e)).starts_with("company_name"));
    }
}
