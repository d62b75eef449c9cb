//! The actor of every reseller command (issue 12; DOMAIN.md "Finding devices, history and
//! the activity log"): a token may name the person acting (`name`, 1 to 100 characters
//! without control characters, else the token is refused); a reseller's uploads,
//! deletions, added customers and edited references record that person, else the
//! reseller ID, and their events carry it; every upload and every deletion publishes one
//! `upload_recorded` / `deletion_recorded` with its counts. Over real gRPC, PostgreSQL and
//! NATS, reading the events as an outside subscriber does.

use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use reseller_kit::auth::Role;
use reseller_proto::v1::{self as pb, event::Payload};
use reseller_tests::TestStack;
use reseller_tests::clients::{Caller, named, reseller};
use reseller_tests::fixtures::{active_customer, device, imei, register, upload_stream};
use tonic::Code;

/// Every event the stack publishes, as an outside subscriber sees them, in order.
struct Events {
    subscription: async_nats::Subscriber,
    seen: Vec<Payload>,
}

impl Events {
    async fn subscribe(stack: &TestStack) -> Self {
        Self {
            subscription: stack.subscribe("reseller.events.v1.>").await,
            seen: Vec::new(),
        }
    }

    /// Reads events until `pick` takes one (looking at those already read first).
    async fn next<T>(&mut self, what: &str, pick: impl Fn(&Payload) -> Option<T>) -> T {
        if let Some(found) = self.seen.iter().find_map(&pick) {
            return found;
        }
        loop {
            let message = tokio::time::timeout(Duration::from_secs(15), self.subscription.next())
                .await
                .unwrap_or_else(|_| panic!("no {what} in time; saw {:#?}", self.seen))
                .expect("the subscription stays open");
            let event = pb::Event::decode(message.payload.as_ref()).expect("a reseller.v1.Event");
            let payload = event.payload.expect("a payload");
            let found = pick(&payload);
            self.seen.push(payload);
            if let Some(found) = found {
                return found;
            }
        }
    }

    /// Reads whatever else arrives within `quiet`, then answers every event read that
    /// `pick` takes.
    async fn all_after<T>(
        &mut self,
        quiet: Duration,
        pick: impl Fn(&Payload) -> Option<T>,
    ) -> Vec<T> {
        while let Ok(Some(message)) = tokio::time::timeout(quiet, self.subscription.next()).await {
            let event = pb::Event::decode(message.payload.as_ref()).expect("a reseller.v1.Event");
            self.seen.push(event.payload.expect("a payload"));
        }
        self.seen.iter().filter_map(pick).collect()
    }
}

fn upload_recorded(upload_id: &str) -> impl Fn(&Payload) -> Option<pb::UploadRecorded> + '_ {
    move |p| match p {
        Payload::UploadRecorded(e) if e.upload_id == upload_id => Some(e.clone()),
        _ => None,
    }
}

fn devices_uploaded(upload_id: &str) -> impl Fn(&Payload) -> Option<pb::DevicesUploaded> + '_ {
    move |p| match p {
        Payload::DevicesUploaded(e) if e.upload_id == upload_id => Some(e.clone()),
        _ => None,
    }
}

fn deletion_recorded(deletion_id: &str) -> impl Fn(&Payload) -> Option<pb::DeletionRecorded> + '_ {
    move |p| match p {
        Payload::DeletionRecorded(e) if e.deletion_id == deletion_id => Some(e.clone()),
        _ => None,
    }
}

fn devices_deleted(deletion_id: &str) -> impl Fn(&Payload) -> Option<pb::DevicesDeleted> + '_ {
    move |p| match p {
        Payload::DevicesDeleted(e) if e.deletion_id == deletion_id => Some(e.clone()),
        _ => None,
    }
}

fn customer_added(knox_id: &str) -> impl Fn(&Payload) -> Option<pb::CustomerAdded> + '_ {
    move |p| match p {
        Payload::CustomerAdded(e) if e.knox_id == knox_id => Some(e.clone()),
        _ => None,
    }
}

fn reference_updated(
    knox_id: &str,
) -> impl Fn(&Payload) -> Option<pb::CustomerReferenceUpdated> + '_ {
    move |p| match p {
        Payload::CustomerReferenceUpdated(e) if e.knox_id == knox_id => Some(e.clone()),
        _ => None,
    }
}

/// Uploads `ids` to `target` as `caller` (`validate_only` as given).
async fn upload_as(
    caller: &Caller,
    target: &str,
    ids: &[String],
    validate_only: bool,
) -> pb::Upload {
    let header = pb::UploadHeader {
        target_knox_id: target.into(),
        order_number: "PO-7".into(),
        validate_only,
        ..Default::default()
    };
    let inputs = ids.iter().map(|id| device(id)).collect();
    caller
        .upload_devices(futures::stream::iter(upload_stream(header, inputs, 2)))
        .await
        .expect("upload")
}

/// The customer `knox_id` of `reseller_id`, approved, added by `adder` (so the event of
/// the addition names `adder`'s actor).
async fn customer_added_by(stack: &TestStack, adder: &Caller, reseller_id: &str, knox_id: &str) {
    register(stack, knox_id, pb::AccountKind::Customer, "Globex").await;
    adder.add_customer(knox_id, "").await.expect("add customer");
    reseller_tests::clients::customer(stack, knox_id)
        .approve_reseller(reseller_id)
        .await
        .expect("approve");
}

/// A `name` claim that is too long, holds a control character, or is empty refuses the
/// token, saying what is wrong with `name`; 100 characters of any script are fine.
#[tokio::test]
async fn a_token_with_a_bad_name_is_unauthenticated() {
    let stack = TestStack::start().await;
    for (name, problem) in [
        ("x".repeat(101), "at most 100 characters, got 101"),
        ("Jane\u{7}Roe".into(), "control characters"),
        ("Jane Roe\n".into(), "control characters"),
        (String::new(), "must not be empty"),
        ("   ".into(), "must not be empty"),
    ] {
        let refused = named(&stack, Role::Reseller, "acme", &name)
            .list_uploads(pb::ListUploadsRequest::default())
            .await
            .expect_err("refused");
        assert_eq!(
            refused.code(),
            Code::Unauthenticated,
            "{name:?}: {refused:?}"
        );
        assert!(
            refused.message().contains("name") && refused.message().contains(problem),
            "{name:?}: {refused:?}"
        );
        assert!(refused.message().len() < 200, "{refused:?}");
    }
    let fine = named(&stack, Role::Reseller, "acme", &"é".repeat(100))
        .list_uploads(pb::ListUploadsRequest::default())
        .await;
    assert!(fine.is_ok(), "{fine:?}");
    // An account's token is held to the same rule, though its name is never shown.
    let refused = named(&stack, Role::Customer, "760000009", &"x".repeat(101))
        .list_my_devices(pb::ListMyDevicesRequest::default())
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}

/// A named reseller's commands record the person: the customer it adds and the reference
/// it edits, its upload and its deletion, in their events and in GetUpload, ListUploads,
/// GetDeletion and ListDeletions.
#[tokio::test]
async fn a_named_resellers_commands_carry_the_name_as_actor() {
    let stack = TestStack::start().await;
    let mut events = Events::subscribe(&stack).await;
    let jane = named(&stack, Role::Reseller, "acme", "  Jane Roe ");
    let knox = "760000001";
    customer_added_by(&stack, &jane, "acme", knox).await;
    let added = events.next("customer_added", customer_added(knox)).await;
    assert_eq!(
        (added.reseller_id.as_str(), added.actor.as_str()),
        ("acme", "Jane Roe")
    );

    jane.update_internal_reference(knox, "PO-7")
        .await
        .expect("edit the reference");
    let edited = events
        .next("customer_reference_updated", reference_updated(knox))
        .await;
    assert_eq!(
        (edited.internal_reference.as_str(), edited.actor.as_str()),
        ("PO-7", "Jane Roe")
    );

    let ids = [imei(1), imei(2), "bad!".to_string()];
    let upload = upload_as(&jane, knox, &ids, false).await;
    assert_eq!((upload.accepted_count, upload.rejected_count), (2, 1));
    assert_eq!(upload.actor, "Jane Roe");
    let part = events
        .next("devices_uploaded", devices_uploaded(&upload.upload_id))
        .await;
    assert_eq!(part.actor, "Jane Roe");
    let recorded = events
        .next("upload_recorded", upload_recorded(&upload.upload_id))
        .await;
    assert_eq!(
        recorded,
        pb::UploadRecorded {
            upload_id: upload.upload_id.clone(),
            reseller_id: "acme".into(),
            target_knox_id: knox.into(),
            target_kind: pb::AccountKind::Customer as i32,
            order_number: "PO-7".into(),
            uploaded_at: upload.uploaded_at,
            accepted_count: 2,
            rejected_count: 1,
            actor: "Jane Roe".into(),
        }
    );
    // Anyone of the reseller reads who did it.
    let acme = reseller(&stack, "acme");
    assert_eq!(
        acme.get_upload(&upload.upload_id).await.unwrap().actor,
        "Jane Roe"
    );
    let listed = acme
        .list_uploads(pb::ListUploadsRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.uploads[0].actor, "Jane Roe");

    let deletion = jane
        .delete_devices([imei(1), imei(3)])
        .await
        .expect("delete");
    assert_eq!(deletion.actor, "Jane Roe");
    let part = events
        .next("devices_deleted", devices_deleted(&deletion.deletion_id))
        .await;
    assert_eq!(part.actor, "Jane Roe");
    assert_eq!(part.requested_at, deletion.requested_at);
    let recorded = events
        .next(
            "deletion_recorded",
            deletion_recorded(&deletion.deletion_id),
        )
        .await;
    assert_eq!(
        recorded,
        pb::DeletionRecorded {
            deletion_id: deletion.deletion_id.clone(),
            reseller_id: "acme".into(),
            requested_at: deletion.requested_at,
            deleted_count: 1,
            not_found_count: 1,
            part_count: 1,
            actor: "Jane Roe".into(),
        }
    );
    let read = acme.get_deletion(&deletion.deletion_id).await.unwrap();
    assert_eq!(read.actor, "Jane Roe");
    let listed = acme
        .list_deletions(pb::ListDeletionsRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.deletions[0].actor, "Jane Roe");
}

/// Without a `name`, the reseller itself acts: its ID is the actor everywhere.
#[tokio::test]
async fn without_a_name_the_reseller_id_is_the_actor() {
    let stack = TestStack::start().await;
    let mut events = Events::subscribe(&stack).await;
    let acme = reseller(&stack, "acme");
    let knox = "760000002";
    customer_added_by(&stack, &acme, "acme", knox).await;
    assert_eq!(
        events
            .next("customer_added", customer_added(knox))
            .await
            .actor,
        "acme"
    );
    acme.update_internal_reference(knox, "PO-8").await.unwrap();
    assert_eq!(
        events
            .next("customer_reference_updated", reference_updated(knox))
            .await
            .actor,
        "acme"
    );
    let upload = upload_as(&acme, knox, &[imei(1)], false).await;
    assert_eq!(upload.actor, "acme");
    assert_eq!(
        events
            .next("devices_uploaded", devices_uploaded(&upload.upload_id))
            .await
            .actor,
        "acme"
    );
    assert_eq!(
        events
            .next("upload_recorded", upload_recorded(&upload.upload_id))
            .await
            .actor,
        "acme"
    );
    let deletion = acme.delete_devices([imei(1)]).await.unwrap();
    assert_eq!(
        acme.get_deletion(&deletion.deletion_id)
            .await
            .unwrap()
            .actor,
        "acme"
    );
    assert_eq!(
        events
            .next("devices_deleted", devices_deleted(&deletion.deletion_id))
            .await
            .actor,
        "acme"
    );
    assert_eq!(
        events
            .next(
                "deletion_recorded",
                deletion_recorded(&deletion.deletion_id)
            )
            .await
            .actor,
        "acme"
    );
}

/// Every upload is recorded once, also one that accepted nothing (and so has no
/// `devices_uploaded`); a validation never is.
#[tokio::test]
async fn an_upload_that_accepts_nothing_is_recorded_once_and_a_validation_never() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", "760000003", "Globex").await;
    let mut events = Events::subscribe(&stack).await;
    let acme = reseller(&stack, "acme");
    let checked = upload_as(&acme, "760000003", &[imei(1)], true).await;
    assert_eq!(
        (checked.accepted_count, checked.upload_id.as_str()),
        (1, "")
    );

    let nothing = upload_as(&acme, "760000003", &["bad!".into(), "worse!".into()], false).await;
    assert_eq!((nothing.accepted_count, nothing.rejected_count), (0, 2));
    let recorded = events
        .next("upload_recorded", upload_recorded(&nothing.upload_id))
        .await;
    assert_eq!((recorded.accepted_count, recorded.rejected_count), (0, 2));
    assert_eq!(recorded.actor, "acme");

    // The outbox publishes in commit order: had the validation written anything, it
    // would have arrived before.
    let every_upload_event = events
        .all_after(Duration::from_millis(500), |p| match p {
            Payload::UploadRecorded(e) => Some(e.upload_id.clone()),
            Payload::DevicesUploaded(e) => Some(e.upload_id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(every_upload_event, std::slice::from_ref(&nothing.upload_id));
}

/// Every deletion is recorded once with its counts: one that found nothing has no
/// `devices_deleted` and zero parts; a large one counts its parts.
#[tokio::test]
async fn every_deletion_is_recorded_once_with_its_counts() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", "760000004", "Globex").await;
    let acme = reseller(&stack, "acme");
    let ids: Vec<String> = (0..1500).map(imei).collect();
    upload_as(&acme, "760000004", &ids, false).await;
    let mut events = Events::subscribe(&stack).await;

    let nothing = acme
        .delete_devices([imei(5000), "no such device".into()])
        .await
        .unwrap();
    let recorded = events
        .next("deletion_recorded", deletion_recorded(&nothing.deletion_id))
        .await;
    assert_eq!(
        (
            recorded.deleted_count,
            recorded.not_found_count,
            recorded.part_count
        ),
        (0, 2, 0)
    );
    assert_eq!(recorded.requested_at, nothing.requested_at);

    let mut asked = ids.clone();
    asked.push(imei(5001));
    let many = acme.delete_devices(asked).await.unwrap();
    let recorded = events
        .next("deletion_recorded", deletion_recorded(&many.deletion_id))
        .await;
    assert_eq!(
        (
            recorded.deleted_count,
            recorded.not_found_count,
            recorded.part_count
        ),
        (1500, 1, 2)
    );
    let parts = events
        .all_after(
            Duration::from_millis(500),
            devices_deleted(&many.deletion_id),
        )
        .await;
    assert_eq!(parts.len(), 2);
    assert!(parts.iter().all(|p| p.part_count == 2 && p.actor == "acme"));
    let nothing_parts = events
        .all_after(Duration::ZERO, devices_deleted(&nothing.deletion_id))
        .await;
    assert!(nothing_parts.is_empty());
    let records = events
        .all_after(Duration::ZERO, |p| match p {
            Payload::DeletionRecorded(e) => Some(e.deletion_id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        records,
        [nothing.deletion_id.clone(), many.deletion_id.clone()]
    );
}
