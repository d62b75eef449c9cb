//! The upload spool: an upload's valid rows, written to an unnamed temporary file while
//! they stream to PostgreSQL, and read back afterwards in bounded batches.
//!
//! The fast path of an upload `COPY`s rows straight into `device.registrations`; it then
//! needs them once more, to build the events (PostgreSQL has no index to find them by
//! upload), or, when the `COPY` hit a device that is in the upload twice or registered
//! already, to stage them for the exact path. Keeping them on local disk rather than in
//! memory is what keeps the service's memory flat whatever the upload's size. The file
//! has no name and is gone when the spool is dropped, even if the process dies.
//!
//! A record is `index: i64, kind: i16, device_id: u16-length-prefixed, model:
//! u32-length-prefixed, secondary count: u8`, then per secondary identifier `kind: i16,
//! identifier: u16-length-prefixed`; little-endian.

use std::io::{self, SeekFrom};

use reseller_kit::device_id::DeviceIdKind;
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader};

use crate::domain::UploadRow;

/// Bytes buffered before a write to the file.
const WRITE_CHUNK: usize = 256 * 1024;

/// One row read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledRow {
    /// 0-based position in the whole upload.
    pub index: i64,
    /// The normalised identifier.
    pub device_id: String,
    /// Its kind.
    pub kind: DeviceIdKind,
    /// The model ("" when not given).
    pub model: String,
    /// The device's secondary identifiers, canonical, with their kinds.
    pub secondary: Vec<(String, DeviceIdKind)>,
}

/// The writing end.
#[derive(Debug)]
pub struct Spool {
    file: File,
    buf: Vec<u8>,
    rows: u64,
}

impl Spool {
    /// An empty spool in the system's temporary directory (`TMPDIR`, else `/tmp`).
    ///
    /// # Errors
    /// When the file cannot be created.
    pub async fn create() -> io::Result<Self> {
        let file = tokio::task::spawn_blocking(tempfile::tempfile)
            .await
            .map_err(io::Error::other)??;
        Ok(Self {
            file: File::from_std(file),
            buf: Vec::with_capacity(WRITE_CHUNK + 4096),
            rows: 0,
        })
    }

    /// Appends `rows`.
    ///
    /// # Errors
    /// When the file cannot be written (e.g. the disk is full).
    pub async fn append(&mut self, rows: &[UploadRow]) -> io::Result<()> {
        for row in rows {
            let device_id = row.device.as_str().as_bytes();
            let model = row.model.as_bytes();
            self.buf.extend_from_slice(&row.index.to_le_bytes());
            self.buf
                .extend_from_slice(&row.device.kind().as_i16().to_le_bytes());
            self.buf
                .extend_from_slice(&(device_id.len() as u16).to_le_bytes());
            self.buf.extend_from_slice(device_id);
            self.buf
                .extend_from_slice(&(model.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(model);
            // At most MAX_SECONDARY_IDS (4), checked by the parser.
            self.buf.push(row.secondary.len() as u8);
            for id in &row.secondary {
                self.buf
                    .extend_from_slice(&id.kind().as_i16().to_le_bytes());
                let bytes = id.as_str().as_bytes();
                self.buf
                    .extend_from_slice(&(bytes.len() as u16).to_le_bytes());
                self.buf.extend_from_slice(bytes);
            }
            self.rows += 1;
        }
        if self.buf.len() >= WRITE_CHUNK {
            self.file.write_all(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Reads the rows back from the first one.
    ///
    /// # Errors
    /// When the file cannot be written or rewound.
    pub async fn into_reader(mut self) -> io::Result<SpoolReader> {
        self.file.write_all(&self.buf).await?;
        self.file.flush().await?;
        self.file.seek(SeekFrom::Start(0)).await?;
        Ok(SpoolReader {
            file: BufReader::with_capacity(WRITE_CHUNK, self.file),
            remaining: self.rows,
        })
    }
}

/// The reading end, in append order.
#[derive(Debug)]
pub struct SpoolReader {
    file: BufReader<File>,
    remaining: u64,
}

impl SpoolReader {
    /// Up to `max` more rows; empty at the end.
    ///
    /// # Errors
    /// When the file cannot be read or is not what was written.
    pub async fn next_batch(&mut self, max: usize) -> io::Result<Vec<SpooledRow>> {
        let n = self.remaining.min(max as u64) as usize;
        let mut rows = Vec::with_capacity(n);
        for _ in 0..n {
            let index = self.file.read_i64_le().await?;
            let kind = self.read_kind().await?;
            let len = usize::from(self.file.read_u16_le().await?);
            let device_id = self.read_string(len).await?;
            let len = self.file.read_u32_le().await? as usize;
            let model = self.read_string(len).await?;
            let count = self.file.read_u8().await?;
            let mut secondary = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let kind = self.read_kind().await?;
                let len = usize::from(self.file.read_u16_le().await?);
                secondary.push((self.read_string(len).await?, kind));
            }
            rows.push(SpooledRow {
                index,
                device_id,
                kind,
                model,
                secondary,
            });
        }
        self.remaining -= n as u64;
        Ok(rows)
    }

    async fn read_kind(&mut self) -> io::Result<DeviceIdKind> {
        DeviceIdKind::from_i16(self.file.read_i16_le().await?)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad device kind"))
    }

    async fn read_string(&mut self, len: usize) -> io::Result<String> {
        let mut bytes = vec![0; len];
        self.file.read_exact(&mut bytes).await?;
        String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reseller_kit::device_id::DeviceId;

    #[tokio::test]
    async fn rows_come_back_in_order_in_bounded_batches() {
        let mut spool = Spool::create().await.unwrap();
        let rows: Vec<UploadRow> = (0..50_000)
            .map(|i| UploadRow {
                index: i * 2,
                device: DeviceId::parse(&format!("serial-{i}"), None).unwrap(),
                model: if i % 3 == 0 {
                    String::new()
                } else {
                    format!("Tab\\Model\t{i} ✓")
                },
                secondary: if i % 2 == 0 {
                    vec![DeviceId::parse(&format!("sn-{i}"), None).unwrap()]
                } else {
                    Vec::new()
                },
            })
            .collect();
        for chunk in rows.chunks(777) {
            spool.append(chunk).await.unwrap();
        }
        let mut reader = spool.into_reader().await.unwrap();
        let mut back = Vec::new();
        loop {
            let batch = reader.next_batch(4096).await.unwrap();
            if batch.is_empty() {
                break;
            }
            assert!(batch.len() <= 4096);
            back.extend(batch);
        }
        assert_eq!(back.len(), rows.len());
        for (row, got) in rows.iter().zip(&back) {
            assert_eq!(got.index, row.index);
            assert_eq!(got.device_id, row.device.as_str());
            assert_eq!(got.kind, row.device.kind());
            assert_eq!(got.model, row.model);
            let secondary: Vec<(String, DeviceIdKind)> = row
                .secondary
                .iter()
                .map(|id| (id.as_str().to_owned(), id.kind()))
                .collect();
            assert_eq!(got.secondary, secondary);
        }
    }
}
