//! Streaming a CSV download: batches of rows from a database cursor, through
//! [`CsvChunker`], into gRPC chunks over a bounded channel. The channels' bounds are the
//! back-pressure: a slow client slows the cursor, and memory stays flat however many rows
//! the file has (a batch being read, one waiting, one being written, and two chunks).
//!
//! Reading and writing overlap: one task reads the cursor a batch ahead while another
//! writes the previous batch, so the database produces rows while the service formats
//! them.

use std::future::Future;

use reseller_kit::ApiError;
use reseller_kit::csv::{CsvChunker, CsvLine, CustomerLine};
use reseller_proto::v1::CsvChunk;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::domain::CustomerRow;

/// Chunks buffered between the writer and the client.
const CHANNEL_CHUNKS: usize = 2;
/// Batches read ahead of the writer.
const BATCHES_AHEAD: usize = 1;

/// The response stream of a CSV download.
pub type CsvStream = ReceiverStream<Result<CsvChunk, Status>>;

/// Where a download's rows come from, a batch at a time; an empty batch ends the file.
pub trait RowSource: Send + 'static {
    /// One row.
    type Row: CsvRecord + Send + 'static;
    /// The next rows.
    fn next_batch(&mut self) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send;
}

/// A row of a CSV file.
pub trait CsvRecord {
    /// The file's header.
    const HEADER: &'static [&'static str];
    /// Writes the row's cells, in header order (the caller ends the row).
    ///
    /// # Errors
    /// When a value cannot be read (rows decoded lazily from the database).
    fn write(&self, out: &mut CsvChunker) -> Result<(), sqlx::Error>;
}

/// Streams the rows of `source` as a CSV file, starting with the UTF-8 byte-order mark
/// when `byte_order_mark` (the request's field of that name); `held` (a concurrency
/// permit) is released when the cursor is done with, however the download ends.
pub fn stream_csv<S: RowSource, H: Send + 'static>(
    mut source: S,
    held: H,
    byte_order_mark: bool,
) -> CsvStream {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let (batches_tx, mut batches) = mpsc::channel(BATCHES_AHEAD);
    tokio::spawn(async move {
        let _held = held;
        loop {
            let batch = source.next_batch().await;
            let last = !matches!(&batch, Ok(rows) if !rows.is_empty());
            // A closed channel: the writer stopped (the client went away or it failed).
            if batches_tx.send(batch).await.is_err() || last {
                break;
            }
        }
        // Dropping the source here ends its transaction and frees its connection.
    });
    tokio::spawn(async move {
        match write_all::<S::Row>(&mut batches, &tx, byte_order_mark).await {
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
async fn write_all<R: CsvRecord>(
    batches: &mut mpsc::Receiver<Result<Vec<R>, sqlx::Error>>,
    tx: &mpsc::Sender<Result<CsvChunk, Status>>,
    byte_order_mark: bool,
) -> Result<bool, ApiError> {
    let mut chunker = CsvChunker::starting(R::HEADER, byte_order_mark);
    while let Some(batch) = batches.recv().await {
        let batch = batch?;
        if batch.is_empty() {
            break;
        }
        for row in batch {
            row.write(&mut chunker)?;
            if let Some(data) = chunker.end_row()
                && tx.send(Ok(CsvChunk { data })).await.is_err()
            {
                return Ok(false);
            }
        }
    }
    let data = chunker.finish();
    if !data.is_empty() && tx.send(Ok(CsvChunk { data })).await.is_err() {
        return Ok(false);
    }
    Ok(true)
}

/// The customers file (DOMAIN.md "CSV downloads"; the kit's [`CustomerLine`]): the
/// `Customer ID / MSP ID` cell is the row's display ID, with no MSP tag.
impl CsvRecord for CustomerRow {
    const HEADER: &'static [&'static str] = CustomerLine::HEADER;

    fn write(&self, out: &mut CsvChunker) -> Result<(), sqlx::Error> {
        CustomerLine {
            company_name: &self.company_name,
            internal_reference: &self.internal_reference,
            customer_id: self.display_id(),
            country: &self.country,
            last_uploaded: self.last_uploaded_at,
            uploads: self.uploaded_devices,
            devices: self.devices,
            status: self.status.label(),
        }
        .write(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use reseller_kit::csv::DeviceLine;
    use reseller_kit::device_id::DeviceIdKind;
    use time::OffsetDateTime;
    use uuid::Uuid;

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

    /// A device line owning its text.
    type Owned = (
        Uuid,
        OffsetDateTime,
        String,
        String,
        DeviceIdKind,
        String,
        bool,
        String,
    );

    /// Device lines in batches of two.
    struct Devices(Vec<Owned>);

    struct OwnedLine(Owned);

    impl CsvRecord for OwnedLine {
        const HEADER: &'static [&'static str] = DeviceLine::HEADER;

        fn write(&self, out: &mut CsvChunker) -> Result<(), sqlx::Error> {
            let (upload_id, uploaded_at, order, device, kind, model, virtual_upload, via) = &self.0;
            DeviceLine {
                upload_id: &upload_id.to_string(),
                uploaded_at: Some(*uploaded_at),
                order_number: order,
                device_id: device,
                kind: Some(*kind),
                model,
                virtual_upload: *virtual_upload,
                via_msp_id: via,
            }
            .write(out);
            Ok(())
        }
    }

    impl RowSource for Devices {
        type Row = OwnedLine;

        async fn next_batch(&mut self) -> Result<Vec<OwnedLine>, sqlx::Error> {
            let n = self.0.len().min(2);
            Ok(self.0.drain(..n).map(OwnedLine).collect())
        }
    }

    #[tokio::test]
    async fn the_devices_file_has_the_domain_columns() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_250_000_000).unwrap();
        let upload = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        let lines = vec![
            (
                upload,
                at,
                "PO, 7".to_owned(),
                "356938035643809".to_owned(),
                DeviceIdKind::Imei,
                "Galaxy S26".to_owned(),
                false,
                String::new(),
            ),
            (
                upload,
                at,
                "=cmd".to_owned(),
                "-R58M".to_owned(),
                DeviceIdKind::Serial,
                "@model".to_owned(),
                true,
                "200001".to_owned(),
            ),
            (
                upload,
                at,
                String::new(),
                "A0000000002329".to_owned(),
                DeviceIdKind::Meid,
                String::new(),
                false,
                String::new(),
            ),
        ];
        let chunks: Vec<_> = stream_csv(Devices(lines), (), false).collect().await;
        let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.unwrap().data).collect();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "Upload ID,Uploaded At,Order Number,Device ID,Device Type,Model,Virtual Upload,Via MSP\r\n\
             01900000-0000-7000-8000-000000000001,2023-11-14T22:13:20.25Z,\"PO, 7\",356938035643809,IMEI,Galaxy S26,no,\r\n\
             01900000-0000-7000-8000-000000000001,2023-11-14T22:13:20.25Z,'=cmd,'-R58M,Serial,'@model,yes,200001\r\n\
             01900000-0000-7000-8000-000000000001,2023-11-14T22:13:20.25Z,,A0000000002329,MEID,,no,\r\n"
        );
    }

    /// Fails after its first batch.
    struct Failing(bool);

    impl RowSource for Failing {
        type Row = CustomerRow;

        async fn next_batch(&mut self) -> Result<Vec<CustomerRow>, sqlx::Error> {
            if std::mem::replace(&mut self.0, true) {
                Err(sqlx::Error::Protocol("cursor lost".into()))
            } else {
                Ok(vec![row("Acme", "")])
            }
        }
    }

    #[tokio::test]
    async fn a_failing_cursor_ends_the_stream_with_an_error() {
        let chunks: Vec<_> = stream_csv(Failing(false), (), false).collect().await;
        let last = chunks.last().unwrap();
        assert_eq!(last.as_ref().unwrap_err().code(), tonic::Code::Internal);
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

        let chunks: Vec<_> = stream_csv(Batches(rows), (), false).collect().await;
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
    async fn a_byte_order_mark_starts_the_first_chunk_only() {
        let rows = || vec![row("Ärzte Nord", ""), row("émile", "PO;1")];
        let plain: Vec<u8> = stream_csv(Batches(rows()), (), false)
            .flat_map(|c| futures::stream::iter(c.unwrap().data))
            .collect()
            .await;
        let chunks: Vec<_> = stream_csv(Batches(rows()), (), true).collect().await;
        let first = &chunks[0].as_ref().unwrap().data;
        assert!(first.starts_with(b"\xEF\xBB\xBFCompany Name / Internal Reference,"));
        let marked: Vec<u8> = chunks.into_iter().flat_map(|c| c.unwrap().data).collect();
        assert_eq!(marked[3..], plain[..], "the same file after the mark");
        assert!(plain.starts_with(b"Company Name"));
        assert_eq!(
            String::from_utf8(plain).unwrap(),
            "Company Name / Internal Reference,Customer ID / MSP ID,Country,Last Uploaded,Uploads,Devices,Status\r\n\
             Ärzte Nord,123456,DE,,0,0,Pending customer verification\r\n\
             \"émile / PO;1\",123456,DE,,0,0,Pending customer verification\r\n"
        );
    }

    #[tokio::test]
    async fn an_empty_list_downloads_the_header() {
        let chunks: Vec<_> = stream_csv(Batches(Vec::new()), (), false).collect().await;
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
