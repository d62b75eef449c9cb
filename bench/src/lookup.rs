//! (f) Lookup (issue #12): `FindDevices` of 1,000 identifiers among `--lookup-devices`
//! registered devices, against the same lookup as bare SQL on the projection's tables,
//! alternately in one run; the target is p99 ≤ 2× the bare SQL's.
//!
//! The devices are seeded straight into reporting-service's projection
//! (`reporting.registrations`, and `reporting.secondary_identifiers` for every tenth
//! device, which also has a serial as its secondary identifier), server-side with
//! `generate_series`: ten million devices through `UploadDevices` and the events would
//! take the better part of an hour, and the lookup reads only the projection. They
//! belong to the bench's reseller, under an account no other benchmark uses.

use std::time::{Duration, Instant};

use anyhow::Context;
use reseller_kit::auth::Role;
use reseller_proto::v1 as pb;
use serde_json::{Value, json};

use crate::setup::RESELLER;
use crate::stack::Stack;
use crate::stats::{Samples, round3};

/// Settings of the lookup benchmark.
#[derive(Debug, Clone)]
pub struct LookupConfig {
    /// Devices seeded into the projection.
    pub devices: usize,
    /// Lookups of each side.
    pub rounds: usize,
    /// Identifiers per lookup (the RPC's limit is 1,000).
    pub batch: usize,
    /// The target: service p99 over bare SQL p99.
    pub target_ratio: f64,
}

/// The account the seeded devices are placed under.
const LOOKUP_ACCOUNT: &str = "900000000077";

/// The seeded device `n`'s ID (a serial), and its secondary identifier for every tenth.
fn device_id(n: u64) -> String {
    format!("LK{n:010}")
}
fn secondary_id(n: u64) -> String {
    format!("LS{n:010}")
}

/// Seeds `devices` registrations of the bench's reseller, 1,000 per upload.
async fn seed(stack: &Stack, devices: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    stack
        .execute(&format!(
            "INSERT INTO reporting.registrations \
               (device_id, upload_id, reseller_id, id_kind, model, uploaded_at, order_number, \
                uploaded_to, uploaded_to_msp, holder_knox_id, placed_knox_id, secondary_ids) \
             SELECT 'LK' || lpad(n::text, 10, '0'), \
               ('00000000-0000-7000-8000-' || lpad(to_hex(n / 1000), 12, '0'))::uuid, \
               '{RESELLER}', 3, 'SM-S921B', now() - (n || ' ms')::interval, 'PO-LOOKUP', \
               '{LOOKUP_ACCOUNT}', false, '{LOOKUP_ACCOUNT}', '{LOOKUP_ACCOUNT}', \
               CASE WHEN n % 10 = 0 THEN ARRAY['LS' || lpad(n::text, 10, '0')] ELSE '{{}}' END \
             FROM generate_series(1, {devices}) AS n"
        ))
        .await
        .context("seeding reporting.registrations")?;
    stack
        .execute(&format!(
            "INSERT INTO reporting.secondary_identifiers (identifier, device_id, upload_id) \
             SELECT 'LS' || lpad(n::text, 10, '0'), 'LK' || lpad(n::text, 10, '0'), \
               ('00000000-0000-7000-8000-' || lpad(to_hex(n / 1000), 12, '0'))::uuid \
             FROM generate_series(10, {devices}, 10) AS n"
        ))
        .await
        .context("seeding reporting.secondary_identifiers")?;
    stack
        .execute("VACUUM (ANALYZE) reporting.registrations, reporting.secondary_identifiers")
        .await?;
    Ok(started.elapsed())
}

/// The reference: reporting-service's lookup statement (`postgres::lookups`,
/// `find_devices`), run bare from this process: what the RPC adds is gRPC, parsing the
/// identifiers and building the answer.
const BARE_LOOKUP: &str = "WITH asked AS ( \
       SELECT k.id, k.n FROM UNNEST($2::text[]) WITH ORDINALITY AS k (id, n)), \
     matched AS ( \
       SELECT a.n, r.device_id, r.upload_id FROM asked a \
       JOIN reporting.registrations r ON r.device_id = a.id \
       WHERE r.reseller_id = $1 \
       UNION ALL \
       SELECT a.n, s.device_id, s.upload_id FROM asked a \
       JOIN reporting.secondary_identifiers s ON s.identifier = a.id) \
   SELECT DISTINCT ON (m.n) m.n, r.device_id, r.id_kind, r.model, \
     r.secondary_ids, r.placed_knox_id, r.holder_knox_id, r.moved_by_msp, \
     r.via_msp_id, CASE WHEN r.uploaded_to_msp THEN r.uploaded_to END AS uploaded_to_msp, \
     r.upload_id, r.order_number, r.uploaded_at, r.virtual, r.deleted, \
     x.deletion_id, x.deleted_at \
   FROM matched m \
   JOIN reporting.registrations r \
     ON r.device_id = m.device_id AND r.upload_id = m.upload_id \
   LEFT JOIN reporting.registration_deletions x \
     ON x.device_id = r.device_id AND x.upload_id = r.upload_id \
   WHERE r.reseller_id = $1 AND r.uploaded_to IS NOT NULL \
   ORDER BY m.n, r.uploaded_at DESC, r.upload_id DESC";

/// One lookup's identifiers: spread over the whole table (a multiplicative step, so
/// every round asks for other devices), a tenth of them by secondary identifier and a
/// twentieth unknown.
fn identifiers(round: usize, config: &LookupConfig) -> (Vec<String>, usize) {
    let n = config.devices as u64;
    let mut known = 0;
    let ids = (0..config.batch as u64)
        .map(|i| {
            let k = (round as u64 * config.batch as u64 + i).wrapping_mul(2_654_435_761) % n + 1;
            match i % 20 {
                0 => format!("LX{k:010}"), // nobody's
                1 | 11 => {
                    known += 1;
                    secondary_id((k / 10).max(1) * 10)
                }
                _ => {
                    known += 1;
                    device_id(k)
                }
            }
        })
        .collect();
    (ids, known)
}

/// Runs the benchmark.
///
/// # Errors
/// Seeding or a lookup failed, or a lookup found other than it should.
pub async fn run(stack: &Stack, config: &LookupConfig) -> anyhow::Result<Value> {
    eprintln!(
        "==> lookup: seeding {} devices into the projection",
        config.devices
    );
    let seeded = seed(stack, config.devices).await?;
    let caller = stack.caller_own_channel(Role::Reseller, RESELLER).await?;
    let mut conn = stack.pool.acquire().await?;
    let (mut service, mut bare) = (Samples::default(), Samples::default());
    eprintln!(
        "==> lookup: {} rounds of {} identifiers, service and bare SQL alternately",
        config.rounds, config.batch
    );
    // One unmeasured round of each warms the connection and the plan cache.
    for round in 0..=config.rounds {
        let (ids, known) = identifiers(round, config);
        let started = Instant::now();
        let found = caller
            .reporting()
            .find_devices(pb::FindDevicesRequest {
                device_ids: ids.clone(),
            })
            .await
            .context("FindDevices")?
            .into_inner()
            .devices;
        let took = started.elapsed();
        let found_count = found.iter().filter(|d| d.found).count();
        anyhow::ensure!(
            found_count == known,
            "FindDevices found {found_count} of the {known} seeded identifiers asked"
        );
        let started = Instant::now();
        let rows = sqlx::query(sqlx::AssertSqlSafe(BARE_LOOKUP))
            .bind(RESELLER)
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?;
        let bare_took = started.elapsed();
        anyhow::ensure!(
            rows.len() == known,
            "bare SQL found {} of {known}",
            rows.len()
        );
        if round > 0 {
            service.push(Some(took));
            bare.push(Some(bare_took));
        }
    }
    let ratio = |p: f64| match (service.percentile(p), bare.percentile(p)) {
        (Some(s), Some(b)) if !b.is_zero() => Some(round3(s.as_secs_f64() / b.as_secs_f64())),
        _ => None,
    };
    let p99_ratio = ratio(99.0);
    Ok(json!({
        "name": "lookup",
        "devices": config.devices,
        "identifiers_per_lookup": config.batch,
        "seeded_seconds": round3(seeded.as_secs_f64()),
        "service": service.summary(),
        "bare_sql": bare.summary(),
        "p50_ratio": ratio(50.0),
        "p99_ratio": p99_ratio,
        "target_p99_ratio": config.target_ratio,
        "pass": p99_ratio.is_some_and(|r| r <= config.target_ratio),
    }))
}

#[cfg(test)]
mod tests {
    use super::BARE_LOOKUP;

    /// The reference must stay the service's statement: the text of `find_devices` in
    /// reporting-service, but for sqlx's column annotations (`AS "n!"`, …).
    #[test]
    fn the_bare_lookup_is_the_services_statement() {
        let service = include_str!("../../services/reporting/src/postgres/lookups.rs");
        let start = service
            .find("WITH asked AS")
            .expect("find_devices' statement");
        let end = start + service[start..].find("\"#").expect("its end");
        let statement = ["n!", "deletion_id?", "deleted_at?"]
            .iter()
            .fold(service[start..end].to_owned(), |s, name| {
                s.replace(&format!(" AS \"{name}\""), "")
            });
        let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(words(&statement), words(BARE_LOOKUP));
    }
}
