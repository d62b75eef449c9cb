//! The activity log's writes (inside the consumer's transaction) and reads (migration
//! 0008). An entry may be written by several events (a move's parts; a deletion's parts
//! and its `deletion_recorded`): each adds its counts once (the inbox applies an event
//! once), the earliest time stays, and the customers an entry touches keep the entry's
//! time so the customer filter pages by one index.

use reseller_kit::one_statement::Params;
use sqlx::{PgConnection, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::Repository;
use crate::domain::{Activity, ActivityCursor, ActivityFilter, ActivityKind, PortalProgress};

/// What one event adds to an entry of one reseller's activity log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityFact {
    /// The reseller whose log it is.
    pub reseller_id: String,
    /// The entry (see migration 0008).
    pub activity_id: String,
    /// When it happened.
    pub occurred_at: OffsetDateTime,
    /// What it records.
    pub kind: ActivityKind,
    /// Who did it ("" when this event does not say).
    pub actor: String,
    /// The customer it is about ("" when none or several).
    pub customer_knox_id: String,
    /// Every customer it touches.
    pub customers: Vec<String>,
    /// The upload.
    pub upload_id: Option<Uuid>,
    /// The deletion.
    pub deletion_id: Option<Uuid>,
    /// Devices accepted, added to the entry's.
    pub accepted_count: i64,
    /// Devices rejected (deletions: identifiers not found), added to the entry's.
    pub rejected_count: i64,
    /// Devices concerned, added to the entry's.
    pub device_count: i64,
    /// A deletion's parts (the greatest said wins).
    pub part_count: i32,
    /// The summary's detail ("" keeps the entry's).
    pub detail: String,
    /// A deletion's final state in the reseller, MSP and customer portals
    /// (`reseller.v1.PortalState` numbers; `None` keeps the entry's).
    pub portal_states: Option<[i16; 3]>,
}

impl ActivityFact {
    /// A fact with no counts and no customers.
    pub fn new(
        reseller_id: &str,
        activity_id: String,
        occurred_at: OffsetDateTime,
        kind: ActivityKind,
        actor: &str,
    ) -> Self {
        ActivityFact {
            reseller_id: reseller_id.to_owned(),
            activity_id,
            occurred_at,
            kind,
            actor: actor.to_owned(),
            customer_knox_id: String::new(),
            customers: Vec::new(),
            upload_id: None,
            deletion_id: None,
            accepted_count: 0,
            rejected_count: 0,
            device_count: 0,
            part_count: 0,
            detail: String::new(),
            portal_states: None,
        }
    }

    /// The same fact about `customer` (its own and the one it touches).
    pub fn about(mut self, customer: &str) -> Self {
        self.customer_knox_id = customer.to_owned();
        self.customers = vec![customer.to_owned()];
        self
    }
}

/// Adds `facts` to the activity log: creates each entry or adds to it, then records the
/// customers it touches at the entry's (earliest) time.
///
/// # Errors
/// Database errors.
pub async fn record_activity(
    conn: &mut PgConnection,
    facts: &[ActivityFact],
) -> Result<(), sqlx::Error> {
    for f in facts {
        // One round trip: the entry, then the customers this fact names and those an
        // earlier fact named, all at the entry's time (which this fact may have made
        // earlier; rows inserted here already carry it).
        sqlx::query!(
            "WITH entry AS (
               INSERT INTO reporting.activities AS a
                 (reseller_id, activity_id, occurred_at, kind, actor, customer_knox_id, upload_id,
                  deletion_id, accepted_count, rejected_count, device_count, part_count, detail,
                  reseller_portal, msp_portal, customer_portal)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $15, $16, $17)
               ON CONFLICT (reseller_id, activity_id) DO UPDATE
               SET occurred_at = LEAST(a.occurred_at, EXCLUDED.occurred_at),
                   actor = CASE WHEN EXCLUDED.actor <> '' THEN EXCLUDED.actor ELSE a.actor END,
                   customer_knox_id = CASE WHEN EXCLUDED.customer_knox_id <> ''
                     THEN EXCLUDED.customer_knox_id ELSE a.customer_knox_id END,
                   upload_id = COALESCE(EXCLUDED.upload_id, a.upload_id),
                   deletion_id = COALESCE(EXCLUDED.deletion_id, a.deletion_id),
                   accepted_count = a.accepted_count + EXCLUDED.accepted_count,
                   rejected_count = a.rejected_count + EXCLUDED.rejected_count,
                   device_count = a.device_count + EXCLUDED.device_count,
                   part_count = GREATEST(a.part_count, EXCLUDED.part_count),
                   detail = CASE WHEN EXCLUDED.detail <> '' THEN EXCLUDED.detail ELSE a.detail END,
                   reseller_portal = COALESCE(EXCLUDED.reseller_portal, a.reseller_portal),
                   msp_portal = COALESCE(EXCLUDED.msp_portal, a.msp_portal),
                   customer_portal = COALESCE(EXCLUDED.customer_portal, a.customer_portal)
               RETURNING occurred_at),
             named AS (
               INSERT INTO reporting.activity_customers AS c
                 (reseller_id, customer_knox_id, activity_id, occurred_at)
               SELECT $1, k, $2, entry.occurred_at FROM UNNEST($14::text[]) AS k, entry
               ON CONFLICT (reseller_id, customer_knox_id, activity_id) DO NOTHING)
             UPDATE reporting.activity_customers AS c SET occurred_at = entry.occurred_at
             FROM entry
             WHERE c.reseller_id = $1 AND c.activity_id = $2 AND c.occurred_at <> entry.occurred_at",
            &f.reseller_id,
            &f.activity_id,
            f.occurred_at,
            f.kind.as_db(),
            &f.actor,
            &f.customer_knox_id,
            f.upload_id,
            f.deletion_id,
            f.accepted_count,
            f.rejected_count,
            f.device_count,
            f.part_count,
            &f.detail,
            &f.customers,
            f.portal_states.map(|s| s[0]),
            f.portal_states.map(|s| s[1]),
            f.portal_states.map(|s| s[2]),
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// CTEs for a deletion part's one statement (after `removed`, see
/// `delete_registrations_ctes`): records which deletion deleted each registration and
/// when, creates the deletion's entry if its `deletion_recorded` has not been projected
/// yet (without touching it otherwise: the parts of a big deletion would all update the
/// one row), and lists the entry under each customer the part removed devices from.
pub fn deletion_part_ctes(
    reseller_id: &str,
    deletion_id: Uuid,
    deleted_at: OffsetDateTime,
    actor: &str,
    ids: &str,
    uploads: &str,
    params: &mut Params,
) -> String {
    let reseller = params.bind(reseller_id.to_owned());
    let deletion = params.bind(deletion_id);
    let entry = params.bind(deletion_id.to_string());
    let at = params.bind(deleted_at);
    let actor = params.bind(actor.to_owned());
    format!(
        "deleted_by AS ( \
           INSERT INTO reporting.registration_deletions (device_id, upload_id, deletion_id, deleted_at) \
           SELECT d, u, {deletion}, {at} FROM UNNEST({ids}::text[], {uploads}::uuid[]) AS x (d, u) \
           ON CONFLICT DO NOTHING), \
         deletion_entry AS ( \
           INSERT INTO reporting.activities (reseller_id, activity_id, occurred_at, kind, actor, deletion_id) \
           VALUES ({reseller}, {entry}, {at}, 'DELETION', {actor}, {deletion}) \
           ON CONFLICT DO NOTHING), \
         deletion_customers AS ( \
           INSERT INTO reporting.activity_customers (reseller_id, customer_knox_id, activity_id, occurred_at) \
           SELECT DISTINCT {reseller}, m.placed_knox_id, {entry}, \
             COALESCE((SELECT a.occurred_at FROM reporting.activities a \
                       WHERE a.reseller_id = {reseller} AND a.activity_id = {entry}), {at}) \
           FROM removed m \
           ON CONFLICT DO NOTHING)"
    )
}

/// Lists each deletion that deleted one of the registrations `ids`/`uploads` (pairwise)
/// under the rows its deleted registrations are placed under now, and no other: for an
/// upload, move or link projected after the deletion, which placed or re-placed them. So
/// a deletion's customers end the same whatever order the events came in (each
/// registration's placement does). Registrations not deleted are skipped.
///
/// Costs a read of each such deletion's registrations (index
/// `registration_deletions_by_deletion`); callers call it only when a deleted
/// registration was placed.
///
/// # Errors
/// Database errors.
pub async fn relist_deletions(
    conn: &mut PgConnection,
    ids: &[String],
    uploads: &[Uuid],
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "WITH touched AS (
           SELECT DISTINCT r.reseller_id, x.deletion_id
           FROM UNNEST($1::text[], $2::uuid[]) AS k (device_id, upload_id)
           JOIN reporting.registrations r
             ON r.device_id = k.device_id AND r.upload_id = k.upload_id AND r.deleted
           JOIN reporting.registration_deletions x
             ON x.device_id = k.device_id AND x.upload_id = k.upload_id),
         placed AS (
           SELECT DISTINCT t.reseller_id, t.deletion_id, r.placed_knox_id
           FROM touched t
           JOIN reporting.registration_deletions x ON x.deletion_id = t.deletion_id
           JOIN reporting.registrations r
             ON r.device_id = x.device_id AND r.upload_id = x.upload_id
           WHERE r.reseller_id = t.reseller_id AND r.deleted AND r.placed_knox_id IS NOT NULL),
         stale AS (
           DELETE FROM reporting.activity_customers c USING touched t
           WHERE c.reseller_id = t.reseller_id AND c.activity_id = t.deletion_id::text
             AND NOT EXISTS (SELECT 1 FROM placed p
                             WHERE p.deletion_id = t.deletion_id
                               AND p.placed_knox_id = c.customer_knox_id))
         INSERT INTO reporting.activity_customers AS c
           (reseller_id, customer_knox_id, activity_id, occurred_at)
         SELECT p.reseller_id, p.placed_knox_id, p.deletion_id::text,
           COALESCE((SELECT a.occurred_at FROM reporting.activities a
                     WHERE a.reseller_id = p.reseller_id AND a.activity_id = p.deletion_id::text),
                    (SELECT min(x.deleted_at) FROM reporting.registration_deletions x
                     WHERE x.deletion_id = p.deletion_id))
         FROM placed p
         ON CONFLICT (reseller_id, customer_knox_id, activity_id) DO NOTHING",
        ids,
        uploads,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The resellers whose devices `customer` holds (moved there by an MSP) or who list the
/// customer: the logs a delink of the customer belongs in.
///
/// # Errors
/// Database errors.
pub async fn resellers_concerned(
    conn: &mut PgConnection,
    customer: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT reseller_id AS "reseller_id!" FROM reporting.customer_rows WHERE knox_id = $1
           UNION
           SELECT reseller_id FROM reporting.registrations
           WHERE holder_knox_id = $1
             AND ((uploaded_to_msp AND holder_knox_id <> uploaded_to)
                  -- Moved there before its upload was projected: the move says whose.
                  OR uploaded_to IS NULL)"#,
        customer,
    )
    .fetch_all(&mut *conn)
    .await
}

/// A page of the activity log, newest first.
#[derive(Debug, Clone, Default)]
pub struct ActivityPage {
    /// The entries.
    pub entries: Vec<Activity>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<ActivityCursor>,
}

impl Repository {
    /// One page of the reseller's activity log matching `filter`, newest first, after
    /// `after`; `limit` entries at most.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list_activity(
        &self,
        reseller_id: &str,
        filter: &ActivityFilter,
        after: Option<(OffsetDateTime, String)>,
        limit: i64,
    ) -> Result<ActivityPage, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        activity_page(&mut conn, reseller_id, filter, after, limit).await
    }

    /// A read-only transaction on one snapshot (`REPEATABLE READ`), for a download that
    /// reads the log page by page with [`activity_page`] and must show every entry as
    /// it was when the download began.
    ///
    /// # Errors
    /// Database errors.
    pub async fn begin_snapshot(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
    }
}

/// One page of the reseller's activity log matching `filter`, newest first, after
/// `after`; `limit` entries at most; read on `conn` (a snapshot's transaction for a
/// download, see [`Repository::begin_snapshot`]).
///
/// # Errors
/// Database errors.
pub async fn activity_page(
    conn: &mut PgConnection,
    reseller_id: &str,
    filter: &ActivityFilter,
    after: Option<(OffsetDateTime, String)>,
    limit: i64,
) -> Result<ActivityPage, sqlx::Error> {
    let kinds = filter.kinds_db();
    let (after_at, after_id) = after.unzip();
    // One more than asked tells whether another page follows.
    let fetch = limit + 1;
    let mut rows: Vec<ActivityRow> = match &filter.customer_knox_id {
        None => {
            sqlx::query_as!(
                ActivityRow,
                r#"SELECT a.activity_id, a.occurred_at, a.kind, a.actor, a.customer_knox_id,
                     a.upload_id, a.deletion_id, a.accepted_count, a.rejected_count,
                     a.device_count, a.detail, a.reseller_portal, a.msp_portal, a.customer_portal,
                     ARRAY(SELECT c.customer_knox_id FROM reporting.activity_customers c
                           WHERE c.reseller_id = a.reseller_id AND c.activity_id = a.activity_id
                           ORDER BY 1) AS "customers!"
                   FROM reporting.activities a
                   WHERE a.reseller_id = $1 AND a.kind = ANY($2::text[])
                     AND ($3::timestamptz IS NULL OR a.occurred_at >= $3)
                     AND ($4::timestamptz IS NULL OR a.occurred_at < $4)
                     AND ($5::timestamptz IS NULL OR (a.occurred_at, a.activity_id) < ($5, $6))
                   ORDER BY a.occurred_at DESC, a.activity_id DESC
                   LIMIT $7"#,
                reseller_id,
                &kinds as &[&str],
                filter.since,
                filter.until,
                after_at,
                after_id,
                fetch,
            )
            .fetch_all(&mut *conn)
            .await?
        }
        Some(customer) => {
            sqlx::query_as!(
                ActivityRow,
                r#"SELECT a.activity_id, a.occurred_at, a.kind, a.actor, a.customer_knox_id,
                     a.upload_id, a.deletion_id, a.accepted_count, a.rejected_count,
                     a.device_count, a.detail, a.reseller_portal, a.msp_portal, a.customer_portal,
                     ARRAY(SELECT c2.customer_knox_id FROM reporting.activity_customers c2
                           WHERE c2.reseller_id = a.reseller_id AND c2.activity_id = a.activity_id
                           ORDER BY 1) AS "customers!"
                   FROM reporting.activity_customers c
                   JOIN reporting.activities a
                     ON a.reseller_id = c.reseller_id AND a.activity_id = c.activity_id
                   WHERE c.reseller_id = $1 AND c.customer_knox_id = $8
                     AND a.kind = ANY($2::text[])
                     AND ($3::timestamptz IS NULL OR c.occurred_at >= $3)
                     AND ($4::timestamptz IS NULL OR c.occurred_at < $4)
                     AND ($5::timestamptz IS NULL OR (c.occurred_at, c.activity_id) < ($5, $6))
                   ORDER BY c.occurred_at DESC, c.activity_id DESC
                   LIMIT $7"#,
                reseller_id,
                &kinds as &[&str],
                filter.since,
                filter.until,
                after_at,
                after_id,
                fetch,
                customer,
            )
            .fetch_all(&mut *conn)
            .await?
        }
    };
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let entries: Vec<Activity> = rows.into_iter().map(ActivityRow::into_activity).collect();
    let next = if more {
        entries.last().map(ActivityCursor::after)
    } else {
        None
    };
    Ok(ActivityPage { entries, next })
}

/// One row of the activity log's reads.
struct ActivityRow {
    activity_id: String,
    occurred_at: OffsetDateTime,
    kind: String,
    actor: String,
    customer_knox_id: String,
    upload_id: Option<Uuid>,
    deletion_id: Option<Uuid>,
    accepted_count: i64,
    rejected_count: i64,
    device_count: i64,
    detail: String,
    reseller_portal: Option<i16>,
    msp_portal: Option<i16>,
    customer_portal: Option<i16>,
    customers: Vec<String>,
}

impl ActivityRow {
    fn into_activity(self) -> Activity {
        Activity {
            // The column's CHECK allows only the kinds `from_db` knows.
            kind: ActivityKind::from_db(&self.kind).unwrap_or(ActivityKind::Upload),
            activity_id: self.activity_id,
            occurred_at: self.occurred_at,
            actor: self.actor,
            customer_knox_id: self.customer_knox_id,
            customer_knox_ids: self.customers,
            upload_id: self.upload_id,
            deletion_id: self.deletion_id,
            accepted_count: self.accepted_count,
            rejected_count: self.rejected_count,
            device_count: self.device_count,
            detail: self.detail,
            portal_states: [self.reseller_portal, self.msp_portal, self.customer_portal]
                .map(PortalProgress::from_db),
        }
    }
}
