//! Uploads: rows stream into a temporary staging table by `COPY`, then one statement
//! ranks duplicates, registers the first of each device unless it is registered already,
//! and records every rejection. Events are built from a cursor, 1,000 devices at a time,
//! so memory does not grow with the upload.

use futures::{Stream, StreamExt};
use reseller_kit::ApiError;
use reseller_kit::device_id::DeviceIdKind;
use reseller_kit::ids::ResellerId;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{OUTBOX, Repository};
use crate::domain::{
    EVENT_PART_SIZE, ParsedBatch, Rejection, RejectionReason, Target, Upload, UploadHeader,
    UploadRow, part_count,
};
use crate::events;

/// Bytes buffered before they are sent to `COPY`.
const COPY_CHUNK: usize = 256 * 1024;
/// Events written to the outbox per statement.
const EVENTS_PER_INSERT: usize = 16;

/// Why an upload did not complete.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The request stream failed or broke a rule mid-way; nothing was written.
    #[error(transparent)]
    Request(#[from] ApiError),
    /// The database failed; nothing was written.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<UploadError> for ApiError {
    fn from(err: UploadError) -> Self {
        match err {
            UploadError::Request(e) => e,
            UploadError::Database(e) => e.into(),
        }
    }
}

/// Appends one row in `COPY ... FROM STDIN` text format. Device IDs and kinds are
/// plain; the model is escaped (it cannot hold control characters, but may hold `\`).
fn write_copy_line(buf: &mut Vec<u8>, row: &UploadRow) {
    use std::io::Write;
    let _ = write!(
        buf,
        "{}\t{}\t{}\t",
        row.index,
        row.device.as_str(),
        row.device.kind().as_i16()
    );
    for byte in row.model.bytes() {
        match byte {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            other => buf.push(other),
        }
    }
    buf.push(b'\n');
}

fn rejection_from_row(row: &PgRow) -> Result<Rejection, sqlx::Error> {
    Ok(Rejection {
        index: row.try_get("idx")?,
        device_id: row.try_get("device_id")?,
        reason: RejectionReason::from_i16(row.try_get("reason")?),
        message: row.try_get("message")?,
    })
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
        let id: Option<Uuid> = sqlx::query_scalar(
            "SELECT upload_id FROM device.uploads WHERE reseller_id = $1 AND client_upload_id = $2",
        )
        .bind(reseller.as_str())
        .bind(client_upload_id)
        .fetch_optional(&self.pool)
        .await?;
        match id {
            Some(id) => self.upload(reseller, id).await,
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
        let Some(row) = sqlx::query(
            "SELECT upload_id, target_knox_id, order_number, client_upload_id, uploaded_at, \
             accepted_count, rejected_count FROM device.uploads WHERE upload_id = $1 AND reseller_id = $2",
        )
        .bind(upload_id)
        .bind(reseller.as_str())
        .fetch_optional(&mut *conn)
        .await?
        else {
            return Ok(None);
        };
        let rejections = sqlx::query(
            "SELECT idx, device_id, reason, message FROM device.upload_rejections \
             WHERE upload_id = $1 ORDER BY idx",
        )
        .bind(upload_id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(rejection_from_row)
        .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Upload {
            upload_id: row.try_get("upload_id")?,
            target_knox_id: row.try_get("target_knox_id")?,
            order_number: row.try_get("order_number")?,
            client_upload_id: row.try_get("client_upload_id")?,
            uploaded_at: row.try_get("uploaded_at")?,
            accepted_count: row.try_get("accepted_count")?,
            rejected_count: row.try_get("rejected_count")?,
            rejections,
        }))
    }

    /// Runs one upload in one transaction: nothing is written unless all of it is.
    ///
    /// A concurrent retry with the same client upload ID waits for the first and then
    /// returns its result.
    ///
    /// # Errors
    /// [`UploadError::Request`] when `items` fails; [`UploadError::Database`] otherwise.
    pub async fn ingest(
        &self,
        reseller: &ResellerId,
        header: &UploadHeader,
        target: &Target,
        mut items: impl Stream<Item = Result<ParsedBatch, ApiError>> + Unpin,
    ) -> Result<Upload, UploadError> {
        let upload_id = Uuid::now_v7();
        let mut tx = self.pool.begin().await?;
        // One big set-based statement: JIT compilation only costs here, and the duplicate
        // ranking's sort should stay in memory rather than spill.
        sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
        sqlx::query("SET LOCAL work_mem = '256MB'")
            .execute(&mut *tx)
            .await?;
        // The upload row comes first: a concurrent retry with the same client upload ID
        // blocks here until this transaction ends, then finds the finished upload.
        let inserted: Option<OffsetDateTime> = sqlx::query_scalar(
            "INSERT INTO device.uploads (upload_id, reseller_id, target_knox_id, target_kind, order_number, \
             client_upload_id, uploaded_at, accepted_count, rejected_count) \
             VALUES ($1, $2, $3, $4, $5, $6, now(), 0, 0) ON CONFLICT DO NOTHING RETURNING uploaded_at",
        )
        .bind(upload_id)
        .bind(reseller.as_str())
        .bind(target.knox_id.as_str())
        .bind(target.kind as i16)
        .bind(&header.order_number)
        .bind(&header.client_upload_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(uploaded_at) = inserted else {
            tx.rollback().await?;
            let first = match &header.client_upload_id {
                Some(id) => self.upload_by_client_id(reseller, id).await?,
                None => None,
            };
            return first.ok_or(UploadError::Database(sqlx::Error::RowNotFound));
        };

        sqlx::query(
            "CREATE TEMP TABLE upload_staging (idx bigint, device_id text, id_kind smallint, model text) ON COMMIT DROP",
        )
        .execute(&mut *tx)
        .await?;
        let mut invalid = Vec::new();
        {
            let mut copy = tx.copy_in_raw("COPY upload_staging FROM STDIN").await?;
            let mut buf = Vec::with_capacity(COPY_CHUNK + 4096);
            while let Some(item) = items.next().await {
                match item {
                    Err(err) => {
                        let _ = copy.abort("the upload stream failed").await;
                        return Err(err.into());
                    }
                    Ok(batch) => {
                        invalid.extend(batch.rejected);
                        for row in &batch.rows {
                            write_copy_line(&mut buf, row);
                        }
                        if buf.len() >= COPY_CHUNK {
                            copy.send(std::mem::take(&mut buf)).await?;
                            buf.reserve(COPY_CHUNK + 4096);
                        }
                    }
                }
            }
            if !buf.is_empty() {
                copy.send(buf).await?;
            }
            copy.finish().await?;
        }
        self.register_staged(&mut tx, reseller, upload_id, target, &invalid)
            .await?;
        let accepted = self
            .publish_accepted(&mut tx, reseller, header, target, upload_id, uploaded_at)
            .await?;
        let rejected: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM device.upload_rejections WHERE upload_id = $1",
        )
        .bind(upload_id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("UPDATE device.uploads SET accepted_count = $2, rejected_count = $3 WHERE upload_id = $1")
            .bind(upload_id)
            .bind(accepted)
            .bind(rejected)
            .execute(&mut *tx)
            .await?;
        let upload = Self::upload_in(&mut tx, reseller, upload_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        tx.commit().await?;
        Ok(upload)
    }

    /// Registers the staged devices and records every rejection, set-based.
    async fn register_staged(
        &self,
        tx: &mut PgConnection,
        reseller: &ResellerId,
        upload_id: Uuid,
        target: &Target,
        invalid: &[Rejection],
    ) -> Result<(), sqlx::Error> {
        sqlx::query("CREATE TEMP TABLE upload_accepted (device_id text, id_kind smallint, model text) ON COMMIT DROP")
            .execute(&mut *tx)
            .await?;
        // `ranked` is materialised once; the first occurrence of a device is registered
        // unless a live registration exists (the partial unique index decides, also
        // against concurrent uploads); the others are rejected.
        sqlx::query(
            "WITH ranked AS MATERIALIZED ( \
                 SELECT idx, device_id, id_kind, model, \
                        row_number() OVER w AS rn, first_value(idx) OVER w AS first_idx \
                 FROM upload_staging WINDOW w AS (PARTITION BY device_id ORDER BY idx)), \
             inserted AS ( \
                 INSERT INTO device.registrations (device_id, id_kind, model, reseller_id, upload_id, target_knox_id) \
                 SELECT device_id, id_kind, model, $1, $2, $3 FROM ranked WHERE rn = 1 \
                 ON CONFLICT (device_id) WHERE deleted_at IS NULL DO NOTHING \
                 RETURNING device_id, id_kind, model), \
             accepted AS (INSERT INTO upload_accepted SELECT device_id, id_kind, model FROM inserted) \
             INSERT INTO device.upload_rejections (upload_id, idx, device_id, reason, message) \
             SELECT $2, r.idx, r.device_id, \
                    CASE WHEN r.rn > 1 THEN 2 ELSE 3 END, \
                    CASE WHEN r.rn > 1 THEN 'duplicate of the device at index ' || r.first_idx \
                         ELSE 'already registered to an account' END \
             FROM ranked r \
             WHERE r.rn > 1 OR NOT EXISTS (SELECT 1 FROM inserted i WHERE i.device_id = r.device_id)",
        )
        .bind(reseller.as_str())
        .bind(upload_id)
        .bind(target.knox_id.as_str())
        .execute(&mut *tx)
        .await?;
        if !invalid.is_empty() {
            let idx: Vec<i64> = invalid.iter().map(|r| r.index).collect();
            let ids: Vec<&str> = invalid.iter().map(|r| r.device_id.as_str()).collect();
            let reasons: Vec<i16> = invalid.iter().map(|r| r.reason.as_i16()).collect();
            let messages: Vec<&str> = invalid.iter().map(|r| r.message.as_str()).collect();
            sqlx::query(
                "INSERT INTO device.upload_rejections (upload_id, idx, device_id, reason, message) \
                 SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::smallint[], $5::text[])",
            )
            .bind(upload_id)
            .bind(&idx)
            .bind(&ids)
            .bind(&reasons)
            .bind(&messages)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    /// Writes `devices_uploaded` events of at most 1,000 devices, read through a cursor.
    /// Returns the number of accepted devices.
    async fn publish_accepted(
        &self,
        tx: &mut PgConnection,
        reseller: &ResellerId,
        header: &UploadHeader,
        target: &Target,
        upload_id: Uuid,
        uploaded_at: OffsetDateTime,
    ) -> Result<i64, sqlx::Error> {
        let accepted: i64 = sqlx::query_scalar("SELECT count(*) FROM upload_accepted")
            .fetch_one(&mut *tx)
            .await?;
        let parts = part_count(accepted as usize) as u32;
        sqlx::query("DECLARE accepted_cursor NO SCROLL CURSOR FOR SELECT device_id, id_kind, model FROM upload_accepted")
            .execute(&mut *tx)
            .await?;
        let context = events::UploadContext {
            upload_id,
            reseller_id: reseller.as_str(),
            target,
            order_number: &header.order_number,
            uploaded_at,
            part_count: parts,
            accepted_count: accepted,
        };
        let mut pending = Vec::with_capacity(EVENTS_PER_INSERT);
        let mut part = 0u32;
        loop {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "FETCH {EVENT_PART_SIZE} FROM accepted_cursor"
            )))
            .fetch_all(&mut *tx)
            .await?;
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
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            pending.push(events::devices_uploaded(&context, part, devices));
            part += 1;
            if pending.len() == EVENTS_PER_INSERT {
                OUTBOX.enqueue(&mut *tx, &pending).await?;
                pending.clear();
            }
        }
        OUTBOX.enqueue(&mut *tx, &pending).await?;
        sqlx::query("CLOSE accepted_cursor")
            .execute(&mut *tx)
            .await?;
        Ok(accepted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reseller_kit::device_id::DeviceId;

    #[test]
    fn copy_lines_escape_the_model() {
        let mut buf = Vec::new();
        let row = UploadRow {
            index: 7,
            device: DeviceId::parse("abc-1", None).unwrap(),
            model: r"Tab\Model".into(),
        };
        write_copy_line(&mut buf, &row);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "7\tABC-1\t3\tTab\\\\Model\n"
        );
    }
}
