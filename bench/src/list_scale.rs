//! (g) The reseller's list and activity log at scale (issue #12): `ListCustomers` (first
//! page, a deep page, a search) over `--list-customers` customers holding
//! `--list-devices` devices, and `ListActivity` (first page, one customer's page) over
//! `--activity-entries` entries, each against the statements reporting-service runs for
//! it, bare from the bench's own connection, alternately in one run. Targets: each
//! case's p99 ≤ 2× its bare SQL's, and the search's p99 ≤ 10 ms.
//!
//! Like the lookup's ([`crate::lookup`]), the data is seeded straight into
//! reporting-service's projection with `generate_series` (`reporting.accounts`,
//! `reporting.customer_rows` with their counters, `reporting.registrations`,
//! `reporting.activities` and `reporting.activity_customers`): a hundred thousand
//! onboardings and ten million devices through the RPCs and events would take hours, and
//! these reads touch only the projection. Everything belongs to the bench's reseller,
//! under Knox IDs (`95…`) no other benchmark uses.

use std::time::{Duration, Instant};

use anyhow::Context;
use reseller_kit::auth::Role;
use reseller_proto::v1 as pb;
use serde_json::{Value, json};
use sqlx::{PgConnection, Row};

use crate::clients::Caller;
use crate::setup::RESELLER;
use crate::stack::Stack;
use crate::stats::{Samples, ms, round3};

/// Settings of the list-at-scale benchmark.
#[derive(Debug, Clone)]
pub struct ListConfig {
    /// Customers seeded into the reseller's list.
    pub customers: usize,
    /// Registrations seeded, spread over those customers.
    pub devices: usize,
    /// Activity log entries seeded.
    pub activity_entries: usize,
    /// Measured calls of each side, per case.
    pub rounds: usize,
    /// Rows per page (the Customers page's and the log's default, 50).
    pub page_size: i32,
    /// Rows paged through to reach the deep page.
    pub deep_rows: usize,
    /// The search (a substring matching a few company names).
    pub query: String,
    /// The target: service p99 over bare SQL p99, per case.
    pub target_ratio: f64,
    /// The target: the search's p99.
    pub search_target: Duration,
}

/// Customer `n`'s Knox ID (1-based).
fn knox_id(n: usize) -> String {
    format!("95{n:010}")
}

/// Seconds each seeding step took.
#[derive(Debug, Default)]
struct Seeded {
    customers: Duration,
    registrations: Duration,
    activities: Duration,
    vacuum: Duration,
}

impl Seeded {
    fn json(&self) -> Value {
        let s = |d: Duration| round3(d.as_secs_f64());
        json!({
            "customers_seconds": s(self.customers),
            "registrations_seconds": s(self.registrations),
            "activities_seconds": s(self.activities),
            "vacuum_analyze_seconds": s(self.vacuum),
            "total_seconds": s(self.customers + self.registrations + self.activities + self.vacuum),
        })
    }
}

/// Times one seeding statement.
async fn timed(stack: &Stack, what: &str, sql: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    stack
        .execute(sql)
        .await
        .with_context(|| format!("seeding {what}"))?;
    let took = started.elapsed();
    eprintln!("    {what}: {:.1} s", took.as_secs_f64());
    Ok(took)
}

/// Seeds the customers (accounts and list rows, their counters those of the devices
/// seeded after), the devices and the activity log.
async fn seed(stack: &Stack, config: &ListConfig) -> anyhow::Result<Seeded> {
    let (c, d, a) = (config.customers, config.devices, config.activity_entries);
    anyhow::ensure!(c > 0, "--list-customers must be at least 1");
    let mut seeded = Seeded::default();
    // Names vary in their first two words (accents too, which the ICU order sorts with
    // their base letters) and carry the number, so a search for "Company 00123" finds
    // ten rows whatever the scale (from 10,000 customers up).
    let name = "(ARRAY['Alpine','Baltic','Cobalt','Delta','Ember','Fjord','Granite','Harbour',\
        'Iris','Juniper','Kestrel','Lumen','Meridian','Nordic','Orchid','Pioneer','Quartz',\
        'Ärztehaus','Émile'])[1 + n % 19] || ' ' || \
        (ARRAY['Logistics','Telecom','Retail','Health','Energy','Foods','Media','Systems',\
        'Motors','Pharma','Textiles','Travel','Bank'])[1 + (n / 19) % 13] || \
        ' Company ' || lpad(n::text, 6, '0') || ' GmbH'";
    let knox = "'95' || lpad(n::text, 10, '0')";
    seeded.customers = timed(
        stack,
        "reporting.accounts",
        &format!(
            "INSERT INTO reporting.accounts (knox_id, kind, company_name, country) \
             SELECT {knox}, 'CUSTOMER', {name}, 'DE' FROM generate_series(1, {c}) AS n"
        ),
    )
    .await?;
    // Device k (1-based) is placed under customer ((k - 1) % c) + 1, so customer n holds
    // d / c devices, one more when n ≤ d % c: the counters say what the registrations
    // below hold, as the projection's deltas would have made them.
    seeded.customers += timed(
        stack,
        "reporting.customer_rows",
        &format!(
            "INSERT INTO reporting.customer_rows \
               (reseller_id, knox_id, kind, company_name, country, internal_reference, status, \
                added, added_at, last_uploaded_at, uploaded_devices, devices) \
             SELECT '{RESELLER}', {knox}, 'CUSTOMER', {name}, 'DE', \
               CASE WHEN n % 3 = 0 THEN 'REF-' || n ELSE '' END, \
               CASE WHEN n % 50 = 0 THEN 'PENDING_VERIFICATION' ELSE 'ACTIVE' END, \
               true, now() - interval '400 days' + (n || ' s')::interval, \
               CASE WHEN k > 0 THEN now() - ((n * 37) % 100000 || ' min')::interval END, k, k \
             FROM generate_series(1, {c}) AS n, \
               LATERAL (SELECT ({d} / {c} + CASE WHEN n <= {d} % {c} THEN 1 ELSE 0 END)::bigint AS k) AS x"
        ),
    )
    .await?;
    seeded.registrations = timed(
        stack,
        "reporting.registrations",
        &format!(
            "INSERT INTO reporting.registrations \
               (device_id, upload_id, reseller_id, id_kind, model, uploaded_at, order_number, \
                uploaded_to, uploaded_to_msp, holder_knox_id, placed_knox_id) \
             SELECT 'LD' || lpad(k::text, 10, '0'), \
               ('00000000-0000-7000-8001-' || lpad(to_hex(n), 12, '0'))::uuid, \
               '{RESELLER}', 3, 'SM-S921B', now() - ((n * 37) % 100000 || ' min')::interval, \
               'PO-LIST-' || n, c, false, c, c \
             FROM generate_series(1, {d}) AS k, \
               LATERAL (SELECT (k - 1) % {c} + 1 AS n) AS x, \
               LATERAL (SELECT '95' || lpad(x.n::text, 10, '0') AS c) AS y"
        ),
    )
    .await?;
    // Entry e is about customer ((e - 1) % c) + 1; kinds cycle, two entries a second
    // (ties broken by the ID, as the keyset does), newest first from now. Both inserts
    // go in one simple query, one transaction, so `now()` and so each entry's time and
    // its customer row's are the same, as the projection keeps them.
    let entry_customer =
        "'95' || lpad(((e - 1) % {c} + 1)::text, 10, '0')".replace("{c}", &c.to_string());
    seeded.activities = timed(
        stack,
        "reporting.activities",
        &format!(
            "INSERT INTO reporting.activities \
               (reseller_id, activity_id, occurred_at, kind, actor, customer_knox_id, upload_id, \
                deletion_id, accepted_count, rejected_count, device_count, part_count, detail) \
             SELECT '{RESELLER}', 'list-' || lpad(e::text, 9, '0'), now() - (e / 2 || ' s')::interval, \
               kind, 'Bench Person', CASE WHEN kind = 'DELETION' THEN '' ELSE {entry_customer} END, \
               CASE WHEN kind = 'UPLOAD' THEN ('00000000-0000-7000-8002-' || lpad(to_hex(e), 12, '0'))::uuid END, \
               CASE WHEN kind = 'DELETION' THEN ('00000000-0000-7000-8003-' || lpad(to_hex(e), 12, '0'))::uuid END, \
               CASE WHEN kind = 'UPLOAD' THEN 100 ELSE 0 END, \
               CASE WHEN kind IN ('UPLOAD', 'DELETION') THEN e % 3 ELSE 0 END, \
               CASE WHEN kind IN ('UPLOAD', 'DELETION', 'MSP_MOVE') THEN 100 ELSE 0 END, \
               CASE WHEN kind = 'DELETION' THEN 1 ELSE 0 END, \
               CASE kind WHEN 'UPLOAD' THEN 'PO-' || e WHEN 'REFERENCE_UPDATED' THEN 'REF-' || e \
                 WHEN 'APPROVAL_CHANGED' THEN 'ACTIVE' WHEN 'MSP_MOVE' THEN '900000000009' \
                 WHEN 'MSP_DELINK' THEN '900000000009' ELSE '' END \
             FROM generate_series(1, {a}) AS e, \
               LATERAL (SELECT (ARRAY['UPLOAD','DELETION','CUSTOMER_ADDED','REFERENCE_UPDATED', \
                 'APPROVAL_CHANGED','MSP_MOVE','MSP_DELINK'])[1 + e % 7] AS kind) AS x; \
             INSERT INTO reporting.activity_customers \
               (reseller_id, customer_knox_id, activity_id, occurred_at) \
             SELECT '{RESELLER}', {entry_customer}, 'list-' || lpad(e::text, 9, '0'), \
               now() - (e / 2 || ' s')::interval \
             FROM generate_series(1, {a}) AS e"
        ),
    )
    .await?;
    seeded.vacuum = timed(
        stack,
        "VACUUM (ANALYZE)",
        "VACUUM (ANALYZE) reporting.accounts, reporting.customer_rows, reporting.registrations, \
         reporting.activities, reporting.activity_customers",
    )
    .await?;
    Ok(seeded)
}

/// `ROW_COLUMNS` of reporting-service's `postgres::read`, verbatim.
const ROW_COLUMNS: &str = "knox_id, kind, company_name, internal_reference, country, status, \
     last_uploaded_at, uploaded_devices, devices, \
     COALESCE((SELECT l.msp_id FROM reporting.msp_links l \
               WHERE l.customer_knox_id = customer_rows.knox_id AND l.linked), '') \
       AS managing_msp_id";

/// The statements `Repository::list_customers` runs for a page in the default order
/// (company name in the ICU root collation), as its `Sql` builder writes them: the count
/// (a search's, run only when the page is not the whole result) and the page. `search`
/// adds the search's `LIKE`, `after` the keyset comparison; without a search the page
/// reads the reseller's maintained count (`reporting.listed_counts`) itself. Same text,
/// same placeholders, so the same prepared statements and plans.
fn list_statements(search: bool, after: bool) -> (String, String) {
    let mut filter = "WHERE listed AND reseller_id = $1".to_owned();
    let mut next = 2;
    if search {
        filter.push_str(" AND search_text LIKE lower($2) ESCAPE '\\'");
        next = 3;
    }
    let count = format!("SELECT count(*) FROM reporting.customer_rows {filter}");
    let mut page = if search {
        format!("SELECT {ROW_COLUMNS} FROM reporting.customer_rows {filter}")
    } else {
        // The count's reseller is the first placeholder, the filter's the second.
        format!(
            "SELECT {ROW_COLUMNS}, (SELECT n.listed FROM reporting.listed_counts n \
             WHERE n.reseller_id = $1) AS listed_count FROM reporting.customer_rows \
             WHERE listed AND reseller_id = $2"
        )
    };
    if !search {
        next = 3;
    }
    if after {
        page.push_str(&format!(
            r#" AND (company_name COLLATE "und-x-icu", knox_id) > (${}, ${})"#,
            next,
            next + 1
        ));
        next += 2;
    }
    page.push_str(&format!(
        r#" ORDER BY company_name COLLATE "und-x-icu", knox_id LIMIT ${next}"#
    ));
    (count, page)
}

/// The columns of `Repository::list_activity`'s two statements (`postgres::activity`);
/// the macro's text, with its line breaks and indentation, which PostgreSQL ignores.
const ACTIVITY_COLUMNS: &str = "a.activity_id, a.occurred_at, a.kind, a.actor, a.customer_knox_id, \
     a.upload_id, a.deletion_id, a.accepted_count, a.rejected_count, \
     a.device_count, a.detail";

/// `list_activity`'s statement without a customer filter.
fn activity_statement() -> String {
    format!(
        "SELECT {ACTIVITY_COLUMNS}, \
           ARRAY(SELECT c.customer_knox_id FROM reporting.activity_customers c \
                 WHERE c.reseller_id = a.reseller_id AND c.activity_id = a.activity_id \
                 ORDER BY 1) AS \"customers!\" \
         FROM reporting.activities a \
         WHERE a.reseller_id = $1 AND a.kind = ANY($2::text[]) \
           AND ($3::timestamptz IS NULL OR a.occurred_at >= $3) \
           AND ($4::timestamptz IS NULL OR a.occurred_at < $4) \
           AND ($5::timestamptz IS NULL OR (a.occurred_at, a.activity_id) < ($5, $6)) \
         ORDER BY a.occurred_at DESC, a.activity_id DESC \
         LIMIT $7"
    )
}

/// `list_activity`'s statement for one customer's entries.
fn activity_customer_statement() -> String {
    format!(
        "SELECT {ACTIVITY_COLUMNS}, \
           ARRAY(SELECT c2.customer_knox_id FROM reporting.activity_customers c2 \
                 WHERE c2.reseller_id = a.reseller_id AND c2.activity_id = a.activity_id \
                 ORDER BY 1) AS \"customers!\" \
         FROM reporting.activity_customers c \
         JOIN reporting.activities a \
           ON a.reseller_id = c.reseller_id AND a.activity_id = c.activity_id \
         WHERE c.reseller_id = $1 AND c.customer_knox_id = $8 \
           AND a.kind = ANY($2::text[]) \
           AND ($3::timestamptz IS NULL OR c.occurred_at >= $3) \
           AND ($4::timestamptz IS NULL OR c.occurred_at < $4) \
           AND ($5::timestamptz IS NULL OR (c.occurred_at, c.activity_id) < ($5, $6)) \
         ORDER BY c.occurred_at DESC, c.activity_id DESC \
         LIMIT $7"
    )
}

/// Every kind, as `ActivityFilter::kinds_db` lists them when the request names none.
const ALL_KINDS: [&str; 7] = [
    "UPLOAD",
    "DELETION",
    "CUSTOMER_ADDED",
    "REFERENCE_UPDATED",
    "APPROVAL_CHANGED",
    "MSP_MOVE",
    "MSP_DELINK",
];

/// One measured case: what the service is asked, and what the bare SQL runs.
#[derive(Debug, Clone)]
enum Case {
    /// `ListCustomers`: the request, and the bare SQL's search pattern and keyset.
    Customers {
        request: pb::ListCustomersRequest,
        pattern: Option<String>,
        after: Option<(String, String)>,
    },
    /// `ListActivity`: the request (its customer filter, if any).
    Activity { request: pb::ListActivityRequest },
}

/// What one call found: rows on the page, and the count the page says matched (the
/// list's `total_size`; the log has none).
#[derive(Debug, PartialEq, Eq)]
struct Found {
    rows: usize,
    first: Option<String>,
    total: Option<i64>,
}

async fn call_service(caller: &Caller, case: &Case) -> anyhow::Result<Found> {
    match case {
        Case::Customers { request, .. } => {
            let page = caller
                .reporting()
                .list_customers(request.clone())
                .await
                .context("ListCustomers")?
                .into_inner();
            Ok(Found {
                rows: page.customers.len(),
                first: page.customers.first().map(|c| c.knox_id.clone()),
                total: Some(page.total_size),
            })
        }
        Case::Activity { request } => {
            let page = caller
                .reporting()
                .list_activity(request.clone())
                .await
                .context("ListActivity")?
                .into_inner();
            Ok(Found {
                rows: page.activities.len(),
                first: page.activities.first().map(|a| a.activity_id.clone()),
                total: None,
            })
        }
    }
}

/// The service's statements for `case`, bare: for the list without a search its one
/// statement (the page, the maintained count with it); with a search the first page
/// alone, and when that is not the whole result (or for a later page) a read-only
/// transaction (`BEGIN`, the count, the page, `COMMIT`); for the log its one statement.
async fn call_bare(conn: &mut PgConnection, case: &Case, page_size: i32) -> anyhow::Result<Found> {
    let fetch = i64::from(page_size) + 1;
    match case {
        Case::Customers { pattern, after, .. } => {
            let (count_sql, page_sql) = list_statements(pattern.is_some(), after.is_some());
            let mut page = sqlx::query(sqlx::AssertSqlSafe(page_sql.clone())).bind(RESELLER);
            if let Some(p) = pattern {
                page = page.bind(p.clone());
            } else {
                page = page.bind(RESELLER);
            }
            if let Some((name, knox)) = after {
                page = page.bind(name.clone()).bind(knox.clone());
            }
            let page = page.bind(fetch);
            let (rows, total) = match pattern {
                None => {
                    let rows = page.fetch_all(&mut *conn).await?;
                    let total = match rows.first() {
                        Some(row) => row.get::<Option<i64>, _>("listed_count").unwrap_or(0),
                        None => 0,
                    };
                    (rows, total)
                }
                // The first page alone; the page again with the count, in a read-only
                // transaction, when it is not the whole result (or a later page).
                Some(p) => {
                    let only = if after.is_none() {
                        let rows = page.fetch_all(&mut *conn).await?;
                        (rows.len() as i64 <= i64::from(page_size)).then_some(rows)
                    } else {
                        None
                    };
                    match only {
                        Some(rows) => {
                            let total = rows.len() as i64;
                            (rows, total)
                        }
                        None => {
                            sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                                .execute(&mut *conn)
                                .await?;
                            let total =
                                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(count_sql))
                                    .bind(RESELLER)
                                    .bind(p.clone())
                                    .fetch_one(&mut *conn)
                                    .await?;
                            let mut again =
                                sqlx::query(sqlx::AssertSqlSafe(page_sql.clone())).bind(RESELLER);
                            again = again.bind(p.clone());
                            if let Some((name, knox)) = after {
                                again = again.bind(name.clone()).bind(knox.clone());
                            }
                            let rows = again.bind(fetch).fetch_all(&mut *conn).await?;
                            sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
                            (rows, total)
                        }
                    }
                }
            };
            Ok(Found {
                rows: rows.len().min(page_size as usize),
                first: rows.first().map(|r| r.get::<String, _>("knox_id")),
                total: Some(total),
            })
        }
        Case::Activity { request } => {
            let none_at: Option<time::OffsetDateTime> = None;
            let none_id: Option<String> = None;
            let (sql, customer) = if request.customer_knox_id.is_empty() {
                (activity_statement(), None)
            } else {
                (
                    activity_customer_statement(),
                    Some(request.customer_knox_id.clone()),
                )
            };
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(RESELLER)
                .bind(&ALL_KINDS[..])
                .bind(none_at)
                .bind(none_at)
                .bind(none_at)
                .bind(none_id)
                .bind(fetch);
            if let Some(c) = customer {
                query = query.bind(c);
            }
            let rows = query.fetch_all(&mut *conn).await?;
            Ok(Found {
                rows: rows.len().min(page_size as usize),
                first: rows.first().map(|r| r.get::<String, _>("activity_id")),
                total: None,
            })
        }
    }
}

/// Pages `deep_rows` rows into the default order through the service: the token of the
/// page after, and the sort key (company name, Knox ID) of the last row before it.
async fn deep_token(
    caller: &Caller,
    config: &ListConfig,
) -> anyhow::Result<(String, (String, String))> {
    let mut token = String::new();
    let mut seen = 0;
    let mut last = None;
    while seen < config.deep_rows {
        let page = caller
            .reporting()
            .list_customers(pb::ListCustomersRequest {
                page_size: config.page_size,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .context("ListCustomers, paging to the deep page")?
            .into_inner();
        seen += page.customers.len();
        last = page
            .customers
            .last()
            .map(|c| (c.company_name.clone(), c.knox_id.clone()));
        anyhow::ensure!(
            !page.next_page_token.is_empty(),
            "the list ended after {seen} rows, before the deep page ({} rows in)",
            config.deep_rows
        );
        token = page.next_page_token;
    }
    Ok((token, last.context("no rows")?))
}

/// Runs the benchmark.
///
/// # Errors
/// Seeding or a call failed, or the service and the bare SQL found different rows.
pub async fn run(stack: &Stack, config: &ListConfig) -> anyhow::Result<Value> {
    eprintln!(
        "==> list at scale: seeding {} customers, {} devices, {} activity entries",
        config.customers, config.devices, config.activity_entries
    );
    let seeded = seed(stack, config).await?;
    let caller = stack.caller_own_channel(Role::Reseller, RESELLER).await?;
    let (deep_page_token, deep_after) = deep_token(&caller, config).await?;
    let pattern = format!("%{}%", config.query);
    // The customer whose entries the filtered page lists: one with entries at any scale.
    let customer = knox_id(7.min(config.customers));
    let cases: Vec<(&str, Case)> = vec![
        (
            "customers_first_page",
            Case::Customers {
                request: pb::ListCustomersRequest {
                    page_size: config.page_size,
                    ..Default::default()
                },
                pattern: None,
                after: None,
            },
        ),
        (
            "customers_deep_page",
            Case::Customers {
                request: pb::ListCustomersRequest {
                    page_size: config.page_size,
                    page_token: deep_page_token,
                    ..Default::default()
                },
                pattern: None,
                after: Some(deep_after),
            },
        ),
        (
            "customers_search",
            Case::Customers {
                request: pb::ListCustomersRequest {
                    query: config.query.clone(),
                    page_size: config.page_size,
                    ..Default::default()
                },
                pattern: Some(pattern),
                after: None,
            },
        ),
        (
            "activity_first_page",
            Case::Activity {
                request: pb::ListActivityRequest {
                    page_size: config.page_size,
                    ..Default::default()
                },
            },
        ),
        (
            "activity_customer_page",
            Case::Activity {
                request: pb::ListActivityRequest {
                    customer_knox_id: customer,
                    page_size: config.page_size,
                    ..Default::default()
                },
            },
        ),
    ];
    let mut conn = stack.pool.acquire().await?;
    let mut samples: Vec<(Samples, Samples)> = vec![Default::default(); cases.len()];
    // What a call costs that does no work, on either side: a health check on the same
    // channel, and `SELECT 1` on the same connection.
    let mut floors: (Samples, Samples) = Default::default();
    let mut found: Vec<Option<Found>> = (0..cases.len()).map(|_| None).collect();
    eprintln!(
        "==> list at scale: {} rounds of {} cases, service and bare SQL alternately",
        config.rounds,
        cases.len()
    );
    // Round 0 is unmeasured: it warms the connections and the plan caches, and checks
    // that both sides find the same rows.
    for round in 0..=config.rounds {
        let started = Instant::now();
        caller
            .health()
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .context("grpc.health.v1.Health/Check")?;
        let health_took = started.elapsed();
        let started = Instant::now();
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        let select_took = started.elapsed();
        if round > 0 {
            floors.0.push(Some(health_took));
            floors.1.push(Some(select_took));
        }
        for (i, (name, case)) in cases.iter().enumerate() {
            let started = Instant::now();
            let service = call_service(&caller, case).await?;
            let took = started.elapsed();
            let started = Instant::now();
            let bare = call_bare(&mut conn, case, config.page_size).await?;
            let bare_took = started.elapsed();
            anyhow::ensure!(
                service == bare,
                "{name}: the service found {service:?}, the bare SQL {bare:?}"
            );
            anyhow::ensure!(service.rows > 0, "{name}: an empty page");
            if round == 0 {
                found[i] = Some(service);
            } else {
                samples[i].0.push(Some(took));
                samples[i].1.push(Some(bare_took));
            }
        }
    }

    let mut results = serde_json::Map::new();
    let mut ratios = serde_json::Map::new();
    let mut pass = true;
    for ((name, _), ((service, bare), found)) in cases.iter().zip(samples.iter().zip(&found)) {
        let ratio = |p: f64| match (service.percentile(p), bare.percentile(p)) {
            (Some(s), Some(b)) if !b.is_zero() => Some(round3(s.as_secs_f64() / b.as_secs_f64())),
            _ => None,
        };
        let p99_ratio = ratio(99.0);
        pass &= p99_ratio.is_some_and(|r| r <= config.target_ratio);
        ratios.insert((*name).to_owned(), json!(p99_ratio));
        results.insert(
            (*name).to_owned(),
            json!({
                "rows_on_page": found.as_ref().map(|f| f.rows),
                "total_size": found.as_ref().and_then(|f| f.total),
                "service": service.summary(),
                "bare_sql": bare.summary(),
                "p50_ratio": ratio(50.0),
                "p99_ratio": p99_ratio,
            }),
        );
    }
    let search = cases
        .iter()
        .position(|(name, _)| *name == "customers_search")
        .and_then(|i| samples[i].0.percentile(99.0));
    let search_pass = search.is_some_and(|p99| p99 <= config.search_target);
    Ok(json!({
        "name": "list_at_scale",
        "customers": config.customers,
        "devices": config.devices,
        "activity_entries": config.activity_entries,
        "page_size": config.page_size,
        "deep_page_after_rows": config.deep_rows,
        "search_query": config.query,
        "seeded": seeded.json(),
        "cases": results,
        "floors": {
            "what": "each round, a call that does no work on either side: grpc.health.v1.Health/Check on the service's channel (no token, no SQL: the transport, HTTP/2 on loopback with both processes woken) and SELECT 1 on the bare side's connection (one PostgreSQL round trip); a case's service time minus the health check, against its bare time minus SELECT 1, is what the service adds beyond the transport",
            "health_check": floors.0.summary(),
            "select_1": floors.1.summary(),
        },
        "p99_ratios": ratios,
        "search_p99_ms": search.map(ms),
        "target_p99_ratio": config.target_ratio,
        "target_search_p99_ms": ms(config.search_target),
        "pass_ratios": pass,
        "pass_search": search_pass,
        "pass": pass && search_pass,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_statements_are_the_services() {
        // The text `Sql` builds in reporting-service's `postgres::read` for the default
        // order, written out from its fragments.
        let (count, page) = list_statements(true, true);
        assert_eq!(
            count,
            "SELECT count(*) FROM reporting.customer_rows WHERE listed AND reseller_id = $1 \
             AND search_text LIKE lower($2) ESCAPE '\\'"
        );
        assert!(page.ends_with(
            r#"WHERE listed AND reseller_id = $1 AND search_text LIKE lower($2) ESCAPE '\' AND (company_name COLLATE "und-x-icu", knox_id) > ($3, $4) ORDER BY company_name COLLATE "und-x-icu", knox_id LIMIT $5"#
        ));
        let (_, first) = list_statements(false, true);
        assert!(first.contains(
            "(SELECT n.listed FROM reporting.listed_counts n WHERE n.reseller_id = $1) AS listed_count"
        ));
        assert!(first.ends_with(
            r#"FROM reporting.customer_rows WHERE listed AND reseller_id = $2 AND (company_name COLLATE "und-x-icu", knox_id) > ($3, $4) ORDER BY company_name COLLATE "und-x-icu", knox_id LIMIT $5"#
        ));
    }
}
