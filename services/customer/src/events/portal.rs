//! The customer portal: a projection of device events, and its deletion receipts.
//!
//! A registration (device, upload) is shown to the account it was uploaded to when that
//! account is a customer, and to the customer an MSP moved it to. A deletion removes it
//! and is answered with a `portal_deletion_applied` receipt (portal CUSTOMER) in the same
//! statement. Deleted registrations are remembered, so events that arrive late (an
//! upload or a move overtaken by its deletion) never bring a device back.

use reseller_kit::events::{MovedColumns, uuid_field};
use reseller_kit::ids::KnoxId;
use reseller_kit::inbox::{ApplyError, Change};
use reseller_kit::portal::{PortalProjection, push_uploaded_device, upload_has_tombstones};
use reseller_kit::sql::{copy_unless_conflict, push_copy_field};
use reseller_kit::timestamp;
use reseller_proto::v1 as pb;
use sqlx::PgConnection;

/// The customer portal consumer's handler.
#[derive(Debug, Clone, Default)]
pub struct CustomerPortal;

impl PortalProjection for CustomerPortal {
    const PORTAL: pb::Portal = pb::Portal::Customer;

    /// Only uploads to a customer: an MSP's pool shows in the MSP portal, and reaches a
    /// customer here only when the MSP moves it.
    fn uploaded(&self, e: pb::DevicesUploaded) -> Change {
        if e.target_kind != pb::AccountKind::Customer as i32 {
            return Change::Ignored;
        }
        Change::in_transaction(move |tx| Box::pin(async move { uploaded(tx, &e).await }))
    }

    fn moved(&self, e: pb::MspDevicesMoved) -> Change {
        Change::in_transaction(move |tx| Box::pin(async move { moved(tx, &e).await }))
    }

    /// Every registration the portal held is removed, and named in the receipt.
    fn removing(&self, ids: &str, uploads: &str) -> String {
        format!(
            "removed AS ( \
               DELETE FROM customer.portal_devices p \
               USING UNNEST({ids}::text[], {uploads}::uuid[]) AS d (device_id, upload_id) \
               WHERE p.device_id = d.device_id AND p.upload_id = d.upload_id RETURNING p.device_id)"
        )
    }
}

async fn uploaded(tx: &mut PgConnection, e: &pb::DevicesUploaded) -> Result<(), ApplyError> {
    KnoxId::parse(&e.target_knox_id)
        .map_err(|m| ApplyError::Poison(format!("target_knox_id {m}")))?;
    let upload_id = uuid_field("upload_id", &e.upload_id)?;
    if copy_uploaded(tx, e, upload_id).await? {
        return Ok(());
    }
    let ids: Vec<&str> = e.devices.iter().map(|d| d.device_id.as_str()).collect();
    let kinds: Vec<i16> = e.devices.iter().map(|d| d.id_kind as i16).collect();
    let models: Vec<&str> = e.devices.iter().map(|d| d.model.as_str()).collect();
    sqlx::query!(
        "INSERT INTO customer.portal_devices \
             (holder_knox_id, device_id, upload_id, id_kind, model, reseller_id, uploaded_at) \
         SELECT $1, d.device_id, $2, d.id_kind, d.model, $3, $4 \
         FROM UNNEST($5::text[], $6::smallint[], $7::text[]) AS d (device_id, id_kind, model) \
         WHERE NOT EXISTS (SELECT 1 FROM customer.deleted_registrations x \
                           WHERE x.device_id = d.device_id AND x.upload_id = $2) \
         ON CONFLICT (device_id, upload_id) DO NOTHING",
        e.target_knox_id,
        upload_id,
        e.reseller_id,
        timestamp::from_proto(e.uploaded_at.as_ref()),
        &ids as &[&str],
        &kinds,
        &models as &[&str],
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The fast path of an upload part: its rows `COPY`ed into the portal under a savepoint,
/// at about half the per-row cost of the exact `INSERT … ON CONFLICT` statement (the
/// views' catch-up after a big upload, issue #12). Taken only when no deletion of the
/// upload was projected first (its tombstones must keep those devices out), and given up
/// (rolled back to the savepoint: `false`) when a row is there already: a move projected
/// before the upload, or a part applied again. Then the exact statement decides.
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
    let Some(at) = timestamp::copy_text(timestamp::from_proto(e.uploaded_at.as_ref())) else {
        return Ok(false);
    };
    let mut tail = Vec::new();
    tail.push(b'\t');
    push_copy_field(&mut tail, &e.reseller_id);
    tail.push(b'\t');
    tail.extend_from_slice(at.as_bytes());
    tail.push(b'\n');
    let mut head = Vec::new();
    push_copy_field(&mut head, &e.target_knox_id);
    head.push(b'\t');
    let upload = upload_id.to_string();
    let mut buf = Vec::with_capacity(e.devices.len() * 96);
    for d in &e.devices {
        buf.extend_from_slice(&head);
        push_uploaded_device(&mut buf, d, &upload);
        buf.extend_from_slice(&tail);
    }
    Ok(copy_unless_conflict(
        tx,
        "COPY customer.portal_devices \
         (holder_knox_id, device_id, upload_id, id_kind, model, reseller_id, uploaded_at) \
         FROM STDIN",
        buf,
    )
    .await?)
}

async fn moved(tx: &mut PgConnection, e: &pb::MspDevicesMoved) -> Result<(), ApplyError> {
    let holder = KnoxId::parse(&e.to_customer_knox_id)
        .map_err(|m| ApplyError::Poison(format!("to_customer_knox_id {m}")))?;
    // The portal does not show order numbers.
    let MovedColumns {
        device_ids,
        upload_ids,
        id_kinds,
        models,
        reseller_ids,
        uploaded_at,
        order_numbers: _,
    } = MovedColumns::of(e)?;
    // The devices now show at the customer they were moved to, and nowhere else; of two
    // moves, the later one (by `seq`) wins whatever order they arrive in. One statement
    // for the whole event.
    sqlx::query!(
        "INSERT INTO customer.portal_devices (holder_knox_id, device_id, upload_id, id_kind, \
             model, reseller_id, moved_by_msp, msp_id, move_seq, uploaded_at) \
         SELECT $1, d.device_id, d.upload_id, d.id_kind, d.model, d.reseller_id, true, $2, $3, d.uploaded_at \
         FROM UNNEST($4::text[], $5::uuid[], $6::smallint[], $7::text[], $8::text[], $9::timestamptz[]) \
             AS d (device_id, upload_id, id_kind, model, reseller_id, uploaded_at) \
         WHERE NOT EXISTS (SELECT 1 FROM customer.deleted_registrations x \
                           WHERE x.device_id = d.device_id AND x.upload_id = d.upload_id) \
         ON CONFLICT (device_id, upload_id) DO UPDATE SET holder_knox_id = EXCLUDED.holder_knox_id, \
         moved_by_msp = true, msp_id = EXCLUDED.msp_id, move_seq = EXCLUDED.move_seq \
         WHERE customer.portal_devices.move_seq < EXCLUDED.move_seq",
        holder.as_str(),
        e.msp_id,
        e.seq,
        &device_ids,
        &upload_ids,
        &id_kinds,
        &models,
        &reseller_ids,
        &uploaded_at,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use reseller_kit::events::ReceivedEvent;
    use reseller_kit::inbox::{self, ConsumerSpec};
    use reseller_kit::test_events::{self, DEVICE, MODEL, deleted, moved, uploaded_to_customer};
    use sqlx::PgPool;
    use time::OffsetDateTime;
    use uuid::Uuid;

    use super::CustomerPortal;

    fn spec() -> ConsumerSpec {
        ConsumerSpec {
            name: crate::PORTAL_CONSUMER.into(),
            schema: crate::SCHEMA,
            filter_subject: reseller_kit::subjects::ALL_EVENTS.into(),
        }
    }

    async fn apply(pool: &PgPool, payload: reseller_proto::v1::event::Payload) {
        test_events::apply(spec(), pool, CustomerPortal, payload).await;
    }

    async fn shown(pool: &PgPool) -> i64 {
        sqlx::query_scalar!(
            r#"SELECT count(*) AS "shown!" FROM customer.portal_devices WHERE device_id = $1"#,
            DEVICE,
        )
        .fetch_one(pool)
        .await
        .unwrap()
    }

    /// An upload part is `COPY`ed when nothing stands in its way, and otherwise the exact
    /// statement applies it: after a move projected first (the move's row stays), again
    /// (a part applied twice), and after the device's deletion (never shown).
    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn an_upload_part_is_applied_whatever_was_projected_before_it(pool: PgPool) {
        let upload = Uuid::now_v7();
        apply(&pool, uploaded_to_customer(upload)).await;
        test_events::assert_upload_time_stored(&pool, "customer.portal_devices", upload).await;
        let (model, moved_by_msp): (String, bool) = sqlx::query_as(
            "SELECT model, moved_by_msp FROM customer.portal_devices WHERE device_id = $1",
        )
        .bind(DEVICE)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((model.as_str(), moved_by_msp), (MODEL, false));
        // The same part again, as another event: its row is there, nothing changes.
        apply(&pool, uploaded_to_customer(upload)).await;
        assert_eq!(shown(&pool).await, 1);

        // A move projected before its upload: the upload keeps the move's row.
        let moved_first = Uuid::now_v7();
        apply(&pool, moved(moved_first)).await;
        apply(&pool, uploaded_to_customer(moved_first)).await;
        let moved_by_msp: bool = sqlx::query_scalar(
            "SELECT moved_by_msp FROM customer.portal_devices WHERE upload_id = $1",
        )
        .bind(moved_first)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(
            moved_by_msp,
            "the upload overwrote the move projected before it"
        );

        // A deletion projected before its upload: the device never shows.
        let deleted_first = Uuid::now_v7();
        apply(&pool, deleted(deleted_first, DEVICE)).await;
        apply(&pool, uploaded_to_customer(deleted_first)).await;
        let rows: i64 =
            sqlx::query_scalar("SELECT count(*) FROM customer.portal_devices WHERE upload_id = $1")
                .bind(deleted_first)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(
            rows, 0,
            "a device deleted before its upload was projected is shown"
        );
    }

    /// Two replicas apply an upload part (its row `COPY`ed) and the device's deletion at
    /// the same time: the deleted device must not stay.
    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn an_upload_copied_beside_its_deletion_never_shows_the_device(pool: PgPool) {
        let upload = Uuid::now_v7();
        test_events::race_upload_with_deletion(
            spec(),
            &pool,
            CustomerPortal,
            uploaded_to_customer(upload),
            deleted(upload, DEVICE),
        )
        .await;
        assert_eq!(shown(&pool).await, 0, "a deleted device is shown");
    }

    /// Two replicas apply a move and the moved device's deletion at the same time: the
    /// move checks for a tombstone while the deletion deletes the rows it can see, and
    /// neither sees the other's uncommitted write. The deleted device must not stay.
    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn a_move_applied_beside_the_deletion_never_keeps_the_device(pool: PgPool) {
        let upload = Uuid::now_v7();
        // One replica is applying the move, the transaction still open (as the consumer
        // opens it).
        let mut moving = pool.begin_with(inbox::BEGIN_SERIALIZABLE).await.unwrap();
        let move_event = ReceivedEvent {
            id: Uuid::now_v7(),
            occurred_at: OffsetDateTime::now_utc(),
            payload: moved(upload),
        };
        inbox::apply_uncommitted(&spec(), &CustomerPortal, &mut moving, &move_event)
            .await
            .unwrap_or_else(|failure| panic!("move not applied: {failure:?}"));
        // The other applies the deletion and commits first.
        apply(&pool, deleted(upload, DEVICE)).await;
        // The move's commit is refused (the consumer then applies it again) or, had it
        // won, the deletion would have been the one to run again: either way the device
        // is not shown once both are through.
        if moving.commit().await.is_err() {
            apply(&pool, moved(upload)).await;
        }
        assert_eq!(shown(&pool).await, 0, "a deleted device is shown");
    }
}
