//! The views' reads: one page of a reseller's Customers page and a cursor over all of it
//! for the CSV download; one customer's detail, a page of its devices and a cursor over
//! all of them. Every query is confined to one reseller, and to its listed rows (added
//! by the reseller, or holding virtual uploads): an unlisted row answers as if it did
//! not exist.

use reseller_kit::csv::{CsvChunker, CsvLine, DeviceLine};
use reseller_kit::device_id::DeviceIdKind;
use reseller_kit::ids::{KnoxId, ResellerId};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::{Query, QueryScalar};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Row, Transaction};

use crate::domain::{
    AccountKind, CustomerDevice, CustomerRow, CustomerStatus, DeviceKey, ListCustomerDevices,
    ListCustomers, OrderBy, SearchQuery, SortKey, UploadSummary,
};
use crate::grpc::csv::{CsvRecord, RowSource};

/// The reseller views in PostgreSQL.
#[derive(Debug, Clone)]
pub struct Repository {
    pub(super) pool: PgPool,
}

/// The columns a [`CustomerRow`] is read from `reporting.customer_rows`, in the order
/// [`row_from`] reads. The managing MSP is the customer's current link, read with the
/// row, so every reseller's row of a customer (rows created after the link too) shows it.
const ROW_COLUMNS: &str = "knox_id, kind, company_name, internal_reference, country, status, \
     last_uploaded_at, uploaded_devices, devices, \
     COALESCE((SELECT l.msp_id FROM reporting.msp_links l \
               WHERE l.customer_knox_id = customer_rows.knox_id AND l.linked), '') \
       AS managing_msp_id";

/// The company-name sort key: the name in the ICU root collation (migration 0004). The
/// `ORDER BY`, the page token's comparison and the index `customer_rows_by_name_icu` must
/// all say exactly this, or the pages would follow another order than the index, or
/// than each other.
const NAME_KEY: &str = r#"company_name COLLATE "und-x-icu""#;

/// Rows fetched per round trip by the customers CSV cursor.
const EXPORT_BATCH: usize = 1000;
/// [`EXPORT_BATCH`] rows of the customers CSV cursor (`FETCH` takes no parameter; a unit
/// test keeps the two equal).
const FETCH_CUSTOMERS: &str = "FETCH FORWARD 1000 FROM customers_csv";

/// Rows fetched per round trip by a customer's devices CSV cursor: large enough that the
/// round trips cost little against a million rows, small enough that the batches held
/// (one read ahead, one being written) stay a few MiB.
const DEVICE_EXPORT_BATCH: usize = 8192;
/// [`DEVICE_EXPORT_BATCH`] rows of the devices CSV cursor (`FETCH` takes no parameter; a
/// unit test keeps the two equal).
const FETCH_DEVICES: &str = "FETCH FORWARD 8192 FROM customer_devices_csv";

/// The one dynamic builder of the views' reads, for the queries whose shape depends on
/// the request (the Customers page's search, order and keyset; the CSV's search) and the
/// ones that share their columns ([`ROW_COLUMNS`]): it holds only `&'static str`
/// fragments and bound values, so nothing a caller sends can become SQL.
struct Sql(QueryBuilder<Postgres>);

impl Sql {
    fn new(sql: &'static str) -> Self {
        Self(QueryBuilder::new(sql))
    }

    fn sql(&mut self, sql: &'static str) -> &mut Self {
        self.0.push(sql);
        self
    }

    fn bind<'t, T>(&mut self, value: T) -> &mut Self
    where
        T: sqlx::Encode<'t, Postgres> + sqlx::Type<Postgres>,
    {
        self.0.push_bind(value);
        self
    }

    fn query(&mut self) -> Query<'_, Postgres, PgArguments> {
        self.0.build()
    }

    fn scalar<T>(&mut self) -> QueryScalar<'_, Postgres, T, PgArguments>
    where
        (T,): for<'r> sqlx::FromRow<'r, PgRow>,
    {
        self.0.build_query_scalar()
    }

    /// `prefix`, then `SELECT` [`ROW_COLUMNS`] `FROM reporting.customer_rows`.
    fn rows(prefix: &'static str) -> Self {
        let mut sql = Self::new(prefix);
        sql.sql("SELECT ")
            .sql(ROW_COLUMNS)
            .sql(" FROM reporting.customer_rows");
        sql
    }

    /// `WHERE` the reseller's rows that match `query`. The pattern is lower-cased by the
    /// same `lower()` that built `search_text`; the trigram index serves the `LIKE`.
    fn filter(&mut self, reseller_id: &ResellerId, query: &SearchQuery) -> &mut Self {
        self.sql(" WHERE listed AND reseller_id = ")
            .bind(reseller_id.as_str().to_owned());
        if let Some(pattern) = query.like_pattern() {
            self.sql(" AND search_text LIKE lower(")
                .bind(pattern)
                .sql(") ESCAPE '\\'");
        }
        self
    }

    /// Rows strictly after `key` in its order. Descending orders bound the leading column
    /// (an index range) and break ties on the Knox ID.
    fn after(&mut self, key: &SortKey) -> &mut Self {
        match key {
            // A row comparison, which the index serves as one range (`Index Cond`).
            SortKey::CompanyName { name, knox_id } => {
                self.sql(" AND (")
                    .sql(NAME_KEY)
                    .sql(", knox_id) > (")
                    .bind(name.clone())
                    .sql(", ")
                    .bind(knox_id.clone())
                    .sql(")");
            }
            SortKey::LastUploaded { at_micros, knox_id } => {
                let at = SortKey::micros_to_time(*at_micros);
                self.sql(" AND last_uploaded_key <= COALESCE(")
                    .bind(at)
                    .sql("::timestamptz, '-infinity') AND (last_uploaded_key < COALESCE(")
                    .bind(at)
                    .sql("::timestamptz, '-infinity') OR knox_id > ")
                    .bind(knox_id.clone())
                    .sql(")");
            }
            SortKey::Devices { devices, knox_id } => {
                self.sql(" AND devices <= ")
                    .bind(*devices)
                    .sql(" AND (devices < ")
                    .bind(*devices)
                    .sql(" OR knox_id > ")
                    .bind(knox_id.clone())
                    .sql(")");
            }
        }
        self
    }

    /// The `ORDER BY` of `order`, matching its index.
    fn order_by(&mut self, order: OrderBy) -> &mut Self {
        match order {
            OrderBy::CompanyName => self.sql(" ORDER BY ").sql(NAME_KEY).sql(", knox_id"),
            OrderBy::LastUploadedDesc => self.sql(" ORDER BY last_uploaded_key DESC, knox_id"),
            OrderBy::DevicesDesc => self.sql(" ORDER BY devices DESC, knox_id"),
        }
    }
}

/// `select` (a `SELECT … FROM reporting.customer_rows`) completed into the page `list`
/// asks for: the reseller's rows matching its search, after its keyset, in its order,
/// one row more than the page (which tells whether another page follows).
fn page_query(mut select: Sql, reseller_id: &ResellerId, list: &ListCustomers) -> Sql {
    select.filter(reseller_id, &list.query);
    if let Some(after) = &list.after {
        select.after(after);
    }
    select
        .order_by(list.order)
        .sql(" LIMIT ")
        .bind(list.page_size + 1);
    select
}

fn row_from(row: &PgRow) -> Result<CustomerRow, sqlx::Error> {
    Ok(CustomerRow {
        knox_id: row.try_get("knox_id")?,
        kind: AccountKind::from_db(row.try_get("kind")?)?,
        company_name: row.try_get("company_name")?,
        internal_reference: row.try_get("internal_reference")?,
        country: row.try_get("country")?,
        status: CustomerStatus::from_db(row.try_get("status")?)?,
        last_uploaded_at: row.try_get("last_uploaded_at")?,
        uploaded_devices: row.try_get("uploaded_devices")?,
        devices: row.try_get("devices")?,
        managing_msp_id: row.try_get("managing_msp_id")?,
    })
}

/// A device kind as stored (the table's CHECK allows only the three).
fn kind_from_db(value: i16) -> DeviceIdKind {
    DeviceIdKind::from_i16(value).unwrap_or(DeviceIdKind::Serial)
}

/// A `reporting.registrations` row as a page of a customer's devices reads it.
struct DeviceRecord {
    device_id: String,
    id_kind: i16,
    model: String,
    upload_id: uuid::Uuid,
    uploaded_at: time::OffsetDateTime,
    order_number: String,
    r#virtual: bool,
}

impl From<DeviceRecord> for CustomerDevice {
    fn from(record: DeviceRecord) -> Self {
        CustomerDevice {
            device_id: record.device_id,
            kind: kind_from_db(record.id_kind),
            model: record.model,
            upload_id: record.upload_id,
            uploaded_at: record.uploaded_at,
            order_number: record.order_number,
            virtual_upload: record.r#virtual,
        }
    }
}

/// The reseller's listed row for `knox_id`, read inside `conn`'s transaction.
async fn listed_row(
    conn: &mut PgConnection,
    reseller_id: &ResellerId,
    knox_id: &KnoxId,
) -> Result<Option<CustomerRow>, sqlx::Error> {
    Sql::rows("")
        .sql(" WHERE reseller_id = ")
        .bind(reseller_id.as_str().to_owned())
        .sql(" AND knox_id = ")
        .bind(knox_id.as_str().to_owned())
        .sql(" AND listed")
        .query()
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(row_from)
        .transpose()
}

/// One customer's detail: its row, and the uploads placed under it, newest first.
#[derive(Debug, Clone)]
pub struct CustomerDetail {
    /// The row, as the list shows it.
    pub row: CustomerRow,
    /// The uploads placed under it.
    pub uploads: Vec<UploadSummary>,
}

/// One page of a customer's devices.
#[derive(Debug, Clone)]
pub struct DevicePage {
    /// The devices, in order.
    pub devices: Vec<CustomerDevice>,
    /// The last device's key when more devices follow.
    pub next: Option<DeviceKey>,
}

/// One page of the Customers page.
#[derive(Debug, Clone)]
pub struct CustomerPage {
    /// The rows, in order.
    pub rows: Vec<CustomerRow>,
    /// The last row's sort key when more rows follow.
    pub next: Option<SortKey>,
    /// Rows matching the query, on every page.
    pub total: i64,
}

impl Repository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// One page of a reseller's Customers page, and the count of rows matching the query
    /// (`total_size`), read from one snapshot.
    ///
    /// The count costs no scan of the list (issue #12):
    /// - without a search it is the reseller's maintained count of listed rows
    ///   (`reporting.listed_counts`, migration 0011), read by the page's own statement:
    ///   one statement, one snapshot, one round trip;
    /// - with a search, the first page is read on its own (one statement): when it is
    ///   the only page it is the whole result, and its rows are the count. Otherwise (more
    ///   rows than a page, or a later page) the matches are counted and the page read in
    ///   one read-only transaction (a first page so runs twice). A selective search, the
    ///   usual kind, so scans its index once, not twice, in one round trip.
    ///
    /// Without a search, an empty later page (its rows unlisted since the token was
    /// issued) reads the count in a statement of its own, a later snapshot than the
    /// (empty) page's.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list_customers(
        &self,
        reseller_id: &ResellerId,
        list: &ListCustomers,
    ) -> Result<CustomerPage, sqlx::Error> {
        let searching = list.query.like_pattern().is_some();
        let (fetched, total) = if searching {
            // The first page on its own, one statement (its own snapshot, no
            // transaction's round trips): when it is the only page it is the whole result.
            let only = match list.after {
                None => {
                    let fetched = page_query(Sql::rows(""), reseller_id, list)
                        .query()
                        .fetch_all(&self.pool)
                        .await?;
                    (fetched.len() as i64 <= list.page_size).then_some(fetched)
                }
                Some(_) => None,
            };
            match only {
                Some(fetched) => {
                    let total = fetched.len() as i64;
                    (fetched, total)
                }
                // More rows than a page: the page and the count from one snapshot.
                None => {
                    let mut tx = self
                        .pool
                        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                        .await?;
                    let total: i64 = Sql::new("SELECT count(*) FROM reporting.customer_rows")
                        .filter(reseller_id, &list.query)
                        .scalar()
                        .fetch_one(&mut *tx)
                        .await?;
                    let fetched = page_query(Sql::rows(""), reseller_id, list)
                        .query()
                        .fetch_all(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    (fetched, total)
                }
            }
        } else {
            let mut page = Sql::new("SELECT ");
            page.sql(ROW_COLUMNS)
                .sql(", (SELECT n.listed FROM reporting.listed_counts n WHERE n.reseller_id = ")
                .bind(reseller_id.as_str().to_owned())
                .sql(") AS listed_count FROM reporting.customer_rows");
            let fetched = page_query(page, reseller_id, list)
                .query()
                .fetch_all(&self.pool)
                .await?;
            let total = match fetched.first() {
                // No count row: the reseller never had a listed row.
                Some(row) => row.try_get::<Option<i64>, _>("listed_count")?.unwrap_or(0),
                // The first page is empty only when nothing is listed (same snapshot).
                None if list.after.is_none() => 0,
                None => {
                    sqlx::query_scalar!(
                        r#"SELECT COALESCE((SELECT listed FROM reporting.listed_counts
                                        WHERE reseller_id = $1), 0) AS "listed!""#,
                        reseller_id.as_str(),
                    )
                    .fetch_one(&self.pool)
                    .await?
                }
            };
            (fetched, total)
        };

        let more = fetched.len() as i64 > list.page_size;
        let mut rows = Vec::with_capacity(fetched.len());
        let mut next = None;
        for (i, pg) in fetched.iter().take(list.page_size as usize).enumerate() {
            let row = row_from(pg)?;
            if more && i as i64 == list.page_size - 1 {
                next = Some(match list.order {
                    OrderBy::CompanyName => SortKey::CompanyName {
                        name: row.company_name.clone(),
                        knox_id: row.knox_id.clone(),
                    },
                    OrderBy::LastUploadedDesc => {
                        SortKey::last_uploaded(row.last_uploaded_at, row.knox_id.clone())
                    }
                    OrderBy::DevicesDesc => SortKey::Devices {
                        devices: row.devices,
                        knox_id: row.knox_id.clone(),
                    },
                });
            }
            rows.push(row);
        }
        Ok(CustomerPage { rows, next, total })
    }

    /// Opens a cursor over a reseller's rows matching `query`, in the list's default
    /// order (company name in the ICU root collation, then Knox ID), for the CSV download. The cursor holds one read-only transaction (one snapshot)
    /// and fetches a thousand rows at a time.
    ///
    /// # Errors
    /// Database errors.
    pub async fn export_customers(
        &self,
        reseller_id: &ResellerId,
        query: &SearchQuery,
    ) -> Result<ExportCursor, sqlx::Error> {
        let mut tx = self.pool.begin_with("BEGIN READ ONLY").await?;
        Sql::rows("DECLARE customers_csv NO SCROLL CURSOR FOR ")
            .filter(reseller_id, query)
            .order_by(OrderBy::CompanyName)
            .query()
            .persistent(false)
            .execute(&mut *tx)
            .await?;
        Ok(ExportCursor { tx, done: false })
    }
}

impl Repository {
    /// One customer's detail, read from one snapshot; `None` when the reseller has no
    /// listed row for the account.
    ///
    /// # Errors
    /// Database errors.
    pub async fn customer_detail(
        &self,
        reseller_id: &ResellerId,
        knox_id: &KnoxId,
    ) -> Result<Option<CustomerDetail>, sqlx::Error> {
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
        let Some(row) = listed_row(&mut tx, reseller_id, knox_id).await? else {
            return Ok(None);
        };
        let uploads = sqlx::query_as!(
            UploadSummary,
            r#"SELECT upload_id, uploaded_at, order_number, device_count,
                      virtual AS virtual_upload, via_msp_id
               FROM reporting.upload_placements
               WHERE reseller_id = $1 AND placed_knox_id = $2
               ORDER BY uploaded_at DESC, upload_id"#,
            reseller_id.as_str(),
            knox_id.as_str(),
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(CustomerDetail { row, uploads }))
    }

    /// One page of the live devices placed under a customer's row, in the detail's order
    /// (newest upload first, then upload ID, then device ID); `None` when the reseller
    /// has no listed row for the account.
    ///
    /// # Errors
    /// Database errors.
    pub async fn customer_devices(
        &self,
        reseller_id: &ResellerId,
        list: &ListCustomerDevices,
    ) -> Result<Option<DevicePage>, sqlx::Error> {
        // Two statements, no transaction: a listed row stays listed, so the page cannot
        // contradict the check (and the view is polled: every round trip counts).
        let mut conn = self.pool.acquire().await?;
        if listed_row(&mut conn, reseller_id, &list.knox_id)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        let limit = list.page_size + 1;
        let fetched = match &list.after {
            None => {
                sqlx::query_as!(
                    DeviceRecord,
                    r#"SELECT device_id, id_kind, model, upload_id, uploaded_at, order_number,
                              virtual
                       FROM reporting.registrations
                       WHERE reseller_id = $1 AND placed_knox_id = $2 AND NOT deleted
                       ORDER BY uploaded_at DESC, upload_id, device_id LIMIT $3"#,
                    reseller_id.as_str(),
                    list.knox_id.as_str(),
                    limit,
                )
                .fetch_all(&mut *conn)
                .await?
            }
            Some(after) => {
                sqlx::query_file_as!(
                    DeviceRecord,
                    "src/postgres/customer_devices_after.sql",
                    reseller_id.as_str(),
                    list.knox_id.as_str(),
                    after.uploaded_at(),
                    after.upload_id,
                    &after.device_id,
                    limit,
                )
                .fetch_all(&mut *conn)
                .await?
            }
        };
        let more = fetched.len() as i64 > list.page_size;
        let devices: Vec<CustomerDevice> = fetched
            .into_iter()
            .take(list.page_size as usize)
            .map(CustomerDevice::from)
            .collect();
        let next = if more {
            devices.last().map(DeviceKey::of)
        } else {
            None
        };
        Ok(Some(DevicePage { devices, next }))
    }

    /// Opens a cursor over the live devices placed under a customer's row, in the
    /// detail's order, for its CSV download; `None` when the reseller has no listed row
    /// for the account. The cursor holds one read-only transaction (one snapshot, the
    /// same that found the row).
    ///
    /// # Errors
    /// Database errors.
    pub async fn export_customer_devices(
        &self,
        reseller_id: &ResellerId,
        knox_id: &KnoxId,
    ) -> Result<Option<DeviceCursor>, sqlx::Error> {
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
        if listed_row(&mut tx, reseller_id, knox_id).await?.is_none() {
            return Ok(None);
        }
        // Its columns are what `DeviceCsvRow::write` reads, by position.
        sqlx::query!(
            "DECLARE customer_devices_csv NO SCROLL CURSOR FOR
             SELECT upload_id, uploaded_at, order_number, device_id, id_kind, model, virtual,
               via_msp_id
             FROM reporting.registrations
             WHERE reseller_id = $1 AND placed_knox_id = $2 AND NOT deleted
             ORDER BY uploaded_at DESC, upload_id, device_id",
            reseller_id.as_str(),
            knox_id.as_str(),
        )
        .persistent(false)
        .execute(&mut *tx)
        .await?;
        Ok(Some(DeviceCursor { tx, done: false }))
    }
}

/// A customer's devices, batch by batch, from a server-side cursor.
#[derive(Debug)]
pub struct DeviceCursor {
    tx: Transaction<'static, Postgres>,
    done: bool,
}

impl RowSource for DeviceCursor {
    type Row = DeviceCsvRow;

    async fn next_batch(&mut self) -> Result<Vec<DeviceCsvRow>, sqlx::Error> {
        if self.done {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(FETCH_DEVICES)
            .persistent(false)
            .fetch_all(&mut *self.tx)
            .await?;
        if rows.len() < DEVICE_EXPORT_BATCH {
            self.done = true;
        }
        Ok(rows.into_iter().map(DeviceCsvRow).collect())
    }
}

/// One row of the devices cursor, decoded only as it is written (its text is borrowed
/// from the row, never copied).
#[derive(Debug)]
pub struct DeviceCsvRow(PgRow);

impl CsvRecord for DeviceCsvRow {
    const HEADER: &'static [&'static str] = DeviceLine::HEADER;

    fn write(&self, out: &mut CsvChunker) -> Result<(), sqlx::Error> {
        // Unchecked: the cursor's columns and their types are fixed by the DECLARE above,
        // and checking each value's type against them cost a fifth of the download.
        let row = &self.0;
        let upload_id: uuid::Uuid = row.try_get_unchecked(0)?;
        // Formatted on the stack: a row costs no allocation.
        let mut upload_id_text = uuid::Uuid::encode_buffer();
        DeviceLine {
            upload_id: upload_id.hyphenated().encode_lower(&mut upload_id_text),
            uploaded_at: Some(row.try_get_unchecked(1)?),
            order_number: row.try_get_unchecked(2)?,
            device_id: row.try_get_unchecked(3)?,
            kind: Some(kind_from_db(row.try_get_unchecked(4)?)),
            model: row.try_get_unchecked(5)?,
            virtual_upload: row.try_get_unchecked(6)?,
            via_msp_id: row.try_get_unchecked(7)?,
        }
        .write(out);
        Ok(())
    }
}

/// A reseller's rows, batch by batch, from a server-side cursor.
#[derive(Debug)]
pub struct ExportCursor {
    tx: Transaction<'static, Postgres>,
    done: bool,
}

impl RowSource for ExportCursor {
    type Row = CustomerRow;

    async fn next_batch(&mut self) -> Result<Vec<CustomerRow>, sqlx::Error> {
        if self.done {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(FETCH_CUSTOMERS)
            .persistent(false)
            .fetch_all(&mut *self.tx)
            .await?;
        if rows.len() < EXPORT_BATCH {
            // The cursor is exhausted; the transaction ends when the cursor is dropped.
            self.done = true;
        }
        rows.iter().map(row_from).collect()
    }
}

#[cfg(test)]
mod fetch_tests {
    use super::*;

    #[test]
    fn the_cursors_fetch_their_batch_sizes() {
        assert_eq!(
            FETCH_CUSTOMERS,
            format!("FETCH FORWARD {EXPORT_BATCH} FROM customers_csv")
        );
        assert_eq!(
            FETCH_DEVICES,
            format!("FETCH FORWARD {DEVICE_EXPORT_BATCH} FROM customer_devices_csv")
        );
    }
}
