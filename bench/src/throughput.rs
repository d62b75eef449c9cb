//! Throughput under sustained mixed load (issue #10): for a while, uploads of devices to
//! several customers and to an MSP's pool, deletions of uploaded devices, the MSP moving
//! devices from its pool to its customers, and new customers onboarded and linked to the
//! MSP, each kind from its own closed-loop workers (the next call as soon as the last
//! one answered), through callers that spread over every replica of each service.
//!
//! Measured: the events the services' durable consumers applied per second (rows added
//! to `customer.inbox`, `device.inbox`, `msp.inbox` and `reporting.inbox`), during the
//! load and until every outbox was published and every consumer caught up; which replica
//! applied them; which replica led each schema's outbox relay; and that nothing was
//! applied twice: no inbox key twice (the primary key), no event ID twice in the stream,
//! and every projection shows exactly the devices and counts the workload's answers
//! imply.
//!
//! Which replica applied an event: the inbox rows do not record it, so before the load
//! the bench adds a column to each inbox table of its own database,
//! `bench_applied_by text DEFAULT current_setting('application_name')`. The consumers'
//! inserts name their columns, so the default fills it with the inserting connection's
//! `application_name`: `<binary>-<index>` for each replica of the cluster shape (set by
//! the harness), `reseller-portal` on the single shape.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use reseller_kit::auth::Role;
use reseller_proto::v1::{self as pb, AccountKind, ManagementMode};
use reseller_tests::cluster::Service;
use serde_json::{Value, json};
use sqlx::AssertSqlSafe;

use crate::clients::Caller;
use crate::setup::{self, RESELLER};
use crate::stack::Stack;
use crate::stats::{round3, secs};

/// Settings of the throughput benchmark.
#[derive(Debug, Clone)]
pub struct ThroughputConfig {
    /// How long the load runs.
    pub seconds: f64,
    /// Concurrent upload loops.
    pub uploaders: usize,
    /// Devices per upload.
    pub upload_devices: usize,
    /// Concurrent deletion loops.
    pub deleters: usize,
    /// Devices per deletion.
    pub delete_devices: usize,
    /// Devices per move (one move loop).
    pub move_devices: usize,
    /// A new customer is onboarded and linked to the MSP this often.
    pub onboard_interval: Duration,
    /// How long the stack may take to catch up after the load.
    pub settle_timeout: Duration,
}

/// The MSP of this benchmark (its own, so its portal holds only this load's devices).
const T_MSP: &str = "910000000090";
/// The reseller's customers the uploads go to.
const T_CUSTOMERS: [&str; 6] = [
    "910000000001",
    "910000000002",
    "910000000003",
    "910000000004",
    "910000000005",
    "910000000006",
];
/// Linked to [`T_MSP`] before the load: the first fully managed, the second jointly.
const T_LINKED: [(&str, ManagementMode); 2] = [
    (T_CUSTOMERS[0], ManagementMode::FullyManaged),
    (T_CUSTOMERS[1], ManagementMode::JointlyManaged),
];
/// Customers onboarded during the load are `910000100000 + n`.
const T_ONBOARDED_BASE: u64 = 910_000_100_000;
/// What every Knox ID of this benchmark contains, and no other account's (a
/// `ListCustomers` query).
const T_QUERY: &str = "91000";
/// Device numbers of this benchmark (see [`setup::device_id`]).
const T_DEVICE_BASE: u64 = 60_000_000;
/// The upload targets in turn: every third upload goes to the MSP's pool.
const UPLOAD_TARGETS: [&str; 9] = [
    T_CUSTOMERS[0],
    T_CUSTOMERS[1],
    T_MSP,
    T_CUSTOMERS[2],
    T_CUSTOMERS[3],
    T_MSP,
    T_CUSTOMERS[4],
    T_CUSTOMERS[5],
    T_MSP,
];
/// The schemas whose inbox tables are counted.
const SCHEMAS: [&str; 4] = ["customer", "device", "msp", "reporting"];
/// A pool device a move rejected (msp-link has not seen its upload yet) is tried again
/// this many times at most.
const MOVE_ATTEMPTS: u32 = 50;

/// Registers the MSP and the customers, and links two of them to the MSP.
///
/// # Errors
/// When a call fails.
pub async fn prepare(stack: &Stack) -> anyhow::Result<()> {
    setup::onboard(stack, T_MSP, AccountKind::Msp, "Throughput MSP AG").await?;
    for (i, knox) in T_CUSTOMERS.iter().enumerate() {
        setup::onboard(
            stack,
            knox,
            AccountKind::Customer,
            &format!("Throughput Customer {i} GmbH"),
        )
        .await?;
    }
    for (knox, mode) in T_LINKED {
        setup::link(stack, T_MSP, knox, mode).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// What the load did, from its answers.

#[derive(Debug, Default)]
struct Model {
    /// Devices each target accepted, in upload order.
    uploaded: BTreeMap<String, Vec<String>>,
    /// Devices the MSP moved, and where to.
    moved: HashMap<String, String>,
    /// Devices deleted.
    deleted: HashSet<String>,
    /// Customers' devices not yet deleted, oldest first (the deleters' queue).
    deletable: VecDeque<String>,
    /// Pool devices not moved yet, with the moves that rejected them so far.
    movable: VecDeque<(String, u32)>,
    /// Customers linked to the MSP (the move targets).
    linked: Vec<String>,
    /// Customers onboarded during the load.
    onboarded: Vec<String>,
    counts: Counts,
}

#[derive(Debug, Default, Clone)]
struct Counts {
    uploads: u64,
    uploaded_devices: u64,
    deletions: u64,
    deleted_devices: u64,
    deletions_not_found: u64,
    moves: u64,
    moved_devices: u64,
    move_rejections: u64,
    moves_given_up: u64,
    onboardings: u64,
    links: u64,
    /// Failed calls, by call and status.
    errors: BTreeMap<String, u64>,
}

impl Model {
    fn alive<'a>(&self, ids: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
        ids.into_iter()
            .filter(|id| !self.deleted.contains(*id))
            .cloned()
            .collect()
    }

    /// The devices `knox` accepted.
    fn uploaded_to(&self, knox: &str) -> impl Iterator<Item = &String> {
        self.uploaded.get(knox).into_iter().flatten()
    }

    /// The MSP portal: its pool (moved devices included) and what was uploaded to the
    /// customers it links.
    fn msp_portal(&self) -> BTreeSet<String> {
        let linked = T_LINKED.iter().map(|(knox, _)| *knox);
        let held = std::iter::once(T_MSP).chain(linked);
        self.alive(held.flat_map(|knox| self.uploaded_to(knox)))
    }

    /// A customer portal: what was uploaded to it and what the MSP moved to it.
    fn customer_portal(&self, knox: &str) -> BTreeSet<String> {
        let moved_here = self.moved.iter().filter(|(_, to)| to.as_str() == knox);
        self.alive(self.uploaded_to(knox).chain(moved_here.map(|(id, _)| id)))
    }

    /// Every account of this benchmark with the reseller's counts: (uploaded, alive).
    fn customer_rows(&self) -> BTreeMap<String, (i64, i64)> {
        T_CUSTOMERS
            .iter()
            .map(|k| k.to_string())
            .chain([T_MSP.to_string()])
            .chain(self.onboarded.iter().cloned())
            .map(|knox| {
                let uploaded = self.uploaded_to(&knox).count() as i64;
                let alive = self.alive(self.uploaded_to(&knox)).len() as i64;
                (knox, (uploaded, alive))
            })
            .collect()
    }
}

type Shared = Arc<Mutex<Model>>;

fn record_error(model: &Shared, what: &str, status: &tonic::Status) {
    let message: String = status.message().chars().take(120).collect();
    if let Ok(mut m) = model.lock() {
        *m.counts
            .errors
            .entry(format!("{what}: {:?} {message}", status.code()))
            .or_default() += 1;
    }
}

/// Pause after a failed call or an empty queue.
const BACKOFF: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------------
// The workers.

async fn uploader(
    caller: Caller,
    model: Shared,
    next: Arc<std::sync::atomic::AtomicU64>,
    config: ThroughputConfig,
    deadline: Instant,
) {
    let mut devices = caller.devices();
    while Instant::now() < deadline {
        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let target = UPLOAD_TARGETS[k as usize % UPLOAD_TARGETS.len()];
        let first = T_DEVICE_BASE + k * config.upload_devices as u64;
        let messages = setup::upload_messages(
            target,
            &format!("BENCH-T-{k}"),
            first,
            config.upload_devices,
            config.upload_devices,
            false,
        );
        match devices
            .upload_devices(futures::stream::iter(messages))
            .await
        {
            Ok(answer) => {
                let answer = answer.into_inner();
                let ids: Vec<String> = (first..first + config.upload_devices as u64)
                    .map(setup::device_id)
                    .collect();
                let Ok(mut m) = model.lock() else { return };
                if answer.rejected_count != 0 {
                    // Never expected: every device is new. The model no longer knows
                    // which were accepted, so the checks will say so.
                    *m.counts
                        .errors
                        .entry("UploadDevices: rejected devices".into())
                        .or_default() += answer.rejected_count as u64;
                    continue;
                }
                m.counts.uploads += 1;
                m.counts.uploaded_devices += ids.len() as u64;
                if target == T_MSP {
                    m.movable.extend(ids.iter().map(|id| (id.clone(), 0)));
                } else {
                    m.deletable.extend(ids.iter().cloned());
                }
                m.uploaded.entry(target.into()).or_default().extend(ids);
            }
            Err(status) => {
                record_error(&model, "UploadDevices", &status);
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
}

async fn deleter(caller: Caller, model: Shared, config: ThroughputConfig, deadline: Instant) {
    let mut devices = caller.devices();
    while Instant::now() < deadline {
        let ids: Vec<String> = {
            let Ok(mut m) = model.lock() else { return };
            if m.deletable.len() < config.delete_devices {
                Vec::new()
            } else {
                m.deletable.drain(..config.delete_devices).collect()
            }
        };
        if ids.is_empty() {
            tokio::time::sleep(BACKOFF).await;
            continue;
        }
        match devices
            .delete_devices(pb::DeleteDevicesRequest {
                device_ids: ids.clone(),
            })
            .await
        {
            Ok(answer) => {
                let answer = answer.into_inner();
                let Ok(mut m) = model.lock() else { return };
                m.counts.deletions += 1;
                m.counts.deleted_devices += answer.deleted_device_ids.len() as u64;
                m.counts.deletions_not_found += answer.not_found_count as u64;
                m.deleted.extend(answer.deleted_device_ids);
            }
            Err(status) => {
                record_error(&model, "DeleteDevices", &status);
                // Whether they were deleted is unknown: leave them out of the queue (the
                // checks will tell if the model is wrong).
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
}

async fn mover(caller: Caller, model: Shared, config: ThroughputConfig, deadline: Instant) {
    let mut msp = caller.msp();
    let mut turn = 0usize;
    while Instant::now() < deadline {
        let (batch, to) = {
            let Ok(mut m) = model.lock() else { return };
            if m.movable.is_empty() || m.linked.is_empty() {
                (Vec::new(), String::new())
            } else {
                let n = config.move_devices.min(m.movable.len());
                let batch: Vec<(String, u32)> = m.movable.drain(..n).collect();
                let to = m.linked[turn % m.linked.len()].clone();
                (batch, to)
            }
        };
        if batch.is_empty() {
            tokio::time::sleep(BACKOFF).await;
            continue;
        }
        turn += 1;
        let answer = msp
            .move_devices(pb::MoveDevicesRequest {
                device_ids: batch.iter().map(|(id, _)| id.clone()).collect(),
                to_customer_knox_id: to.clone(),
            })
            .await;
        let Ok(mut m) = model.lock() else { return };
        match answer {
            Ok(answer) => {
                let answer = answer.into_inner();
                let moved: HashSet<&String> = answer.moved_device_ids.iter().collect();
                m.counts.moves += 1;
                m.counts.moved_devices += moved.len() as u64;
                for (id, attempts) in &batch {
                    if moved.contains(id) {
                        m.moved.insert(id.clone(), to.clone());
                    } else if attempts + 1 < MOVE_ATTEMPTS {
                        // msp-link has not seen its upload yet: later.
                        m.counts.move_rejections += 1;
                        m.movable.push_back((id.clone(), attempts + 1));
                    } else {
                        m.counts.moves_given_up += 1;
                    }
                }
            }
            Err(status) => {
                drop(m);
                record_error(&model, "MoveDevices", &status);
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
}

async fn onboarder(stack: &Stack, model: Shared, config: ThroughputConfig, deadline: Instant) {
    let mut n = 0u64;
    let mut ticks = tokio::time::interval(config.onboard_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if Instant::now() >= deadline {
            return;
        }
        n += 1;
        let knox = (T_ONBOARDED_BASE + n).to_string();
        let onboarded = setup::onboard(
            stack,
            &knox,
            AccountKind::Customer,
            &format!("Onboarded Customer {n} GmbH"),
        )
        .await;
        if let Err(err) = onboarded {
            record_error(
                &model,
                "onboarding",
                &tonic::Status::unknown(format!("{err:#}")),
            );
            continue;
        }
        if let Ok(mut m) = model.lock() {
            m.counts.onboardings += 1;
            m.onboarded.push(knox.clone());
        }
        let mode = if n.is_multiple_of(2) {
            ManagementMode::JointlyManaged
        } else {
            ManagementMode::FullyManaged
        };
        match setup::link(stack, T_MSP, &knox, mode).await {
            Ok(()) => {
                if let Ok(mut m) = model.lock() {
                    m.counts.links += 1;
                    m.linked.push(knox);
                }
            }
            Err(err) => record_error(
                &model,
                "LinkCustomer",
                &tonic::Status::unknown(format!("{err:#}")),
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Counting.

/// Inbox rows per (schema, consumer, replica).
type InboxCounts = BTreeMap<(String, String, String), i64>;

async fn inbox_counts(stack: &Stack) -> anyhow::Result<InboxCounts> {
    let mut counts = InboxCounts::new();
    for schema in SCHEMAS {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT consumer, coalesce(bench_applied_by, ''), count(*) FROM {schema}.inbox GROUP BY 1, 2"
        )))
        .fetch_all(&stack.pool)
        .await
        .with_context(|| format!("counting {schema}.inbox"))?;
        for (consumer, by, n) in rows {
            counts.insert((schema.to_owned(), consumer, by), n);
        }
    }
    Ok(counts)
}

async fn inbox_total(stack: &Stack) -> anyhow::Result<i64> {
    let sql = SCHEMAS
        .iter()
        .map(|s| format!("(SELECT count(*) FROM {s}.inbox)"))
        .collect::<Vec<_>>()
        .join(" + ");
    Ok(sqlx::query_scalar(AssertSqlSafe(format!("SELECT {sql}")))
        .fetch_one(&stack.pool)
        .await?)
}

/// Rows that share an inbox key (none can: `(consumer, event_id)` is the primary key;
/// counted anyway, so the result says it was looked at).
async fn inbox_duplicate_keys(stack: &Stack) -> anyhow::Result<i64> {
    let mut total = 0;
    for schema in SCHEMAS {
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM (SELECT 1 FROM {schema}.inbox GROUP BY consumer, event_id HAVING count(*) > 1) d"
        )))
        .fetch_one(&stack.pool)
        .await?;
        total += n;
    }
    Ok(total)
}

/// Adds `bench_applied_by` to every inbox table (see the module's documentation).
async fn instrument(stack: &Stack) -> anyhow::Result<()> {
    for schema in SCHEMAS {
        stack
            .execute(&format!(
                "ALTER TABLE {schema}.inbox ADD COLUMN IF NOT EXISTS bench_applied_by text \
                 DEFAULT current_setting('application_name')"
            ))
            .await
            .with_context(|| format!("adding bench_applied_by to {schema}.inbox"))?;
    }
    Ok(())
}

/// The events stream's last sequence number.
async fn stream_last_sequence(js: &jetstream::Context) -> anyhow::Result<u64> {
    let mut stream = js
        .get_stream(reseller_kit::subjects::EVENTS_STREAM)
        .await
        .context("the events stream")?;
    Ok(stream.info().await?.state.last_sequence)
}

/// Reads the stream's messages `from..=to`: (messages, distinct event IDs, per kind).
async fn stream_events(
    js: &jetstream::Context,
    from: u64,
    to: u64,
) -> anyhow::Result<(u64, usize, BTreeMap<String, u64>)> {
    let mut kinds = BTreeMap::<String, u64>::new();
    let mut ids = HashSet::new();
    let mut messages_read = 0u64;
    if to < from {
        return Ok((0, 0, kinds));
    }
    let stream = js
        .get_stream(reseller_kit::subjects::EVENTS_STREAM)
        .await
        .context("the events stream")?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("reading the events stream: {e}"))?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = tokio::time::timeout(Duration::from_secs(10), messages.next()).await?
    {
        let message = message?;
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(to);
        messages_read += 1;
        if let Ok(event) = reseller_kit::events::decode(&message.payload) {
            ids.insert(event.id);
            let kind = format!("{:?}", event.payload);
            let kind = kind.split(['(', ' ']).next().unwrap_or("?").to_owned();
            *kinds.entry(kind).or_default() += 1;
        }
        if sequence >= to {
            break;
        }
    }
    Ok((messages_read, ids.len(), kinds))
}

// ---------------------------------------------------------------------------------------
// The projections' checks.

fn compare(what: &str, want: &BTreeSet<String>, got: &[String]) -> Result<(), String> {
    let got_set: BTreeSet<&String> = got.iter().collect();
    if got_set.len() != got.len() {
        return Err(format!(
            "{what}: {} rows but {} distinct devices",
            got.len(),
            got_set.len()
        ));
    }
    if got_set.len() == want.len() && want.iter().all(|id| got_set.contains(id)) {
        return Ok(());
    }
    let missing: Vec<_> = want
        .iter()
        .filter(|id| !got_set.contains(id))
        .take(3)
        .collect();
    let extra: Vec<_> = got_set
        .iter()
        .filter(|id| !want.contains(id.as_str()))
        .take(3)
        .collect();
    Err(format!(
        "{what}: {} devices, expected {} (missing e.g. {missing:?}, unexpected e.g. {extra:?})",
        got.len(),
        want.len()
    ))
}

/// The device IDs of every page of a portal's device list; `page` asks for the page at
/// a token and answers its devices and the next page's token ("" after the last).
async fn every_device_id<F, Fut>(mut page: F) -> Result<Vec<String>, tonic::Status>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(Vec<pb::PortalDevice>, String), tonic::Status>>,
{
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let (devices, next_page_token) = page(token).await?;
        ids.extend(devices.into_iter().map(|d| d.device_id));
        if next_page_token.is_empty() {
            return Ok(ids);
        }
        token = next_page_token;
    }
}

async fn check_views(stack: &Stack, model: &Model) -> Result<Value, String> {
    let status = |s: tonic::Status| format!("{:?} {}", s.code(), s.message());
    // The reseller's Customers page: uploads and live devices per account.
    let reseller = stack
        .caller(Role::Reseller, RESELLER)
        .map_err(|e| e.to_string())?;
    let mut rows = BTreeMap::new();
    let mut token = String::new();
    loop {
        let page = reseller
            .reporting()
            .list_customers(pb::ListCustomersRequest {
                query: T_QUERY.into(),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .map_err(status)?
            .into_inner();
        for c in page.customers {
            rows.insert(c.knox_id, (c.uploaded_devices, c.devices));
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let want_rows = model.customer_rows();
    if rows != want_rows {
        let differ: Vec<String> = want_rows
            .iter()
            .filter(|(k, v)| rows.get(*k) != Some(v))
            .take(4)
            .map(|(k, v)| format!("{k}: shows {:?}, expected {v:?}", rows.get(k)))
            .collect();
        return Err(format!(
            "ListCustomers (uploads, devices) differ: {}",
            differ.join("; ")
        ));
    }
    // The MSP portal.
    let msp = stack.caller(Role::Msp, T_MSP).map_err(|e| e.to_string())?;
    let got = every_device_id(|page_token| {
        let mut msp = msp.msp();
        async move {
            let request = pb::ListMspDevicesRequest {
                page_size: 1000,
                page_token,
                ..Default::default()
            };
            let page = msp.list_msp_devices(request).await?.into_inner();
            Ok((page.devices, page.next_page_token))
        }
    })
    .await
    .map_err(status)?;
    let msp_devices = got.len();
    compare("ListMspDevices", &model.msp_portal(), &got)?;
    // Every customer portal.
    let mut customer_devices = 0;
    let customers: Vec<String> = T_CUSTOMERS
        .iter()
        .map(|k| k.to_string())
        .chain(model.onboarded.iter().cloned())
        .collect();
    for knox in &customers {
        let caller = stack
            .caller(Role::Customer, knox)
            .map_err(|e| e.to_string())?;
        let got = every_device_id(|page_token| {
            let mut customers = caller.customers();
            async move {
                let request = pb::ListMyDevicesRequest {
                    page_size: 1000,
                    page_token,
                };
                let page = customers.list_my_devices(request).await?.into_inner();
                Ok((page.devices, page.next_page_token))
            }
        })
        .await
        .map_err(status)?;
        customer_devices += got.len();
        compare(
            &format!("ListMyDevices {knox}"),
            &model.customer_portal(knox),
            &got,
        )?;
    }
    Ok(json!({
        "list_customers_rows": rows.len(),
        "msp_portal_devices": msp_devices,
        "customer_portals": customers.len(),
        "customer_portal_devices": customer_devices,
    }))
}

// ---------------------------------------------------------------------------------------

/// Which replica leads each schema's relay, sampled: service → replica → samples.
type LeaderSamples = BTreeMap<&'static str, BTreeMap<String, u64>>;

async fn sample_leaders(stack: &Stack, samples: &mut LeaderSamples) {
    let Some(cluster) = stack.cluster() else {
        return;
    };
    for service in Service::ALL {
        let leader = match cluster.relay_leader(service).await {
            Ok(Some(i)) => format!("{}-{i}", service.binary()),
            Ok(None) => "none".into(),
            Err(_) => "unknown".into(),
        };
        *samples
            .entry(service.schema())
            .or_default()
            .entry(leader)
            .or_default() += 1;
    }
}

/// Runs the load and its checks; returns the JSON result.
///
/// # Errors
/// When the stack fails (a failed check is reported, not an error).
pub async fn run(
    stack: &Stack,
    js: &jetstream::Context,
    config: &ThroughputConfig,
) -> anyhow::Result<Value> {
    instrument(stack).await?;
    setup::settle(stack, js, Duration::from_secs(300)).await?;
    let before = inbox_counts(stack).await?;
    let sequence_before = stream_last_sequence(js).await?;
    let model: Shared = Arc::default();
    if let Ok(mut m) = model.lock() {
        m.linked = T_LINKED.iter().map(|(k, _)| k.to_string()).collect();
    }

    eprintln!(
        "==> throughput: {} s of load: {} uploaders ({} devices each), {} deleters ({} each), a mover ({} each), a customer onboarded and linked every {:?}",
        config.seconds,
        config.uploaders,
        config.upload_devices,
        config.deleters,
        config.delete_devices,
        config.move_devices,
        config.onboard_interval
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(config.seconds);
    let caller = stack.caller(Role::Reseller, RESELLER)?;
    let msp = stack.caller(Role::Msp, T_MSP)?;
    let next_upload = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..config.uploaders {
        workers.push(tokio::spawn(uploader(
            caller.clone(),
            model.clone(),
            next_upload.clone(),
            config.clone(),
            deadline,
        )));
    }
    for _ in 0..config.deleters {
        workers.push(tokio::spawn(deleter(
            caller.clone(),
            model.clone(),
            config.clone(),
            deadline,
        )));
    }
    workers.push(tokio::spawn(mover(
        msp,
        model.clone(),
        config.clone(),
        deadline,
    )));
    // Runs here (it borrows the stack): beside the per-second samples.
    let onboarding = onboarder(stack, model.clone(), config.clone(), deadline);
    let sampling = async {
        let mut per_second = Vec::new();
        let mut leaders = LeaderSamples::new();
        let mut last = inbox_total(stack).await.unwrap_or(0);
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        ticks.tick().await;
        while Instant::now() < deadline {
            ticks.tick().await;
            if let Ok(total) = inbox_total(stack).await {
                per_second.push(total - last);
                last = total;
            }
            sample_leaders(stack, &mut leaders).await;
            if !per_second.is_empty() && per_second.len().is_multiple_of(5) {
                let last: Vec<String> = per_second[per_second.len() - 5..]
                    .iter()
                    .map(i64::to_string)
                    .collect();
                eprintln!(
                    "    {:>4.0} s: events applied per second: {}",
                    started.elapsed().as_secs_f64(),
                    last.join(" ")
                );
            }
        }
        (per_second, leaders)
    };
    let ((), (per_second, mut leaders)) = tokio::join!(onboarding, sampling);
    for worker in workers {
        worker.await?;
    }
    let load_ended = Instant::now();
    let backlog_at_end = setup::backlog(stack, js).await?;
    let applied_at_end = inbox_total(stack).await?;
    eprintln!(
        "==> throughput: load over after {:.1} s; backlog {:?}; waiting for the stack to catch up",
        (load_ended - started).as_secs_f64(),
        backlog_at_end
    );
    let settle = setup::settle(stack, js, config.settle_timeout).await;
    let settled = Instant::now();
    sample_leaders(stack, &mut leaders).await;
    settle.context("catching up after the load")?;
    let after = inbox_counts(stack).await?;
    let sequence_after = stream_last_sequence(js).await?;

    let model = Arc::try_unwrap(model)
        .map_err(|_| anyhow::anyhow!("a worker still holds the model"))?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a worker panicked"))?;

    // Events applied, per consumer and per replica.
    let applied_before: i64 = before.values().sum();
    let mut per_consumer = serde_json::Map::new();
    let mut per_replica = BTreeMap::<String, i64>::new();
    let mut total = 0i64;
    let mut consumers = BTreeMap::<(String, String), BTreeMap<String, i64>>::new();
    for (key, n) in &after {
        let delta = n - before.get(key).copied().unwrap_or(0);
        if delta == 0 {
            continue;
        }
        let (schema, consumer, by) = key;
        *consumers
            .entry((schema.clone(), consumer.clone()))
            .or_default()
            .entry(by.clone())
            .or_default() += delta;
        *per_replica.entry(by.clone()).or_default() += delta;
        total += delta;
    }
    for ((schema, consumer), by) in &consumers {
        let sum: i64 = by.values().sum();
        let shares: serde_json::Map<String, Value> = by
            .iter()
            .map(|(replica, n)| {
                (
                    replica.clone(),
                    json!({ "events": n, "share": round3(*n as f64 / sum as f64) }),
                )
            })
            .collect();
        per_consumer.insert(
            format!("{schema}.inbox {consumer}"),
            json!({ "events": sum, "by_replica": shares }),
        );
    }
    let expected_replicas = stack.replica_names();
    let mut replica_json = serde_json::Map::new();
    for name in &expected_replicas {
        let n = per_replica.get(name).copied().unwrap_or(0);
        replica_json.insert(
            name.clone(),
            json!({ "events": n, "share": round3(n as f64 / total.max(1) as f64) }),
        );
    }
    for (name, n) in &per_replica {
        if !expected_replicas.contains(name) {
            replica_json.insert(
                format!("{name} (not a replica)"),
                json!({ "events": n, "share": round3(*n as f64 / total.max(1) as f64) }),
            );
        }
    }

    // Nothing applied twice.
    let duplicate_keys = inbox_duplicate_keys(stack).await?;
    eprintln!(
        "==> throughput: reading the stream's events {}..={}",
        sequence_before + 1,
        sequence_after
    );
    let stream = stream_events(js, sequence_before + 1, sequence_after).await;
    let (stream_json, stream_ok) = match &stream {
        Ok((messages, distinct, kinds)) => (
            json!({
                "messages": messages,
                "expected_messages": sequence_after.saturating_sub(sequence_before),
                "distinct_event_ids": distinct,
                "events_by_kind": kinds,
            }),
            *messages == sequence_after.saturating_sub(sequence_before)
                && *messages == *distinct as u64,
        ),
        Err(err) => (json!({ "error": format!("{err:#}") }), false),
    };
    eprintln!("==> throughput: checking every view against the load's answers");
    let views_started = Instant::now();
    let views = loop {
        match check_views(stack, &model).await {
            Ok(v) => break Ok(v),
            Err(why) if views_started.elapsed() > Duration::from_secs(30) => break Err(why),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let views_ok = views.is_ok();

    let load_seconds = (load_ended - started).as_secs_f64();
    let until_settled = (settled - started).as_secs_f64();
    let applied_during_load = applied_at_end - applied_before;
    let per_second_stats = {
        let mut v = per_second.clone();
        v.sort_unstable();
        json!({
            "samples": per_second,
            "min": v.first(),
            "median": v.get(v.len() / 2),
            "max": v.last(),
        })
    };
    let c = &model.counts;
    let errors: u64 = c.errors.values().sum();
    let pass = duplicate_keys == 0 && stream_ok && views_ok && errors == 0;
    Ok(json!({
        "name": "throughput",
        "what": "closed-loop mixed load through callers balanced over every replica of each service; events applied = rows added to the four inbox tables (one per event a consumer applied)",
        "seconds": config.seconds,
        "load": {
            "uploaders": config.uploaders,
            "devices_per_upload": config.upload_devices,
            "deleters": config.deleters,
            "devices_per_deletion": config.delete_devices,
            "devices_per_move": config.move_devices,
            "onboard_interval_ms": config.onboard_interval.as_millis() as u64,
            "uploads": c.uploads,
            "uploaded_devices": c.uploaded_devices,
            "uploaded_devices_per_second": (c.uploaded_devices as f64 / load_seconds).round(),
            "deletions": c.deletions,
            "deleted_devices": c.deleted_devices,
            "deletions_not_found": c.deletions_not_found,
            "moves": c.moves,
            "moved_devices": c.moved_devices,
            "move_rejections_retried": c.move_rejections,
            "moves_given_up": c.moves_given_up,
            "customers_onboarded": c.onboardings,
            "customers_linked": c.links,
            "failed_calls": c.errors,
        },
        "service": {
            "events_applied": total,
            "events_applied_per_second": round3(total as f64 / until_settled),
            "events_applied_per_second_during_load": round3(applied_during_load as f64 / load_seconds),
            "events_applied_each_second_of_load": per_second_stats,
            "load_seconds": round3(load_seconds),
            "catch_up_seconds": secs(settled - load_ended),
            "backlog_when_load_ended": { "outbox_unpublished": backlog_at_end.outbox, "consumer_pending": backlog_at_end.consumers },
            "events_published": sequence_after.saturating_sub(sequence_before),
            "per_consumer": per_consumer,
            "per_replica": replica_json,
            "relay_leader_samples": leaders,
            "replica_attribution": "each inbox row's bench_applied_by: a column the bench adds to the inbox tables of its own database, DEFAULT current_setting('application_name'), filled in by the consumer's own insert",
        },
        "checks": {
            "inbox_keys_applied_twice": duplicate_keys,
            "stream": stream_json,
            "views": match &views { Ok(v) => v.clone(), Err(why) => json!({ "error": why }) },
            "views_match_the_load": views_ok,
            "stream_holds_each_event_once": stream_ok,
        },
        "target": "none in the issue: events applied per second is reported; pass = nothing applied twice (no inbox key twice, each event ID once in the stream) and every view shows exactly the devices and counts the load's answers imply, with no failed call",
        "pass": pass,
    }))
}
