//! Uploads. Every upload is one transaction, in one of two ways:
//!
//! - **Fast path.** Most uploads hold no device twice and none that is registered
//!   already. Their rows stream by `COPY` straight into `device.registrations`, under a
//!   savepoint, as fast as PostgreSQL can load a table; the partial unique index on live
//!   devices checks both rules (and a concurrent upload of the same device) as a side
//!   effect. The rows are also written to a [`Spool`] file, from which the events are
//!   built afterwards.
//! - **Exact path.** When that `COPY` hits a unique violation it is rolled back to the
//!   savepoint, the spooled rows are `COPY`ed into a temporary staging table, and one
//!   statement ranks duplicates, registers the first of each device unless it is
//!   registered already (`ON CONFLICT DO NOTHING`), and records every rejection. Events
//!   are then built from a cursor over what it registered.
//!
//! The statements on the upload's temporary tables (`upload_staging`, `upload_accepted`,
//! the cursor over it) and the savepoints stay unchecked strings, `register_staged.sql`
//! included: sqlx checks a query against the schema database, which has no temporary
//! tables. Every other statement here is checked (`sqlx::query!` and friends).
//!
//! Either way, events hold [`EVENT_PART_SIZE`] devices each and are built in bounded
//! batches, so memory does not grow with the upload. The README's Benchmarks section
//! has the measurements behind this design.

use futures::{Stream, StreamExt};
use reseller_kit::ApiError;
use reseller_kit::device_id::DeviceIdKind;
use reseller_kit::ids::ResellerId;
use reseller_kit::sql::push_copy_field;
use sqlx::{Connection, PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::spool::{Spool, SpoolReader, SpooledRow};
use super::{OUTBOX, Repository};
use crate::domain::{
    EVENT_PART_SIZE, MAX_INLINE_ECHOES, ParsedBatch, Rejection, RejectionReason, Target, Upload,
    UploadFilter, UploadHeader, UploadRow, part_count,
};
use crate::events;

/// Bytes buffered before they are sent to `COPY`.
const COPY_CHUNK: usize = 256 * 1024;
/// Events written to the outbox per statement (and rows read per batch: this many
/// events' worth).
const EVENTS_PER_INSERT: usize = 16;
/// Rows read back per batch.
const ROWS_PER_BATCH: usize = EVENT_PART_SIZE * EVENTS_PER_INSERT;
/// The exact path's read of what it registered, [`ROWS_PER_BATCH`] rows at a time
/// (`FETCH` takes no parameter; a unit test keeps the two equal).
const FETCH_ACCEPTED: &str = "FETCH 16000 FROM accepted_cursor";
/// SQLSTATEs on which the fast path gives way to the exact path: a unique violation (a
/// device in the upload twice, or registered already), and a deadlock (two concurrent
/// uploads sharing devices in different orders; the exact path inserts in device order,
/// so it cannot deadlock with itself).
const FALL_BACK_ON: [&str; 2] = ["23505", DEADLOCK];
/// PostgreSQL's SQLSTATE for a deadlock.
const DEADLOCK: &str = "40P01";

/// Why an upload did not complete.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The request stream failed or broke a rule mid-way; nothing was written.
    #[error(transparent)]
    Request(#[from] ApiError),
    /// The database failed; nothing was written.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The spool file failed (e.g. the disk is full); nothing was written.
    #[error("the upload spool failed: {0}")]
    Spool(#[from] std::io::Error),
}

impl From<UploadError> for ApiError {
    fn from(err: UploadError) -> Self {
        match err {
            UploadError::Request(e) => e,
            UploadError::Database(e) => e.into(),
            UploadError::Spool(e) => {
                ApiError::Internal(anyhow::Error::new(e).context("upload spool"))
            }
        }
    }
}

/// The fixed tail of every registration line of one upload: `\t<reseller>\t<upload>\t<target>\n`.
fn registration_line_tail(reseller: &ResellerId, upload_id: Uuid, target: &Target) -> Vec<u8> {
    let mut tail = vec![b'\t'];
    push_copy_field(&mut tail, reseller.as_str());
    tail.push(b'\t');
    push_copy_field(&mut tail, &upload_id.to_string());
    tail.push(b'\t');
    push_copy_field(&mut tail, target.knox_id.as_str());
    tail.push(b'\n');
    tail
}

/// The fast path's `COPY`: its columns in [`write_registration_lines`]'s order.
const COPY_REGISTRATIONS: &str = "COPY device.registrations \
     (device_id, id_kind, model, secondary_of, reseller_id, upload_id, target_knox_id) FROM STDIN";

/// Appends the `device.registrations` lines of one device: its own (`secondary_of`
/// NULL), then one per secondary identifier, naming the device.
fn write_registration_lines(buf: &mut Vec<u8>, row: &UploadRow, tail: &[u8]) {
    let device_id = row.device.as_str();
    write_identifier_line(buf, device_id, row.device.kind(), &row.model, None, tail);
    for id in &row.secondary {
        write_identifier_line(
            buf,
            id.as_str(),
            id.kind(),
            &row.model,
            Some(device_id),
            tail,
        );
    }
}

/// Appends one registration line (see [`REGISTRATION_COLUMNS`]).
fn write_identifier_line(
    buf: &mut Vec<u8>,
    identifier: &str,
    kind: DeviceIdKind,
    model: &str,
    secondary_of: Option<&str>,
    tail: &[u8],
) {
    push_copy_field(buf, identifier);
    buf.push(b'\t');
    buf.extend_from_slice(kind.as_i16().to_string().as_bytes());
    buf.push(b'\t');
    push_copy_field(buf, model);
    buf.push(b'\t');
    match secondary_of {
        Some(device_id) => push_copy_field(buf, device_id),
        None => buf.extend_from_slice(b"\\N"),
    }
    buf.extend_from_slice(tail);
}

/// The exact path's `COPY` into its staging table: the columns in
/// [`write_staging_lines`]'s order.
const COPY_STAGING: &str =
    "COPY upload_staging (idx, pos, device_id, id_kind, model, secondary_of) FROM STDIN";

/// Appends the `upload_staging` lines of one spooled device: its own (`pos` 0) and one
/// per secondary identifier (`pos` 1 to 4, naming the device).
fn write_staging_lines(buf: &mut Vec<u8>, row: &SpooledRow) {
    let index = row.index.to_string();
    let identifiers = std::iter::once((&row.device_id, row.kind))
        .chain(row.secondary.iter().map(|(id, kind)| (id, *kind)));
    for (pos, (identifier, kind)) in identifiers.enumerate() {
        buf.extend_from_slice(index.as_bytes());
        buf.push(b'\t');
        buf.extend_from_slice(pos.to_string().as_bytes());
        buf.push(b'\t');
        push_copy_field(buf, identifier);
        buf.push(b'\t');
        buf.extend_from_slice(kind.as_i16().to_string().as_bytes());
        buf.push(b'\t');
        push_copy_field(buf, &row.model);
        buf.push(b'\t');
        if pos == 0 {
            buf.extend_from_slice(b"\\N");
        } else {
            push_copy_field(buf, &row.device_id);
        }
        buf.push(b'\n');
    }
}

/// A `device.uploads` row.
struct UploadRecord {
    upload_id: Uuid,
    target_knox_id: String,
    order_number: String,
    client_upload_id: Option<String>,
    uploaded_at: OffsetDateTime,
    accepted_count: i64,
    rejected_count: i64,
    actor: String,
}

impl UploadRecord {
    /// The upload with the `rejections` given (the first ones, or none in a list);
    /// `rejections_truncated` says whether the upload has more.
    fn with_rejections(self, rejections: Vec<Rejection>) -> Upload {
        Upload {
            upload_id: self.upload_id,
            target_knox_id: self.target_knox_id,
            order_number: self.order_number,
            client_upload_id: self.client_upload_id,
            uploaded_at: self.uploaded_at,
            accepted_count: self.accepted_count,
            rejected_count: self.rejected_count,
            actor: self.actor,
            rejections_truncated: (rejections.len() as i64) < self.rejected_count,
            rejections,
        }
    }
}

impl Repository {
    /// The upload a reseller made with `client_upload_id`, if any.
    ///
    /// # Errors
    /// Database errors.
    pub async fn upload_by_client_id(
        &self,
        reseller: &ResellerId,
        client_upload_id: &str,
    ) -> Result<Option<Upload>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        Self::upload_by_client_id_in(&mut conn, reseller, client_upload_id).await
    }

    /// [`Self::upload_by_client_id`] on a connection the caller holds.
    async fn upload_by_client_id_in(
        conn: &mut PgConnection,
        reseller: &ResellerId,
        client_upload_id: &str,
    ) -> Result<Option<Upload>, sqlx::Error> {
        let id = sqlx::query_scalar!(
            "SELECT upload_id FROM device.uploads WHERE reseller_id = $1 AND client_upload_id = $2",
            reseller.as_str(),
            client_upload_id,
        )
        .fetch_optional(&mut *conn)
        .await?;
        match id {
            Some(id) => Self::upload_in(conn, reseller, id).await,
            None => Ok(None),
        }
    }

    /// One of a reseller's uploads with its rejections; `None` when unknown or another
    /// reseller's.
    ///
    /// # Errors
    /// Database errors.
    pub async fn upload(
        &self,
        reseller: &ResellerId,
        upload_id: Uuid,
    ) -> Result<Option<Upload>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        Self::upload_in(&mut conn, reseller, upload_id).await
    }

    async fn upload_in(
        conn: &mut PgConnection,
        reseller: &ResellerId,
        upload_id: Uuid,
    ) -> Result<Option<Upload>, sqlx::Error> {
        let Some(record) = sqlx::query_as!(
            UploadRecord,
            r#"SELECT upload_id, target_knox_id, order_number, client_upload_id, uploaded_at,
                    accepted_count, rejected_count, coalesce(actor, reseller_id) AS "actor!"
             FROM device.uploads WHERE upload_id = $1 AND reseller_id = $2"#,
            upload_id,
            reseller.as_str(),
        )
        .fetch_optional(&mut *conn)
        .await?
        else {
            return Ok(None);
        };
        let rejections = Self::rejections_in(conn, upload_id, -1, MAX_INLINE_ECHOES as i64).await?;
        Ok(Some(record.with_rejections(rejections)))
    }

    /// A page of a reseller's uploads, newest first, as summaries (no rejections):
    /// up to `limit` older than `before` (`(uploaded_at, upload_id)`, `None` for the
    /// first page), to `target` and with `order_number` when given.
    ///
    /// # Errors
    /// Database errors.
    pub async fn uploads(
        &self,
        reseller: &ResellerId,
        filter: &UploadFilter,
        before: Option<(OffsetDateTime, Uuid)>,
        limit: i64,
    ) -> Result<Vec<Upload>, sqlx::Error> {
        // Each filter applies only when given (a NULL parameter switches it off); the
        // keyset condition is a row comparison the index `uploads_by_reseller_newest` serves.
        let records = sqlx::query_as!(
            UploadRecord,
            r#"SELECT upload_id, target_knox_id, order_number, client_upload_id, uploaded_at,
                    accepted_count, rejected_count, coalesce(actor, reseller_id) AS "actor!"
             FROM device.uploads
             WHERE reseller_id = $1
               AND ($2::text IS NULL OR target_knox_id = $2)
               AND ($3::text IS NULL OR order_number = $3)
               AND ($4::timestamptz IS NULL OR (uploaded_at, upload_id) < ($4, $5))
             ORDER BY uploaded_at DESC, upload_id DESC LIMIT $6"#,
            reseller.as_str(),
            filter.target.as_ref().map(|k| k.as_str()),
            filter.order_number.as_deref(),
            before.map(|(at, _)| at),
            before.map(|(_, id)| id),
            limit,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(records
            .into_iter()
            .map(|record| record.with_rejections(Vec::new()))
            .collect())
    }

    /// Up to `limit` rejections of an upload with an index above `after`, by index.
    async fn rejections_in(
        conn: &mut PgConnection,
        upload_id: Uuid,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Rejection>, sqlx::Error> {
        let rows = sqlx::query!(
            "SELECT idx, device_id, reason, message FROM device.upload_rejections
             WHERE upload_id = $1 AND idx > $2 ORDER BY idx LIMIT $3",
            upload_id,
            after,
            limit,
        )
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| Rejection {
                index: row.idx,
                device_id: row.device_id,
                reason: RejectionReason::from_i16(row.reason),
                message: row.message,
            })
            .collect())
    }

    /// A page of one of a reseller's uploads' rejections: up to `limit` with an index
    /// above `after` (-1 for the first page), by index; `None` when the upload is unknown
    /// or another reseller's.
    ///
    /// # Errors
    /// Database errors.
    pub async fn upload_rejections(
        &self,
        reseller: &ResellerId,
        upload_id: Uuid,
        after: i64,
        limit: i64,
    ) -> Result<Option<Vec<Rejection>>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let known = sqlx::query_scalar!(
            "SELECT 1 AS known FROM device.uploads WHERE upload_id = $1 AND reseller_id = $2",
            upload_id,
            reseller.as_str(),
        )
        .fetch_optional(&mut *conn)
        .await?;
        if known.is_none() {
            return Ok(None);
        }
        Self::rejections_in(&mut conn, upload_id, after, limit)
            .await
            .map(Some)
    }

    /// Runs one upload in one transaction: nothing is written unless all of it is. The
    /// upload records `actor` (who acted for `reseller`) and its events carry it; besides
    /// the `devices_uploaded` parts of what it accepted, it writes one `upload_recorded`
    /// with its counts, even when it accepted nothing (never for a validation).
    ///
    /// A concurrent retry with the same client upload ID waits for the first and then
    /// returns its result.
    ///
    /// # Errors
    /// [`UploadError::Request`] when `items` fails; [`UploadError::Database`] or
    /// [`UploadError::Spool`] otherwise.
    pub async fn ingest(
        &self,
        reseller: &ResellerId,
        actor: &str,
        header: &UploadHeader,
        target: &Target,
        items: impl Stream<Item = Result<ParsedBatch, ApiError>> + Unpin,
    ) -> Result<Upload, UploadError> {
        let mut conn = self.pool.acquire().await?;
        let result = self
            .ingest_on(&mut conn, reseller, actor, header, target, items)
            .await;
        if result.is_err() {
            // A `COPY` cut short (the request stream failed after PostgreSQL had already
            // refused a row) can leave sqlx out of step with the server: never pool such
            // a connection again.
            conn.close_on_drop();
        }
        result
    }

    async fn ingest_on(
        &self,
        conn: &mut PgConnection,
        reseller: &ResellerId,
        actor: &str,
        header: &UploadHeader,
        target: &Target,
        items: impl Stream<Item = Result<ParsedBatch, ApiError>> + Unpin,
    ) -> Result<Upload, UploadError> {
        let started = std::time::Instant::now();
        let upload_id = Uuid::now_v7();
        let mut tx = conn.begin().await?;
        // The upload row comes first: a concurrent retry with the same client upload ID
        // blocks here until this transaction ends, then finds the finished upload.
        let inserted = sqlx::query_scalar!(
            "INSERT INTO device.uploads (upload_id, reseller_id, target_knox_id, target_kind,
               order_number, client_upload_id, uploaded_at, accepted_count, rejected_count,
               actor)
             VALUES ($1, $2, $3, $4, $5, $6, now(), 0, 0, $7)
             ON CONFLICT DO NOTHING RETURNING uploaded_at",
            upload_id,
            reseller.as_str(),
            target.knox_id.as_str(),
            target.kind as i16,
            &header.order_number,
            header.client_upload_id.as_deref(),
            actor,
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(uploaded_at) = inserted else {
            tx.rollback().await?;
            let first = match &header.client_upload_id {
                Some(id) => Self::upload_by_client_id_in(conn, reseller, id).await?,
                None => None,
            };
            return first.ok_or(UploadError::Database(sqlx::Error::RowNotFound));
        };

        let (invalid, spool, copied) =
            Self::copy_registrations(&mut tx, reseller, upload_id, target, items).await?;
        let streamed_at = std::time::Instant::now();
        let fast_path = copied.is_some();
        // The fast path keeps the spool to build the events from; the exact path stages
        // it and builds them from what it registered.
        let (accepted, spool) = match copied {
            Some(count) => {
                sqlx::query("RELEASE SAVEPOINT copy_registrations")
                    .execute(&mut *tx)
                    .await?;
                (count, Some(spool))
            }
            None => {
                sqlx::query("ROLLBACK TO SAVEPOINT copy_registrations")
                    .execute(&mut *tx)
                    .await?;
                let count =
                    Self::register_exactly(&mut tx, reseller, upload_id, target, spool).await?;
                (count, None)
            }
        };
        Self::record_invalid(&mut tx, upload_id, &invalid).await?;
        let registered_at = std::time::Instant::now();
        let context = events::UploadContext {
            upload_id,
            reseller_id: reseller.as_str(),
            actor,
            target,
            order_number: &header.order_number,
            uploaded_at,
            part_count: part_count(accepted as usize) as u32,
            accepted_count: accepted,
        };
        match spool {
            Some(spool) => Self::publish_spooled(&mut tx, &context, spool).await?,
            None => Self::publish_accepted(&mut tx, &context).await?,
        }
        let rejected_by_reason = sqlx::query!(
            r#"SELECT reason, count(*) AS "count!" FROM device.upload_rejections
               WHERE upload_id = $1 GROUP BY reason"#,
            upload_id,
        )
        .fetch_all(&mut *tx)
        .await?;
        let rejected: i64 = rejected_by_reason.iter().map(|r| r.count).sum();
        sqlx::query!(
            "UPDATE device.uploads SET accepted_count = $2, rejected_count = $3 WHERE upload_id = $1",
            upload_id,
            accepted,
            rejected,
        )
        .execute(&mut *tx)
        .await?;
        if !header.validate_only {
            // After the parts: only now is the rejected count known. A validation writes
            // it not at all (it is rolled back below anyway).
            OUTBOX
                .enqueue(&mut tx, &[events::upload_recorded(&context, rejected)])
                .await?;
        }
        let upload = Self::upload_in(&mut tx, reseller, upload_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        if header.validate_only {
            // Every rule ran, on the real tables and against concurrent uploads, exactly
            // as for the upload itself; nothing of it is kept: no registration, no
            // upload row, no event.
            tx.rollback().await?;
            tracing::info!(%upload_id, accepted, rejected, "upload validated, nothing recorded");
            return Ok(upload);
        }
        tx.commit().await?;
        ::metrics::counter!(reseller_kit::metrics::UPLOAD_ACCEPTED).increment(accepted as u64);
        for row in &rejected_by_reason {
            let reason = RejectionReason::from_i16(row.reason).name();
            ::metrics::counter!(reseller_kit::metrics::UPLOAD_REJECTED, "reason" => reason)
                .increment(row.count as u64);
        }
        tracing::info!(
            %upload_id,
            accepted,
            rejected,
            fast_path,
            stream_ms = (streamed_at - started).as_millis() as u64,
            register_ms = (registered_at - streamed_at).as_millis() as u64,
            events_ms = registered_at.elapsed().as_millis() as u64,
            "upload registered"
        );
        Ok(upload)
    }

    /// The fast path: streams the upload's valid rows by `COPY` into
    /// `device.registrations` under the savepoint `copy_registrations`, and into a spool.
    /// Returns the rows that failed validation, the spool, and how many devices were
    /// registered, or `None` when a device is in the upload twice or registered already,
    /// or on a deadlock (the transaction is then failed until the caller rolls back to the
    /// savepoint).
    async fn copy_registrations(
        tx: &mut PgConnection,
        reseller: &ResellerId,
        upload_id: Uuid,
        target: &Target,
        mut items: impl Stream<Item = Result<ParsedBatch, ApiError>> + Unpin,
    ) -> Result<(Vec<Rejection>, Spool, Option<i64>), UploadError> {
        let mut spool = Spool::create().await?;
        sqlx::query("SAVEPOINT copy_registrations")
            .execute(&mut *tx)
            .await?;
        let tail = registration_line_tail(reseller, upload_id, target);
        let mut invalid = Vec::new();
        // Every device of the upload, valid or not: an upload of none is refused.
        let mut devices: u64 = 0;
        // Valid devices: what the fast path registers (COPY counts rows, and a device
        // with secondary identifiers has several).
        let mut valid: i64 = 0;
        let mut copy = tx.copy_in_raw(COPY_REGISTRATIONS).await?;
        let mut buf = Vec::with_capacity(COPY_CHUNK + 4096);
        while let Some(item) = items.next().await {
            let batch = match item {
                Ok(batch) => batch,
                Err(err) => {
                    let _ = copy.abort("the upload stream failed").await;
                    return Err(err.into());
                }
            };
            devices += (batch.rows.len() + batch.rejected.len()) as u64;
            valid += batch.rows.len() as i64;
            invalid.extend(batch.rejected);
            for row in &batch.rows {
                write_registration_lines(&mut buf, row, &tail);
            }
            if let Err(err) = spool.append(&batch.rows).await {
                let _ = copy.abort("the upload spool failed").await;
                return Err(err.into());
            }
            if buf.len() >= COPY_CHUNK {
                copy.send(std::mem::take(&mut buf)).await?;
                buf.reserve(COPY_CHUNK + 4096);
            }
        }
        if devices == 0 {
            let _ = copy.abort("the upload holds no devices").await;
            return Err(ApiError::invalid(
                "batch",
                "the upload holds no devices; send at least one device after the header",
            )
            .into());
        }
        if !buf.is_empty() {
            copy.send(buf).await?;
        }
        match copy.finish().await {
            Ok(_rows) => Ok((invalid, spool, Some(valid))),
            Err(sqlx::Error::Database(err))
                if err
                    .code()
                    .is_some_and(|code| FALL_BACK_ON.contains(&code.as_ref())) =>
            {
                tracing::debug!(%upload_id, error = %err, "upload falls back to the exact path");
                Ok((invalid, spool, None))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// The exact path: stages the spooled rows, registers the first of each device
    /// unless it is registered already, and records every other as rejected, set-based.
    /// Returns how many were registered (listed in `upload_accepted`).
    async fn register_exactly(
        tx: &mut PgConnection,
        reseller: &ResellerId,
        upload_id: Uuid,
        target: &Target,
        spool: Spool,
    ) -> Result<i64, UploadError> {
        // One big set-based statement: JIT compilation only costs here, and the duplicate
        // ranking's sort should stay in memory.
        sqlx::raw_sql("SET LOCAL jit = off; SET LOCAL work_mem = '256MB'")
            .execute(&mut *tx)
            .await?;
        // A row per identifier: `pos` 0 is the device's own, 1 to 4 its secondary ones.
        sqlx::query(
            "CREATE TEMP TABLE upload_staging (idx bigint, pos smallint, device_id text, id_kind smallint, \
             model text, secondary_of text) ON COMMIT DROP",
        )
        .execute(&mut *tx)
        .await?;
        {
            let mut reader = spool.into_reader().await?;
            let mut copy = tx.copy_in_raw(COPY_STAGING).await?;
            loop {
                let rows = match reader.next_batch(ROWS_PER_BATCH).await {
                    Ok(rows) => rows,
                    Err(err) => {
                        let _ = copy.abort("the upload spool failed").await;
                        return Err(err.into());
                    }
                };
                if rows.is_empty() {
                    break;
                }
                let mut buf = Vec::with_capacity(COPY_CHUNK + 4096);
                for row in &rows {
                    write_staging_lines(&mut buf, row);
                }
                copy.send(buf).await?;
            }
            copy.finish().await?;
        }
        sqlx::query(
            "CREATE TEMP TABLE upload_accepted (device_id text, id_kind smallint, model text, \
             secondary_ids text[]) ON COMMIT DROP",
        )
        .execute(&mut *tx)
        .await?;
        // A concurrent upload on the fast path inserts in its own order and can deadlock
        // with this one; whichever PostgreSQL picks as the victim, the upload still
        // completes: the fast path falls back to here, and here retries.
        let mut attempt = 1;
        loop {
            sqlx::query("SAVEPOINT register_exactly")
                .execute(&mut *tx)
                .await?;
            match Self::register_staged(tx, reseller, upload_id, target).await {
                Ok(()) => break,
                Err(sqlx::Error::Database(err))
                    if err.code().as_deref() == Some(DEADLOCK) && attempt < 5 =>
                {
                    tracing::debug!(%upload_id, attempt, "upload deadlocked; retrying");
                    sqlx::query("ROLLBACK TO SAVEPOINT register_exactly")
                        .execute(&mut *tx)
                        .await?;
                    attempt += 1;
                }
                Err(err) => return Err(err.into()),
            }
        }
        Ok(sqlx::query_scalar("SELECT count(*) FROM upload_accepted")
            .fetch_one(&mut *tx)
            .await?)
    }

    /// One statement over `upload_staging` (`register_staged.sql`): registers every
    /// device that is neither a repeat within the upload nor registered already, with all
    /// of its identifiers, into `upload_accepted`, and rejects the others. A device a
    /// concurrent upload beat to some of its identifiers is rejected, and the rows it did
    /// get are deleted again, so a device is registered whole or not at all.
    async fn register_staged(
        tx: &mut PgConnection,
        reseller: &ResellerId,
        upload_id: Uuid,
        target: &Target,
    ) -> Result<(), sqlx::Error> {
        let partial: Vec<String> = sqlx::query_scalar(include_str!("register_staged.sql"))
            .bind(reseller.as_str())
            .bind(upload_id)
            .bind(target.knox_id.as_str())
            .bind(RejectionReason::DuplicateInUpload.as_i16())
            .bind(RejectionReason::AlreadyRegistered.as_i16())
            .bind(RejectionReason::DuplicateInUpload.message_stem())
            .bind(RejectionReason::AlreadyRegistered.message_stem())
            .fetch_all(&mut *tx)
            .await?;
        if !partial.is_empty() {
            sqlx::query!(
                "DELETE FROM device.registrations WHERE upload_id = $1 AND deleted_at IS NULL
                 AND coalesce(secondary_of, device_id) = ANY($2)",
                upload_id,
                &partial,
            )
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    /// Records the rows that failed validation (they were never copied).
    async fn record_invalid(
        tx: &mut PgConnection,
        upload_id: Uuid,
        invalid: &[Rejection],
    ) -> Result<(), sqlx::Error> {
        if invalid.is_empty() {
            return Ok(());
        }
        let idx: Vec<i64> = invalid.iter().map(|r| r.index).collect();
        let ids: Vec<&str> = invalid.iter().map(|r| r.device_id.as_str()).collect();
        let reasons: Vec<i16> = invalid.iter().map(|r| r.reason.as_i16()).collect();
        let messages: Vec<&str> = invalid.iter().map(|r| r.message.as_str()).collect();
        sqlx::query!(
            "INSERT INTO device.upload_rejections (upload_id, idx, device_id, reason, message)
             SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::smallint[], $5::text[])",
            upload_id,
            &idx,
            &ids as &[&str],
            &reasons,
            &messages as &[&str],
        )
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Fast path: writes the `devices_uploaded` events of every spooled row (all of them
    /// were registered), [`ROWS_PER_BATCH`] rows at a time.
    async fn publish_spooled(
        tx: &mut PgConnection,
        context: &events::UploadContext<'_>,
        spool: Spool,
    ) -> Result<(), UploadError> {
        let mut reader: SpoolReader = spool.into_reader().await?;
        let mut part = 0;
        loop {
            let rows = reader.next_batch(ROWS_PER_BATCH).await?;
            if rows.is_empty() {
                return Ok(());
            }
            let devices = rows
                .into_iter()
                .map(|row| events::AcceptedDevice {
                    device_id: row.device_id,
                    kind: row.kind,
                    model: row.model,
                    secondary_ids: row.secondary.into_iter().map(|(id, _)| id).collect(),
                })
                .collect();
            Self::enqueue_parts(tx, context, &mut part, devices).await?;
        }
    }

    /// Exact path: writes the `devices_uploaded` events of the devices in
    /// `upload_accepted`, read through a cursor [`ROWS_PER_BATCH`] rows at a time.
    async fn publish_accepted(
        tx: &mut PgConnection,
        context: &events::UploadContext<'_>,
    ) -> Result<(), UploadError> {
        sqlx::query(
            "DECLARE accepted_cursor NO SCROLL CURSOR FOR SELECT device_id, id_kind, model, secondary_ids FROM upload_accepted",
        )
        .execute(&mut *tx)
        .await?;
        let mut part = 0;
        loop {
            let rows = sqlx::query(FETCH_ACCEPTED).fetch_all(&mut *tx).await?;
            if rows.is_empty() {
                break;
            }
            let devices = rows
                .iter()
                .map(|r| {
                    Ok(events::AcceptedDevice {
                        device_id: r.try_get("device_id")?,
                        kind: DeviceIdKind::from_i16(r.try_get("id_kind")?)
                            .unwrap_or(DeviceIdKind::Serial),
                        model: r.try_get("model")?,
                        secondary_ids: r.try_get("secondary_ids")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            Self::enqueue_parts(tx, context, &mut part, devices).await?;
        }
        sqlx::query("CLOSE accepted_cursor")
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// Writes `devices` as events of [`EVENT_PART_SIZE`] devices, numbered from `*part`.
    async fn enqueue_parts(
        tx: &mut PgConnection,
        context: &events::UploadContext<'_>,
        part: &mut u32,
        devices: Vec<events::AcceptedDevice>,
    ) -> Result<(), sqlx::Error> {
        let mut events = Vec::with_capacity(devices.len().div_ceil(EVENT_PART_SIZE));
        let mut devices = devices.into_iter().peekable();
        while devices.peek().is_some() {
            let chunk: Vec<_> = devices.by_ref().take(EVENT_PART_SIZE).collect();
            events.push(events::devices_uploaded(context, *part, chunk));
            *part += 1;
        }
        OUTBOX.enqueue(tx, &events).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reseller_kit::device_id::DeviceId;

    #[test]
    fn the_accepted_rows_are_read_a_batch_at_a_time() {
        assert_eq!(
            FETCH_ACCEPTED,
            format!("FETCH {ROWS_PER_BATCH} FROM accepted_cursor")
        );
    }

    #[test]
    fn staging_lines_escape_the_model_and_list_secondary_identifiers() {
        let mut buf = Vec::new();
        let row = SpooledRow {
            index: 7,
            device_id: "ABC-1".into(),
            kind: DeviceIdKind::Serial,
            model: "Tab\\Model\tX".into(),
            secondary: vec![("490154203237518".into(), DeviceIdKind::Imei)],
        };
        write_staging_lines(&mut buf, &row);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "7\t0\tABC-1\t3\tTab\\\\Model\\tX\t\\N\n\
             7\t1\t490154203237518\t1\tTab\\\\Model\\tX\tABC-1\n"
        );
    }

    #[test]
    fn registration_lines_carry_the_upload_and_name_the_device_of_a_secondary_id() {
        let reseller = ResellerId::parse("reseller-1").unwrap();
        let upload_id = Uuid::nil();
        let target = Target {
            knox_id: reseller_kit::ids::KnoxId::parse("900000000001").unwrap(),
            kind: 1,
        };
        let tail = registration_line_tail(&reseller, upload_id, &target);
        let mut buf = Vec::new();
        let row = UploadRow {
            index: 0,
            device: DeviceId::parse("abc-1", None).unwrap(),
            model: "M\\1".into(),
            secondary: vec![DeviceId::parse("49-015420-323751-8", None).unwrap()],
        };
        write_registration_lines(&mut buf, &row, &tail);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "ABC-1\t3\tM\\\\1\t\\N\treseller-1\t00000000-0000-0000-0000-000000000000\t900000000001\n\
             490154203237518\t1\tM\\\\1\tABC-1\treseller-1\t00000000-0000-0000-0000-000000000000\t900000000001\n"
        );
    }
}
