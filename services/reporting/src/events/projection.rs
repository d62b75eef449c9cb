//! The projection: applies events to the reseller views. Each event is checked here, then
//! written by `postgres` inside the consumer's transaction (for a deletion, its one
//! statement).
//!
//! Content that can never apply (a malformed ID, an unspecified enum) is poison and goes
//! to the dead-letter subject. Nothing else waits for another event: events of different
//! services are not ordered relative to each other, so every event is applied whenever it
//! arrives and each fact keeps its newest value by its own rule.
//!
//! - Customer events: the reference and the status keep the highest revision seen; a
//!   reference update projected before its `customer_added` waits in an unlisted row, a
//!   status change in `approvals`.
//! - Device events are applied set-based, a part (at most 1,000 devices) per statement:
//!   an upload part inserts its registrations, places them (`domain::place`) and adds the
//!   placement's delta to the counters; a deletion part marks its registrations deleted,
//!   takes them out of DEVICES (UPLOADS keeps them) and enqueues the reseller portal's
//!   `portal_deletion_applied` receipt, all in one statement (the consumer's only round
//!   trip for it). An upload may be projected before the reseller's `customer_added` (its
//!   counters wait in an unlisted row) and a deletion before its upload (a tombstone keeps
//!   the device from showing).
//! - MSP events (rules 2 and 3): a link, mode change or delink records the customer's
//!   link fact (highest `seq` wins) and re-places the registrations uploaded to an MSP
//!   that the customer holds; a move records the new holder (newest move `seq` wins, on
//!   deleted registrations too) and the link the move implies, and re-places the moved
//!   registrations. A move projected before its upload records the registration placed
//!   nowhere; the upload then completes and places it.
//! - Lookups, history and the activity log (issue #12, `postgres::lookups` and
//!   `postgres::activity`): each event also stores the facts it states (a device's
//!   secondary identifiers, every move and delink, which deletion deleted what) and adds
//!   to the reseller's activity log (`upload_recorded`, `deletion_recorded`, customer
//!   events, moves, delinks). Nothing is
//!   ordered here: the history is assembled when it is read (`domain::history`), and an
//!   entry several events write adds their counts up.

use reseller_kit::accounts::{CompanyName, InternalReference};
use reseller_kit::country::Country;
use reseller_kit::device_id::{DeviceId, DeviceIdKind};
use reseller_kit::events::{ReceivedEvent, portal_receipt_cte, uuid_field};
use reseller_kit::ids::{KnoxId, ResellerId};
use reseller_kit::inbox::{ApplyError, Change, EventHandler};
use reseller_kit::one_statement::{OneStatement, Params};
use reseller_kit::text::{FreeText, FreeTextError};
use reseller_kit::timestamp;
use reseller_proto::v1::{self as pb, event::Payload};
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::domain::{
    Account, AccountKind, ActivityKind, AddedCustomer, DeletedPart, DelinkFacts, LinkFact,
    MovedPart, MovedRegistration, PlacementFacts, UploadRef, UploadedDevice, UploadedPart, place,
    transfer,
};
use crate::grpc::convert;
use crate::postgres::{self, ActivityFact, Affected};
use reseller_kit::device_id::{MAX_SECONDARY_IDS, lookup_key};
use uuid::Uuid;

/// The reseller views' event handler (the `reporting` consumer's).
#[derive(Debug, Clone, Default)]
pub struct Projection;

impl EventHandler for Projection {
    fn change(&self, event: ReceivedEvent, params: &mut Params) -> Result<Change, ApplyError> {
        let occurred_at = event.occurred_at;
        let event_id = event.id;
        Ok(match event.payload {
            Payload::AccountRegistered(e) => {
                let account = account(&e.knox_id, e.kind, &e.company_name, &e.country)?;
                Change::in_transaction(move |tx| {
                    Box::pin(async move { Ok(postgres::upsert_account(tx, &account).await?) })
                })
            }
            Payload::CustomerAdded(e) => {
                let customer = added_customer(&e)?;
                let entry = ActivityFact::new(
                    customer.reseller_id.as_str(),
                    event_id.to_string(),
                    customer.added_at,
                    ActivityKind::CustomerAdded,
                    actor_or(&e.actor, &e.reseller_id),
                )
                .about(customer.account.knox_id.as_str());
                let entry = ActivityFact {
                    detail: customer.account.company_name.clone(),
                    ..entry
                };
                Change::in_transaction(move |tx| {
                    Box::pin(async move {
                        postgres::add_customer(tx, &customer).await?;
                        postgres::record_activity(tx, &[entry]).await?;
                        Ok(())
                    })
                })
            }
            Payload::CustomerReferenceUpdated(e) => Change::in_transaction(move |tx| {
                Box::pin(async move { reference_updated(tx, &e, event_id, occurred_at).await })
            }),
            Payload::CustomerStatusChanged(e) => Change::in_transaction(move |tx| {
                Box::pin(async move { status_changed(tx, &e, event_id, occurred_at).await })
            }),
            Payload::DevicesUploaded(e) => {
                let part = uploaded_part(&e)?;
                Change::in_transaction(move |tx| Box::pin(async move { uploaded(tx, &part).await }))
            }
            Payload::DevicesDeleted(e) => Change::OneStatement(deleted(&e, occurred_at, params)?),
            Payload::MspCustomerLinked(e) => {
                linked_mode(e.mode)?;
                let fact = link_fact(&e.customer_knox_id, &e.msp_id, true, e.seq)?;
                Change::in_transaction(move |tx| {
                    Box::pin(async move { link_changed(tx, &fact).await })
                })
            }
            Payload::MspManagementModeChanged(e) => {
                linked_mode(e.mode)?;
                let fact = link_fact(&e.customer_knox_id, &e.msp_id, true, e.seq)?;
                Change::in_transaction(move |tx| {
                    Box::pin(async move { link_changed(tx, &fact).await })
                })
            }
            Payload::MspCustomerDelinked(e) => {
                let fact = link_fact(&e.customer_knox_id, &e.msp_id, false, e.seq)?;
                let delink = DelinkFacts {
                    customer_knox_id: fact.customer.as_str().to_owned(),
                    seq: fact.seq,
                    msp_id: fact.msp_id.as_str().to_owned(),
                    requested_by: knox_id("requested_by", &e.requested_by)?
                        .as_str()
                        .to_owned(),
                    delinked_at: e
                        .delinked_at
                        .as_ref()
                        .map_or(occurred_at, |at| timestamp::from_proto(Some(at))),
                };
                Change::in_transaction(move |tx| {
                    Box::pin(async move {
                        link_changed(tx, &fact).await?;
                        delinked(tx, &delink, event_id).await
                    })
                })
            }
            Payload::MspDevicesMoved(e) => {
                let part = moved_part(&e, occurred_at)?;
                Change::in_transaction(move |tx| Box::pin(async move { moved(tx, &part).await }))
            }
            // The portals' receipts are read by device-service (a deletion's progress is
            // its own: `GetDeletion`).
            Payload::PortalDeletionApplied(_) => Change::Ignored,
            Payload::UploadRecorded(e) => {
                let entry = upload_recorded(&e)?;
                Change::in_transaction(move |tx| {
                    Box::pin(async move { Ok(postgres::record_activity(tx, &[entry]).await?) })
                })
            }
            Payload::DeletionRecorded(e) => {
                let entry = deletion_recorded(&e, occurred_at)?;
                Change::in_transaction(move |tx| {
                    Box::pin(async move { Ok(postgres::record_activity(tx, &[entry]).await?) })
                })
            }
            Payload::DeletionCompleted(e) => {
                let entry = deletion_completed(&e, occurred_at)?;
                Change::in_transaction(move |tx| {
                    Box::pin(async move { Ok(postgres::record_activity(tx, &[entry]).await?) })
                })
            }
        })
    }
}

/// Keeps a customer's reference at its highest revision.
async fn reference_updated(
    tx: &mut PgConnection,
    e: &pb::CustomerReferenceUpdated,
    event_id: Uuid,
    occurred_at: OffsetDateTime,
) -> Result<(), ApplyError> {
    let reseller_id = reseller_id(&e.reseller_id)?;
    let knox_id = knox_id("knox_id", &e.knox_id)?;
    let reference = free_text(InternalReference::parse(
        "internal_reference",
        &e.internal_reference,
    ))?;
    postgres::update_reference(tx, &reseller_id, &knox_id, &reference, e.revision).await?;
    let entry = ActivityFact::new(
        reseller_id.as_str(),
        event_id.to_string(),
        occurred_at,
        ActivityKind::ReferenceUpdated,
        actor_or(&e.actor, &e.reseller_id),
    )
    .about(knox_id.as_str());
    postgres::record_activity(
        tx,
        &[ActivityFact {
            detail: reference,
            ..entry
        }],
    )
    .await?;
    Ok(())
}

/// Keeps a customer's status at its highest revision.
async fn status_changed(
    tx: &mut PgConnection,
    e: &pb::CustomerStatusChanged,
    event_id: Uuid,
    occurred_at: OffsetDateTime,
) -> Result<(), ApplyError> {
    let reseller_id = reseller_id(&e.reseller_id)?;
    let knox_id = knox_id("knox_id", &e.knox_id)?;
    let status = convert::status_from_proto(e.status).map_err(ApplyError::Poison)?;
    postgres::change_status(tx, &reseller_id, &knox_id, status, e.revision, occurred_at).await?;
    // The account decided: its Knox ID is the actor (DOMAIN.md), never a person's name.
    let entry = ActivityFact::new(
        reseller_id.as_str(),
        event_id.to_string(),
        occurred_at,
        ActivityKind::ApprovalChanged,
        knox_id.as_str(),
    )
    .about(knox_id.as_str());
    postgres::record_activity(
        tx,
        &[ActivityFact {
            detail: status.as_db().to_owned(),
            ..entry
        }],
    )
    .await?;
    Ok(())
}

/// Registers an upload part and counts it under its placement; places the registrations
/// a move announced before the upload.
async fn uploaded(tx: &mut PgConnection, part: &UploadedPart) -> Result<(), ApplyError> {
    // Not moved yet: the holder is the account uploaded to, so rule 1 applies whatever
    // that account's links are.
    let placement = place(&PlacementFacts {
        uploaded_to: part.target.as_str(),
        uploaded_to_msp: part.target_kind == AccountKind::Msp,
        holder: part.target.as_str(),
        holder_msp: None,
        delinked_since_move: false,
    });
    // Registrations a move announced are placed by their holder's link: take the lock
    // before touching them (normally there are none, and no lock is taken).
    let upload_id = part.upload.upload_id;
    let awaited = postgres::awaits_upload(tx, upload_id).await?;
    let copied = if awaited {
        postgres::lock_msp_placements(tx).await?;
        None
    } else {
        // The usual part: nothing projected before it, its rows COPYed.
        postgres::copy_registrations(tx, part, &placement).await?
    };
    let part_done = match copied {
        Some(done) => done,
        None => postgres::insert_registrations(tx, part, &placement).await?,
    };
    postgres::record_secondary_ids(tx, part).await?;
    if part_done.inserted > part_done.live {
        // Some were deleted before this part was projected: list their deletions where
        // they are placed.
        let ids: Vec<String> = part.devices.iter().map(|d| d.device_id.clone()).collect();
        let uploads = vec![upload_id; ids.len()];
        postgres::relist_deletions(tx, &ids, &uploads).await?;
    }
    let mut deltas = transfer(
        &part.upload,
        None,
        Some(&placement),
        part_done.inserted,
        part_done.live,
    );
    if !part_done.completed.is_empty() {
        postgres::lock_msp_placements(tx).await?;
        let uploads = vec![upload_id; part_done.completed.len()];
        deltas.extend(
            postgres::replace_registrations(
                tx,
                Affected::Registrations(&part_done.completed, &uploads),
            )
            .await?,
        );
    }
    postgres::apply_deltas(tx, deltas).await?;
    Ok(())
}

/// Records a customer's link fact and re-places what the customer holds from MSPs (always,
/// even when the fact is old news: link events are rare, and this re-checks them).
async fn link_changed(tx: &mut PgConnection, fact: &LinkFact) -> Result<(), ApplyError> {
    postgres::lock_msp_placements(tx).await?;
    postgres::upsert_link(tx, fact).await?;
    let deltas =
        postgres::replace_registrations(tx, Affected::HeldFromMsp(fact.customer.as_str())).await?;
    postgres::apply_deltas(tx, deltas).await?;
    Ok(())
}

/// Records a move's holders and the link it implies, and re-places what changed.
async fn moved(tx: &mut PgConnection, part: &MovedPart) -> Result<(), ApplyError> {
    postgres::lock_msp_placements(tx).await?;
    let link_news = postgres::upsert_link(tx, &part.implied_link()).await?;
    let (ids, uploads) = postgres::move_registrations(tx, part).await?;
    postgres::record_moves(tx, part).await?;
    postgres::record_activity(tx, &move_entries(part)).await?;
    later_delinks(tx, part).await?;
    let mut deltas =
        postgres::replace_registrations(tx, Affected::Registrations(&ids, &uploads)).await?;
    if link_news {
        // The move told of a link not projected yet (its event is late): what the
        // customer already holds is placed by it too. (The link's own event re-places
        // them again when it arrives; this keeps the views right meanwhile.)
        deltas.extend(
            postgres::replace_registrations(tx, Affected::HeldFromMsp(part.to.as_str())).await?,
        );
    }
    postgres::apply_deltas(tx, deltas).await?;
    Ok(())
}

/// Removes a deletion part's devices and answers with the reseller portal's receipt
/// (REMOVED when the portal showed at least one of them, else NOT_APPLICABLE), in one
/// statement.
fn deleted(
    e: &pb::DevicesDeleted,
    occurred_at: OffsetDateTime,
    params: &mut Params,
) -> Result<OneStatement, ApplyError> {
    let removal = postgres::delete_registrations_ctes(&deleted_part(e, occurred_at)?, params);
    let receipt = portal_receipt_cte(e, pb::Portal::Reseller, "removed", params);
    Ok(OneStatement {
        ctes: format!("{removal}, {receipt}"),
        emits: Some("receipt"),
    })
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
            .map(|d| {
                let mut device = uploaded_device(&d.device_id, d.id_kind, &d.model)?;
                device.secondary_ids = secondary_ids(&d.secondary_ids)?;
                Ok(device)
            })
            .collect::<Result<_, ApplyError>>()?
    };
    Ok(UploadedPart {
        upload: UploadRef {
            reseller_id: reseller_id(&e.reseller_id)?.as_str().to_owned(),
            upload_id: uuid_field("upload_id", &e.upload_id)?,
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
        secondary_ids: Vec::new(),
    })
}

/// A device's secondary identifiers as device-service canonicalised them (at most
/// `MAX_SECONDARY_IDS`); one that is not canonical can never be found, so it is poison.
fn secondary_ids(ids: &[String]) -> Result<Vec<String>, ApplyError> {
    if ids.len() > MAX_SECONDARY_IDS {
        return Err(ApplyError::Poison(format!(
            "a device carries at most {MAX_SECONDARY_IDS} secondary_ids, got {}",
            ids.len()
        )));
    }
    ids.iter()
        .map(|id| match lookup_key(id) {
            Some(canonical) if canonical == *id => Ok(canonical),
            _ => Err(ApplyError::Poison(format!(
                "secondary_ids {:?} is not a canonical device identifier",
                reseller_kit::text::echo(id)
            ))),
        })
        .collect()
}

/// The reseller's actor of an event: the person it names, else the reseller (events
/// published before actors were recorded).
fn actor_or<'a>(actor: &'a str, reseller_id: &'a str) -> &'a str {
    if actor.is_empty() { reseller_id } else { actor }
}

/// An upload's entry in its reseller's activity log.
fn upload_recorded(e: &pb::UploadRecorded) -> Result<ActivityFact, ApplyError> {
    let reseller = reseller_id(&e.reseller_id)?;
    let upload_id = uuid_field("upload_id", &e.upload_id)?;
    let target = knox_id("target_knox_id", &e.target_knox_id)?;
    let entry = ActivityFact::new(
        reseller.as_str(),
        upload_id.to_string(),
        timestamp::from_proto(e.uploaded_at.as_ref()),
        ActivityKind::Upload,
        actor_or(&e.actor, &e.reseller_id),
    )
    .about(target.as_str());
    Ok(ActivityFact {
        upload_id: Some(upload_id),
        accepted_count: e.accepted_count,
        rejected_count: e.rejected_count,
        device_count: e.accepted_count,
        detail: e.order_number.clone(),
        ..entry
    })
}

/// A deletion's entry in its reseller's activity log (its parts list it under the
/// customers they removed devices from).
fn deletion_recorded(
    e: &pb::DeletionRecorded,
    occurred_at: OffsetDateTime,
) -> Result<ActivityFact, ApplyError> {
    let reseller = reseller_id(&e.reseller_id)?;
    let deletion_id = uuid_field("deletion_id", &e.deletion_id)?;
    let requested_at = e
        .requested_at
        .as_ref()
        .map_or(occurred_at, |at| timestamp::from_proto(Some(at)));
    let entry = ActivityFact::new(
        reseller.as_str(),
        deletion_id.to_string(),
        requested_at,
        ActivityKind::Deletion,
        actor_or(&e.actor, &e.reseller_id),
    );
    // A deletion of no device is complete when it is made: no portal had anything to
    // remove (device-service publishes no `deletion_completed` for it).
    const NOT_APPLICABLE: i16 = pb::PortalState::NotApplicable as i16;
    Ok(ActivityFact {
        deletion_id: Some(deletion_id),
        device_count: e.deleted_count,
        rejected_count: e.not_found_count,
        part_count: i32::try_from(e.part_count).unwrap_or(i32::MAX),
        portal_states: (e.part_count == 0).then_some([NOT_APPLICABLE; 3]),
        ..entry
    })
}

/// A deletion's final portal states, added to its entry (whichever of this and
/// `deletion_recorded` is projected first: the entry keeps the earlier time, and the
/// actor this fact does not know).
fn deletion_completed(
    e: &pb::DeletionCompleted,
    occurred_at: OffsetDateTime,
) -> Result<ActivityFact, ApplyError> {
    let reseller = reseller_id(&e.reseller_id)?;
    let deletion_id = uuid_field("deletion_id", &e.deletion_id)?;
    let state = |field: &str, value: i32| match pb::PortalState::try_from(value) {
        Ok(state @ (pb::PortalState::Removed | pb::PortalState::NotApplicable)) => Ok(state as i16),
        _ => Err(ApplyError::Poison(format!(
            "{field} {value} is not a final portal state"
        ))),
    };
    let states = [
        state("reseller_portal", e.reseller_portal)?,
        state("msp_portal", e.msp_portal)?,
        state("customer_portal", e.customer_portal)?,
    ];
    let completed_at = e
        .completed_at
        .as_ref()
        .map_or(occurred_at, |at| timestamp::from_proto(Some(at)));
    let entry = ActivityFact::new(
        reseller.as_str(),
        deletion_id.to_string(),
        completed_at,
        ActivityKind::Deletion,
        "",
    );
    Ok(ActivityFact {
        deletion_id: Some(deletion_id),
        portal_states: Some(states),
        ..entry
    })
}

/// A move part's entries: one per reseller whose devices it moved, listed under the
/// customer moved to and every account the devices were moved from.
fn move_entries(part: &MovedPart) -> Vec<ActivityFact> {
    let mut by_reseller: std::collections::BTreeMap<&str, (i64, Vec<String>)> =
        std::collections::BTreeMap::new();
    for r in &part.registrations {
        let (count, customers) = by_reseller
            .entry(r.upload.reseller_id.as_str())
            .or_default();
        *count += 1;
        if !customers.contains(&r.from_knox_id) {
            customers.push(r.from_knox_id.clone());
        }
    }
    let to = part.to.as_str();
    by_reseller
        .into_iter()
        .map(|(reseller, (count, mut customers))| {
            if !customers.iter().any(|c| c == to) {
                customers.push(to.to_owned());
            }
            let entry = ActivityFact::new(
                reseller,
                format!("move:{}:{}", part.msp_id.as_str(), part.seq),
                part.moved_at,
                ActivityKind::MspMove,
                part.msp_id.as_str(),
            );
            ActivityFact {
                customer_knox_id: to.to_owned(),
                customers,
                device_count: count,
                detail: part.msp_id.as_str().to_owned(),
                ..entry
            }
        })
        .collect()
}

/// Records a delink and lists it in the log of every reseller concerned (whose devices
/// the customer holds from an MSP, or who lists the customer).
async fn delinked(
    tx: &mut PgConnection,
    delink: &DelinkFacts,
    event_id: Uuid,
) -> Result<(), ApplyError> {
    postgres::record_delink(tx, delink, event_id).await?;
    let resellers = postgres::resellers_concerned(tx, &delink.customer_knox_id).await?;
    let entries: Vec<ActivityFact> = resellers
        .iter()
        .map(|reseller| delink_entry(reseller, delink, event_id))
        .collect();
    postgres::record_activity(tx, &entries).await?;
    Ok(())
}

/// A delink's entry in one reseller's log.
fn delink_entry(reseller: &str, delink: &DelinkFacts, event_id: Uuid) -> ActivityFact {
    let entry = ActivityFact::new(
        reseller,
        event_id.to_string(),
        delink.delinked_at,
        ActivityKind::MspDelink,
        &delink.requested_by,
    )
    .about(&delink.customer_knox_id);
    ActivityFact {
        detail: delink.msp_id.clone(),
        ..entry
    }
}

/// The delinks projected before this move that came after it (events of msp-link can
/// arrive in any order): listed in the log of each reseller whose devices it moved, as
/// they would have been had the move come first.
async fn later_delinks(tx: &mut PgConnection, part: &MovedPart) -> Result<(), ApplyError> {
    let delinks =
        postgres::delinks_after(tx, part.to.as_str(), part.msp_id.as_str(), part.seq).await?;
    if delinks.is_empty() {
        return Ok(());
    }
    let mut resellers: Vec<&str> = part
        .registrations
        .iter()
        .map(|r| r.upload.reseller_id.as_str())
        .collect();
    resellers.sort_unstable();
    resellers.dedup();
    let entries: Vec<ActivityFact> = delinks
        .iter()
        .flat_map(|(event_id, delink)| {
            resellers
                .iter()
                .map(move |reseller| delink_entry(reseller, delink, *event_id))
        })
        .collect();
    postgres::record_activity(tx, &entries).await?;
    Ok(())
}

/// A link event's mode must be a linked one.
fn linked_mode(mode: i32) -> Result<(), ApplyError> {
    match pb::ManagementMode::try_from(mode) {
        Ok(pb::ManagementMode::FullyManaged | pb::ManagementMode::JointlyManaged) => Ok(()),
        _ => Err(ApplyError::Poison(format!(
            "mode must be MANAGEMENT_MODE_FULLY_MANAGED or MANAGEMENT_MODE_JOINTLY_MANAGED, \
             got {mode}"
        ))),
    }
}

fn seq(value: i64) -> Result<i64, ApplyError> {
    if value > 0 {
        Ok(value)
    } else {
        Err(ApplyError::Poison(format!(
            "seq must be positive, got {value}"
        )))
    }
}

fn link_fact(
    customer: &str,
    msp_id: &str,
    linked: bool,
    seq_: i64,
) -> Result<LinkFact, ApplyError> {
    Ok(LinkFact {
        customer: knox_id("customer_knox_id", customer)?,
        msp_id: knox_id("msp_id", msp_id)?,
        linked,
        seq: seq(seq_)?,
    })
}

fn moved_part(
    e: &pb::MspDevicesMoved,
    occurred_at: OffsetDateTime,
) -> Result<MovedPart, ApplyError> {
    if e.devices.is_empty() && !e.device_ids.is_empty() {
        // Without the upload of each device, the registration is unknown.
        return Err(ApplyError::Poison(
            "msp_devices_moved names device_ids without their registrations (devices)".into(),
        ));
    }
    Ok(MovedPart {
        msp_id: knox_id("msp_id", &e.msp_id)?,
        to: knox_id("to_customer_knox_id", &e.to_customer_knox_id)?,
        seq: seq(e.seq)?,
        moved_at: e
            .moved_at
            .as_ref()
            .map_or(occurred_at, |at| timestamp::from_proto(Some(at))),
        registrations: e
            .devices
            .iter()
            .map(|d| {
                Ok(MovedRegistration {
                    upload: UploadRef {
                        reseller_id: reseller_id(&d.reseller_id)?.as_str().to_owned(),
                        upload_id: uuid_field("upload_id", &d.upload_id)?,
                        uploaded_at: timestamp::from_proto(d.uploaded_at.as_ref()),
                        order_number: d.order_number.clone(),
                    },
                    device: uploaded_device(&d.device_id, d.id_kind, &d.model)?,
                    from_knox_id: knox_id("from_knox_id", &d.from_knox_id)?
                        .as_str()
                        .to_owned(),
                })
            })
            .collect::<Result<_, ApplyError>>()?,
    })
}

fn deleted_part(
    e: &pb::DevicesDeleted,
    occurred_at: OffsetDateTime,
) -> Result<DeletedPart, ApplyError> {
    if e.devices.is_empty() && !e.device_ids.is_empty() {
        // Without the upload of each device, the registration cannot be told apart from
        // an earlier, already deleted one of the same device.
        return Err(ApplyError::Poison(
            "devices_deleted names device_ids without their registrations (devices)".into(),
        ));
    }
    Ok(DeletedPart {
        deletion_id: uuid_field("deletion_id", &e.deletion_id)?,
        reseller_id: reseller_id(&e.reseller_id)?,
        part: e.part,
        part_count: e.part_count,
        registrations: e
            .devices
            .iter()
            .map(|d| Ok((d.device_id.clone(), uuid_field("upload_id", &d.upload_id)?)))
            .collect::<Result<_, ApplyError>>()?,
        requested_at: e
            .requested_at
            .as_ref()
            .map_or(occurred_at, |at| timestamp::from_proto(Some(at))),
        actor: actor_or(&e.actor, &e.reseller_id).to_owned(),
    })
}

fn added_customer(e: &pb::CustomerAdded) -> Result<AddedCustomer, ApplyError> {
    Ok(AddedCustomer {
        reseller_id: reseller_id(&e.reseller_id)?,
        account: account(&e.knox_id, e.kind, &e.company_name, &e.country)?,
        internal_reference: free_text(InternalReference::parse(
            "internal_reference",
            &e.internal_reference,
        ))?,
        reference_revision: e.reference_revision,
        status: convert::status_from_proto(e.status).map_err(ApplyError::Poison)?,
        status_revision: e.status_revision,
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
        company_name: free_text(CompanyName::parse_required("company_name", company_name))?,
        country: Country::parse(country)
            .map_err(|e| ApplyError::Poison(format!("country {e}")))?
            .as_str()
            .to_owned(),
    })
}

fn knox_id(field: &str, value: &str) -> Result<KnoxId, ApplyError> {
    KnoxId::parse(value).map_err(|e| ApplyError::Poison(format!("{field} {e}")))
}

fn reseller_id(value: &str) -> Result<ResellerId, ApplyError> {
    ResellerId::parse(value).map_err(|e| ApplyError::Poison(format!("reseller_id {e}")))
}

/// A free-text field of an event, by the rule customer-service parsed it with
/// (`reseller_kit::text::FreeText`); one that breaks it can never apply.
fn free_text<const MAX: usize>(
    parsed: Result<FreeText<MAX>, FreeTextError>,
) -> Result<String, ApplyError> {
    parsed
        .map(FreeText::into_string)
        .map_err(|e| ApplyError::Poison(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

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
                    ..Default::default()
                },
                pb::UploadedDevice {
                    device_id: "356938035643809".into(),
                    id_kind: 0,
                    model: String::new(),
                    ..Default::default()
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
            ..Default::default()
        };
        let part = deleted_part(&deletion, OffsetDateTime::UNIX_EPOCH).unwrap();
        assert_eq!(
            part.registrations,
            [("R58M-1".to_owned(), Uuid::from_u128(1))]
        );
        let mut e = deletion.clone();
        e.devices[0].upload_id = "x".into();
        assert!(poison(deleted_part(&e, OffsetDateTime::UNIX_EPOCH)).starts_with("upload_id"));
        let mut e = deletion.clone();
        e.devices.clear();
        poison(deleted_part(&e, OffsetDateTime::UNIX_EPOCH));
        let mut e = deletion;
        e.deletion_id = String::new();
        assert!(poison(deleted_part(&e, OffsetDateTime::UNIX_EPOCH)).starts_with("deletion_id"));
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

    fn move_event() -> pb::MspDevicesMoved {
        pb::MspDevicesMoved {
            msp_id: "700001".into(),
            to_customer_knox_id: "600001".into(),
            device_ids: vec!["R58M-1".into()],
            devices: vec![pb::MovedDevice {
                device_id: "R58M-1".into(),
                reseller_id: "acme".into(),
                upload_id: Uuid::from_u128(1).to_string(),
                from_knox_id: "700001".into(),
                id_kind: 0,
                model: "Galaxy".into(),
                uploaded_at: None,
                order_number: "PO-1".into(),
            }],
            moved_at: None,
            seq: 7,
        }
    }

    #[test]
    fn msp_events_parse_and_what_can_never_apply_is_poison() {
        let part = moved_part(&move_event(), OffsetDateTime::UNIX_EPOCH).unwrap();
        assert_eq!(
            (part.msp_id.as_str(), part.to.as_str(), part.seq),
            ("700001", "600001", 7)
        );
        let moved = &part.registrations[0];
        assert_eq!(moved.upload.reseller_id, "acme");
        assert_eq!(moved.upload.upload_id, Uuid::from_u128(1));
        assert_eq!(moved.device.kind, DeviceIdKind::Serial, "kind inferred");

        let mut e = move_event();
        e.seq = 0;
        assert!(poison(moved_part(&e, OffsetDateTime::UNIX_EPOCH)).starts_with("seq"));
        let mut e = move_event();
        e.devices.clear();
        poison(moved_part(&e, OffsetDateTime::UNIX_EPOCH));
        let mut e = move_event();
        e.devices[0].upload_id = "x".into();
        assert!(poison(moved_part(&e, OffsetDateTime::UNIX_EPOCH)).starts_with("upload_id"));
        let mut e = move_event();
        e.to_customer_knox_id = "C1".into();
        assert!(
            poison(moved_part(&e, OffsetDateTime::UNIX_EPOCH)).starts_with("to_customer_knox_id")
        );
        let mut e = move_event();
        e.devices[0].reseller_id = String::new();
        assert!(poison(moved_part(&e, OffsetDateTime::UNIX_EPOCH)).starts_with("reseller_id"));

        assert_eq!(
            link_fact("600001", "700001", false, 3).unwrap(),
            LinkFact::of("600001", "700001", false, 3)
        );
        assert!(poison(link_fact("600001", "", true, 3)).starts_with("msp_id"));
        assert!(poison(link_fact("600001", "700001", true, -1)).starts_with("seq"));
        linked_mode(pb::ManagementMode::FullyManaged as i32).unwrap();
        linked_mode(pb::ManagementMode::JointlyManaged as i32).unwrap();
        poison(linked_mode(pb::ManagementMode::Delinked as i32));
        poison(linked_mode(0));
    }

    #[test]
    fn customer_events_carry_their_revisions() {
        let mut e = added();
        e.reference_revision = 3;
        e.status_revision = 2;
        let customer = added_customer(&e).unwrap();
        assert_eq!(
            (customer.reference_revision, customer.status_revision),
            (3, 2)
        );
    }

    /// The projection's upload fast path against the database: an upload part is `COPY`ed
    /// when nothing stands in its way and writes exactly the row the exact statement
    /// writes; applied again it changes nothing; after a deletion projected first the
    /// device is registered deleted (never shown, counted in UPLOADS); after a move
    /// projected first the upload completes the moved registration.
    mod upload_fast_path {
        use reseller_kit::test_events::{
            self, CUSTOMER, DEVICE, MSP, OTHER_DEVICE, deleted, moved, uploaded_to_msp,
        };
        use reseller_proto::v1::event::Payload;
        use sqlx::PgPool;
        use uuid::Uuid;

        use super::super::Projection;

        async fn apply(pool: &PgPool, payload: Payload) {
            test_events::apply(crate::module::spec(), pool, Projection, payload).await;
        }

        /// Two replicas apply an upload part and its device's deletion at the same time:
        /// the upload finds no tombstone and `COPY`s its row while the deletion finds no
        /// registration and leaves a tombstone, neither seeing the other's uncommitted
        /// write. Whichever commits second must fail (and be applied again), so that the
        /// device ends deleted, never shown.
        #[sqlx::test(migrator = "crate::MIGRATOR")]
        async fn an_upload_copied_beside_its_deletion_never_shows_the_device(pool: PgPool) {
            let upload = Uuid::now_v7();
            test_events::race_upload_with_deletion(
                crate::module::spec(),
                &pool,
                Projection,
                uploaded_to_msp(upload),
                deleted(upload, DEVICE),
            )
            .await;
            let deleted: bool = sqlx::query_scalar(
                "SELECT deleted FROM reporting.registrations WHERE upload_id = $1",
            )
            .bind(upload)
            .fetch_one(&pool)
            .await
            .unwrap();
            assert!(deleted, "a deleted device is shown in the reseller's views");
            assert_eq!(msp_counts(&pool).await, (0, 1));
        }

        /// The registration of `DEVICE` in `upload`, every column but the upload's ID, as
        /// JSON text (one line to compare).
        async fn registration(pool: &PgPool, upload: Uuid) -> String {
            sqlx::query_scalar(
                "SELECT (to_jsonb(r) - 'upload_id')::text FROM reporting.registrations r \
                 WHERE device_id = $1 AND upload_id = $2",
            )
            .bind(DEVICE)
            .bind(upload)
            .fetch_one(pool)
            .await
            .unwrap()
        }

        /// The MSP's row of the reseller's list: (DEVICES, UPLOADS).
        async fn msp_counts(pool: &PgPool) -> (i64, i64) {
            sqlx::query_as(
                "SELECT devices, uploaded_devices FROM reporting.customer_rows \
                 WHERE reseller_id = 'acme' AND knox_id = $1",
            )
            .bind(MSP)
            .fetch_one(pool)
            .await
            .unwrap()
        }

        #[sqlx::test(migrator = "crate::MIGRATOR")]
        async fn an_upload_part_is_applied_whatever_was_projected_before_it(pool: PgPool) {
            // Nothing before it: COPYed. The same part again changes nothing.
            let copied = Uuid::now_v7();
            apply(&pool, uploaded_to_msp(copied)).await;
            apply(&pool, uploaded_to_msp(copied)).await;
            assert_eq!(msp_counts(&pool).await, (1, 1));

            // A deletion of another device of the upload projected first: the exact
            // statement applies the part, and writes the same row.
            let exact = Uuid::now_v7();
            apply(&pool, deleted(exact, OTHER_DEVICE)).await;
            apply(&pool, uploaded_to_msp(exact)).await;
            assert_eq!(
                registration(&pool, copied).await,
                registration(&pool, exact).await,
                "COPY and the exact statement wrote different registrations"
            );
            assert_eq!(msp_counts(&pool).await, (2, 2));

            // The device's own deletion projected first: registered deleted, counted in
            // UPLOADS only.
            let deleted_first = Uuid::now_v7();
            apply(&pool, deleted(deleted_first, DEVICE)).await;
            apply(&pool, uploaded_to_msp(deleted_first)).await;
            let gone: bool = sqlx::query_scalar(
                "SELECT deleted FROM reporting.registrations WHERE upload_id = $1",
            )
            .bind(deleted_first)
            .fetch_one(&pool)
            .await
            .unwrap();
            assert!(
                gone,
                "a device deleted before its upload was projected is shown"
            );
            assert_eq!(msp_counts(&pool).await, (2, 3));

            // A move projected first: the upload completes the moved registration, which
            // stays with the customer it was moved to.
            let moved_first = Uuid::now_v7();
            apply(&pool, moved(moved_first)).await;
            apply(&pool, uploaded_to_msp(moved_first)).await;
            let (holder, uploaded_to, placed): (String, Option<String>, Option<String>) =
                sqlx::query_as(
                    "SELECT holder_knox_id, uploaded_to, placed_knox_id \
                     FROM reporting.registrations WHERE upload_id = $1",
                )
                .bind(moved_first)
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(
                holder, CUSTOMER,
                "the upload overwrote the move projected before it"
            );
            assert_eq!(uploaded_to.as_deref(), Some(MSP));
            assert!(placed.is_some(), "the moved registration was not placed");
        }
    }
}
