//! Streaming a CSV download: batches of rows from a database cursor, through
//! [`CsvChunker`], into gRPC chunks over a bounded channel. The channel's bound is the
//! back-pressure: a slow client slows the cursor, and memory stays flat however many rows
//! the file has.

use std::future::Future;

use reseller_kit::{ApiError, timestamp};
use reseller_proto::v1::CsvChunk;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::csv_export::{Cell, CsvChunker, name_and_reference};
use crate::domain::CustomerRow;

/// Chunks buffered between the cursor and the client.
const CHANNEL_CHUNKS: usize = 2;

/// The response stream of a CSV download.
pub type CsvStream = ReceiverStream<Result<CsvChunk, Status>>;

/// Where a download's rows come from, a batch at a time; an empty batch ends the file.
pub trait RowSource: Send + 'static {
    /// One row.
    type Row: CsvRecord + Send;
    /// The next rows.
    fn next_batch(&mut self) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send;
}

/// A row of a CSV file.
pub trait CsvRecord {
    /// The file's header.
    const HEADER: &'static [&'static str];
    /// The row's cells, in header order.
    fn cells(&self) -> Vec<Cell<'_>>;
}

/// Streams the rows of `source` as a CSV file; `held` (a concurrency permit) is released
/// when the download ends, however it ends.
pub fn stream_csv<S: RowSource, H: Send + 'static>(mut source: S, held: H) -> CsvStream {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    tokio::spawn(async move {
        let _held = held;
        let outcome = write_all(&mut source, &tx).await;
        match outcome {
            Ok(true) => {}
            Ok(false) => tracing::debug!("CSV download abandoned by the client"),
            Err(err) => {
                let _ = tx.send(Err(Status::from(err))).await;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Writes every row; `Ok(false)` when the client went away.
async fn write_all<S: RowSource>(
    source: &mut S,
    tx: &mpsc::Sender<Result<CsvChunk, Status>>,
) -> Result<bool, ApiError> {
    let csv_error =
        |e: csv::Error| ApiError::Internal(anyhow::Error::new(e).context("writing CSV"));
    let mut chunker = CsvChunker::new(S::Row::HEADER).map_err(csv_error)?;
    loop {
        let batch = source.next_batch().await?;
        if batch.is_empty() {
            break;
        }
        for row in batch {
            if let Some(data) = chunker.write_row(&row.cells()).map_err(csv_error)?
                && tx.send(Ok(CsvChunk { data })).await.is_err()
            {
                return Ok(false);
            }
        }
    }
    let data = chunker.finish().map_err(csv_error)?;
    if !data.is_empty() && tx.send(Ok(CsvChunk { data })).await.is_err() {
        return Ok(false);
    }
    Ok(true)
}

/// The customers file (DOMAIN.md "CSV downloads").
///
/// `Customer ID / MSP ID` holds the row's display ID: the Knox ID, or the managing MSP's
/// Knox ID for a customer currently managed by an MSP. The portal's MSP tag marks a kind
/// (an MSP row, or a managed customer), and this file has no kind column; writing the tag
/// into the ID cell would make it no longer an ID, so the cell stays a bare Knox ID.
impl CsvRecord for CustomerRow {
    const HEADER: &'static [&'static str] = &[
        "Company Name / Internal Reference",
        "Customer ID / MSP ID",
        "Country",
        "Last Uploaded",
        "Uploads",
        "Devices",
        "Status",
    ];

    fn cells(&self) -> Vec<Cell<'_>> {
        vec![
            Cell::owned(name_and_reference(
                &self.company_name,
                &self.internal_reference,
            )),
            Cell::text(self.display_id()),
            Cell::text(&self.country),
            Cell::owned(
                self.last_uploaded_at
                    .map(timestamp::rfc3339_utc)
                    .unwrap_or_default(),
            ),
            Cell::Int(self.uploaded_devices),
            Cell::Int(self.devices),
            Cell::text(self.status.label()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use time::OffsetDateTime;

    use super::*;
    use crate::domain::{AccountKind, CustomerStatus};

    fn row(name: &str, reference: &str) -> CustomerRow {
        CustomerRow {
            knox_id: "123456".into(),
            kind: AccountKind::Customer,
            company_name: name.into(),
            internal_reference: reference.into(),
            country: "DE".into(),
            status: CustomerStatus::PendingVerification,
            last_uploaded_at: None,
            uploaded_devices: 0,
            devices: 0,
            managing_msp_id: String::new(),
        }
    }

    /// Rows in batches of two.
    struct Batches(Vec<CustomerRow>);

    impl RowSource for Batches {
        type Row = CustomerRow;

        async fn next_batch(&mut self) -> Result<Vec<CustomerRow>, sqlx::Error> {
            let n = self.0.len().min(2);
            Ok(self.0.drain(..n).collect())
        }
    }

    #[tokio::test]
    async fn the_customers_file_has_the_domain_columns() {
        let mut managed = row("=Evil", "PO 1, 2");
        managed.managing_msp_id = "999999".into();
        managed.status = CustomerStatus::Active;
        managed.last_uploaded_at =
            Some(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap());
        managed.uploaded_devices = 12;
        managed.devices = 10;
        let mut inactive = row("Beta", "");
        inactive.status = CustomerStatus::Inactive;
        let rows = vec![row("Acme", "PO-7"), managed, inactive];

        let chunks: Vec<_> = stream_csv(Batches(rows), ()).collect().await;
        let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.unwrap().data).collect();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "Company Name / Internal Reference,Customer ID / MSP ID,Country,Last Uploaded,Uploads,Devices,Status\r\n\
             Acme / PO-7,123456,DE,,0,0,Pending customer verification\r\n\
             \"'=Evil / PO 1, 2\",999999,DE,2023-11-14T22:13:20Z,12,10,Active\r\n\
             Beta,123456,DE,,0,0,Inactive\r\n"
        );
    }

    #[tokio::test]
    async fn an_empty_list_downloads_the_header() {
        let chunks: Vec<_> = stream_csv(Batches(Vec::new()), ()).collect().await;
        assert_eq!(chunks.len(), 1);
        assert!(
            chunks[0]
                .as_ref()
                .unwrap()
                .data
                .starts_with(b"Company Name / Internal Reference,")
        );
    }
}
