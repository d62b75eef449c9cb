//! The views' reads: one page of a reseller's Customers page, and a cursor over all of
//! it for the CSV download. Every query is confined to one reseller.

use reseller_kit::ids::ResellerId;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::{Query, QueryScalar};
use sqlx::{PgPool, Postgres, QueryBuilder, Row, Transaction};

use crate::domain::{
    AccountKind, CustomerRow, CustomerStatus, ListCustomers, OrderBy, SearchQuery, SortKey,
};
use crate::export::RowSource;

/// The columns a [`CustomerRow`] is read from (a macro, so `concat!` can use it).
macro_rules! row_columns {
    () => {
        "knox_id, kind, company_name, internal_reference, country, status, last_uploaded_at, \
         uploaded_devices, devices, managing_msp_id"
    };
}

/// Rows fetched per round trip by the CSV cursor (a macro: `FETCH` takes no parameter).
macro_rules! export_batch {
    () => {
        1000
    };
}

/// A query assembled only from `&'static str` fragments and bound values: nothing a caller
/// sends can become SQL.
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

    /// `WHERE` the reseller's rows that match `query`. The pattern is lower-cased by the
    /// same `lower()` that built `search_text`; the trigram index serves the `LIKE`.
    fn filter(&mut self, reseller_id: &ResellerId, query: &SearchQuery) -> &mut Self {
        self.sql(" WHERE reseller_id = ")
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
            SortKey::CompanyName { name, knox_id } => {
                self.sql(" AND (lower(company_name), knox_id) > (")
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
        self.sql(match order {
            OrderBy::CompanyName => " ORDER BY lower(company_name), knox_id",
            OrderBy::LastUploadedDesc => " ORDER BY last_uploaded_key DESC, knox_id",
            OrderBy::DevicesDesc => " ORDER BY devices DESC, knox_id",
        })
    }
}

fn row_from(row: &PgRow) -> Result<CustomerRow, sqlx::Error> {
    Ok(CustomerRow {
        knox_id: row.try_get("knox_id")?,
        kind: AccountKind::from_db(row.try_get("kind")?),
        company_name: row.try_get("company_name")?,
        internal_reference: row.try_get("internal_reference")?,
        country: row.try_get("country")?,
        status: CustomerStatus::from_db(row.try_get("status")?),
        last_uploaded_at: row.try_get("last_uploaded_at")?,
        uploaded_devices: row.try_get("uploaded_devices")?,
        devices: row.try_get("devices")?,
        managing_msp_id: row.try_get("managing_msp_id")?,
    })
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

/// The reseller views in PostgreSQL.
#[derive(Debug, Clone)]
pub struct Repository {
    pool: PgPool,
}

impl Repository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// One page of a reseller's Customers page, and the count of rows matching the query,
    /// read from one snapshot.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list_customers(
        &self,
        reseller_id: &ResellerId,
        list: &ListCustomers,
    ) -> Result<CustomerPage, sqlx::Error> {
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
        let total: i64 = Sql::new("SELECT count(*) FROM reporting.customer_rows")
            .filter(reseller_id, &list.query)
            .scalar()
            .fetch_one(&mut *tx)
            .await?;
        let mut page = Sql::new(concat!(
            "SELECT ",
            row_columns!(),
            ", lower(company_name) AS name_key FROM reporting.customer_rows"
        ));
        page.filter(reseller_id, &list.query);
        if let Some(after) = &list.after {
            page.after(after);
        }
        // One row more than asked tells whether another page follows.
        let fetched = page
            .order_by(list.order)
            .sql(" LIMIT ")
            .bind(list.page_size + 1)
            .query()
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;

        let more = fetched.len() as i64 > list.page_size;
        let mut rows = Vec::with_capacity(fetched.len());
        let mut next = None;
        for (i, pg) in fetched.iter().take(list.page_size as usize).enumerate() {
            let row = row_from(pg)?;
            if more && i as i64 == list.page_size - 1 {
                next = Some(match list.order {
                    OrderBy::CompanyName => SortKey::CompanyName {
                        name: pg.try_get("name_key")?,
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

    /// Opens a cursor over a reseller's rows matching `query`, in company-name order,
    /// for the CSV download. The cursor holds one read-only transaction (one snapshot)
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
        Sql::new(concat!(
            "DECLARE customers_csv NO SCROLL CURSOR FOR SELECT ",
            row_columns!(),
            " FROM reporting.customer_rows"
        ))
        .filter(reseller_id, query)
        .order_by(OrderBy::CompanyName)
        .query()
        .persistent(false)
        .execute(&mut *tx)
        .await?;
        Ok(ExportCursor { tx, done: false })
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
        let rows = sqlx::query(concat!(
            "FETCH FORWARD ",
            export_batch!(),
            " FROM customers_csv"
        ))
        .persistent(false)
        .fetch_all(&mut *self.tx)
        .await?;
        if rows.len() < export_batch!() {
            // The cursor is exhausted; the transaction ends when the cursor is dropped.
            self.done = true;
        }
        rows.iter().map(row_from).collect()
    }
}
