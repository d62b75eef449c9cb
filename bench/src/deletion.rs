//! (b) Deletion propagation: single-device `DeleteDevices` at a steady rate; for each,
//! the time from the call returning to (i) the device being absent from all three views
//! (reseller: `ListCustomerDevices`; MSP: `ListMspDevices`; customer: `ListMyDevices`)
//! and (ii) `GetDeletion` saying `complete`; against the floor measured in the same run:
//! one JetStream publish acked, received by a durable pull consumer, acked.
//!
//! The devices belong to a customer linked to an MSP, so each shows in all three portals.
//! They are deleted in ascending ID order, and every list is ordered by device ID within
//! the customer's single upload, so the device being deleted is always among the first
//! few of each list: one small page per poll tells whether it is still shown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;
use reseller_kit::auth::Role;
use reseller_proto::v1 as pb;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::clients::Caller;
use crate::setup::{self, DELETE_BASE, DELETE_CUSTOMER, MSP, RESELLER};
use crate::stack::Stack;
use crate::stats::{Samples, ms, round3};

/// Settings of the deletion benchmark.
#[derive(Debug, Clone)]
pub struct DeletionConfig {
    /// Deletions per second.
    pub rate: f64,
    /// How long deletions are measured.
    pub seconds: f64,
    /// How long deletions run, unmeasured, before.
    pub warmup_seconds: f64,
    /// How long the floor is measured (at the same rate).
    pub floor_seconds: f64,
    /// Pause between two polls of one view.
    pub poll_interval: Duration,
    /// A deletion not seen through within this long counts as a timeout.
    pub timeout: Duration,
    /// Replicas of the durable floor's stream (the services' `NATS_STREAM_REPLICAS`).
    pub stream_replicas: usize,
}

impl DeletionConfig {
    fn warmup_count(&self) -> usize {
        (self.rate * self.warmup_seconds).ceil() as usize
    }

    fn measured_count(&self) -> usize {
        (self.rate * self.seconds).round().max(1.0) as usize
    }

    /// Devices the benchmark deletes (uploaded beforehand by [`prepare`]).
    pub fn devices(&self) -> usize {
        self.warmup_count() + self.measured_count()
    }
}

/// Issue #3's targets against the bare JetStream floor: (i) views p50 ≤ 3× and p99 ≤
/// 10× the floor's; (ii) complete p50 ≤ 6× and p99 ≤ 15×.
const TARGET_VIEWS: (f64, f64) = (3.0, 10.0);
const TARGET_COMPLETE: (f64, f64) = (6.0, 15.0);
/// Issue #10's targets against the durable-hop floor ([`crate::durable_floor`]): (i)
/// views p50 ≤ 1.5× and p99 ≤ 3×; (ii) complete (two hops) p50 ≤ 2.5× and p99 ≤ 5×.
const DURABLE_TARGET_VIEWS: (f64, f64) = (1.5, 3.0);
const DURABLE_TARGET_COMPLETE: (f64, f64) = (2.5, 5.0);

/// Entries per poll. The device being deleted is among the first ones unless this many
/// earlier deletions are still shown; a full page of smaller IDs counts as "still shown".
const PAGE: i32 = 16;

/// `GetDeletion` polls in flight at most (over all deletions in flight).
const DELETION_POLLS_IN_FLIGHT: usize = 2;

/// Uploads the devices the benchmark deletes to [`DELETE_CUSTOMER`].
///
/// # Errors
/// When the upload fails.
pub async fn prepare(stack: &Stack, config: &DeletionConfig) -> anyhow::Result<()> {
    let messages = setup::upload_messages(
        DELETE_CUSTOMER,
        "BENCH-DELETE",
        DELETE_BASE,
        config.devices(),
        10_000,
        false,
    );
    setup::upload(stack, messages).await?;
    Ok(())
}

/// Sleeps `d` with sub-millisecond precision (tokio's timer has 1 ms granularity; a
/// blocking-pool thread's `nanosleep` has tens of microseconds).
async fn pause(d: Duration) {
    if d.is_zero() {
        tokio::task::yield_now().await;
    } else if d >= Duration::from_millis(3) {
        tokio::time::sleep(d).await;
    } else {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(d)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The floor.

/// The messages of a floor's durable pull consumer `name` on `stream`, the consumer
/// configured like the services' (explicit acks, every message, 30 s to ack, redelivered
/// until acked, at most 1,024 unacked; `replicas` replicas), pulled 256 at a time.
///
/// # Errors
/// When the consumer cannot be created or its messages not pulled.
pub(crate) async fn floor_messages(
    stream: &stream::Stream,
    name: &str,
    replicas: usize,
) -> anyhow::Result<pull::Stream> {
    let config = pull::Config {
        durable_name: Some(name.into()),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        deliver_policy: jetstream::consumer::DeliverPolicy::All,
        ack_wait: Duration::from_secs(30),
        max_deliver: -1,
        max_ack_pending: 1024,
        num_replicas: replicas,
        ..Default::default()
    };
    let consumer = stream
        .get_or_create_consumer(name, config)
        .await
        .map_err(|e| anyhow::anyhow!("creating consumer {name}: {e}"))?;
    Ok(consumer
        .stream()
        .max_messages_per_batch(256)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await?)
}

/// One JetStream publish acked, received by a durable pull consumer, acked (double ack:
/// the server confirmed the ack); one at a time at `rate`, through a stream (and
/// consumer) of `replicas` replicas on the servers of `nats_url` (comma-separated).
/// Returns the measured samples.
async fn floor(
    nats_url: &str,
    replicas: usize,
    rate: f64,
    warmup: usize,
    count: usize,
) -> anyhow::Result<Samples> {
    let client = crate::stack::nats_connect(nats_url).await?;
    let js = jetstream::new(client);
    let _ = js.delete_stream("BENCH_FLOOR").await;
    let stream = js
        .create_stream(stream::Config {
            name: "BENCH_FLOOR".into(),
            subjects: vec!["bench.floor".into()],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating stream BENCH_FLOOR: {e}"))?;
    let mut messages = floor_messages(&stream, "bench-floor", replicas).await?;
    let (acked_tx, mut acked) = mpsc::unbounded_channel::<(u64, Instant)>();
    let receiver = tokio::spawn(async move {
        while let Some(Ok(message)) = messages.next().await {
            let seq = message
                .payload
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(u64::MAX);
            if message.double_ack().await.is_err() {
                continue;
            }
            if acked_tx.send((seq, Instant::now())).is_err() {
                return;
            }
        }
    });

    let period = Duration::from_secs_f64(1.0 / rate);
    let mut samples = Samples::default();
    let started = tokio::time::Instant::now();
    // About the size of a one-device `devices_deleted` event.
    let padding = vec![b'x'; 192];
    for k in 0..(warmup + count) as u64 {
        tokio::time::sleep_until(started + period * k as u32).await;
        let mut payload = k.to_le_bytes().to_vec();
        payload.extend_from_slice(&padding);
        let sent = Instant::now();
        js.publish("bench.floor", payload.into())
            .await?
            .await
            .context("publish ack")?;
        let published = Instant::now();
        let received = loop {
            let (seq, at) = tokio::time::timeout(Duration::from_secs(10), acked.recv())
                .await
                .context("the floor consumer received nothing within 10 s")?
                .context("the floor consumer stopped")?;
            if seq == k {
                break at;
            }
        };
        if k as usize >= warmup {
            samples.push(Some(published.max(received) - sent));
        }
    }
    receiver.abort();
    let _ = js.delete_stream("BENCH_FLOOR").await;
    Ok(samples)
}

// ---------------------------------------------------------------------------------------
// The views.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Reseller,
    Msp,
    Customer,
}

const VIEWS: [View; 3] = [View::Reseller, View::Msp, View::Customer];

impl View {
    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            View::Reseller => "reseller",
            View::Msp => "msp",
            View::Customer => "customer",
        }
    }

    fn rpc(self) -> &'static str {
        match self {
            View::Reseller => {
                "ReportingService/ListCustomerDevices (as the reseller, knox_id = the customer)"
            }
            View::Msp => "MspService/ListMspDevices (as the MSP, customer_knox_id = the customer)",
            View::Customer => "CustomerService/ListMyDevices (as the customer)",
        }
    }
}

/// Polls made and the time they took, per view and for `GetDeletion`.
#[derive(Debug, Default)]
struct PollStats {
    count: [AtomicU64; 4],
    nanos: [AtomicU64; 4],
}

impl PollStats {
    fn add(&self, slot: usize, took: Duration) {
        self.count[slot].fetch_add(1, Ordering::Relaxed);
        self.nanos[slot].fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> [(u64, u64); 4] {
        std::array::from_fn(|i| {
            (
                self.count[i].load(Ordering::Relaxed),
                self.nanos[i].load(Ordering::Relaxed),
            )
        })
    }
}

/// The callers the benchmark polls as.
#[derive(Clone)]
struct Pollers {
    reseller: Caller,
    msp: Caller,
    customer: Caller,
    stats: Arc<PollStats>,
    /// Bounds the `GetDeletion` polls in flight, so that the bench's load stays the same
    /// however many deletions are in flight.
    deletion_polls: Arc<tokio::sync::Semaphore>,
}

impl Pollers {
    /// The first page of `view`: the device IDs it shows first.
    async fn page(&self, view: View) -> Result<Vec<String>, tonic::Status> {
        let started = Instant::now();
        let ids: Vec<String> = match view {
            View::Reseller => {
                let request = pb::ListCustomerDevicesRequest {
                    knox_id: DELETE_CUSTOMER.into(),
                    page_size: PAGE,
                    page_token: String::new(),
                };
                let mut reporting = self.reseller.reporting();
                let devices = reporting.list_customer_devices(request).await?;
                devices
                    .into_inner()
                    .devices
                    .into_iter()
                    .map(|d| d.device_id)
                    .collect()
            }
            // Both portals list `PortalDevice`s.
            View::Msp | View::Customer => {
                let devices = if matches!(view, View::Msp) {
                    let request = pb::ListMspDevicesRequest {
                        customer_knox_id: DELETE_CUSTOMER.into(),
                        page_size: PAGE,
                        page_token: String::new(),
                    };
                    let mut msp = self.msp.msp();
                    msp.list_msp_devices(request).await?.into_inner().devices
                } else {
                    let request = pb::ListMyDevicesRequest {
                        page_size: PAGE,
                        page_token: String::new(),
                    };
                    let mut customers = self.customer.customers();
                    customers
                        .list_my_devices(request)
                        .await?
                        .into_inner()
                        .devices
                };
                devices.into_iter().map(|d| d.device_id).collect()
            }
        };
        self.stats.add(view.index(), started.elapsed());
        Ok(ids)
    }

    async fn deletion(&self, deletion_id: &str) -> Result<pb::Deletion, tonic::Status> {
        let _permit = self
            .deletion_polls
            .acquire()
            .await
            .map_err(|_| tonic::Status::cancelled("stopping"))?;
        let started = Instant::now();
        let d = self
            .reseller
            .devices()
            .get_deletion(pb::GetDeletionRequest {
                deletion_id: deletion_id.into(),
            })
            .await?
            .into_inner();
        self.stats.add(3, started.elapsed());
        Ok(d)
    }
}

/// Whether a first page still shows `id`: it lists it, or it is full of smaller IDs (the
/// device may be further on).
fn shows(page: &[String], id: &str) -> bool {
    page.iter().any(|d| d == id)
        || (page.len() == PAGE as usize && page.iter().all(|d| d.as_str() < id))
}

/// A deletion whose device the view pollers are watching.
#[derive(Debug, Clone)]
struct Watched {
    id: String,
    returned: Instant,
    /// Per view: when the answer of the first poll (sent after `returned`) without the
    /// device arrived.
    absent: [Option<Instant>; 3],
    /// Per view: when the last poll that still showed it was sent.
    last_shown_sent: [Option<Instant>; 3],
}

/// The deletions in flight, shared by the trackers and the view pollers.
#[derive(Default)]
struct Board {
    watched: std::sync::Mutex<Vec<Watched>>,
    changed: tokio::sync::Notify,
    stop: std::sync::atomic::AtomicBool,
}

impl Board {
    fn is_empty(&self) -> bool {
        self.watched.lock().map(|w| w.is_empty()).unwrap_or(true)
    }
}

/// One poller per view, shared by every deletion in flight: it polls only while some
/// deletion is watched, so the load the bench adds does not grow with the number of
/// deletions in flight.
async fn view_poller(pollers: Pollers, board: Arc<Board>, view: View, interval: Duration) {
    let i = view.index();
    loop {
        let woken = board.changed.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if board.stop.load(Ordering::Relaxed) {
            return;
        }
        if board.is_empty() {
            woken.await;
            continue;
        }
        let sent = Instant::now();
        let page = pollers.page(view).await;
        let received = Instant::now();
        if let (Ok(page), Ok(mut watched)) = (page, board.watched.lock()) {
            for w in watched.iter_mut() {
                if w.absent[i].is_some() || sent < w.returned {
                    continue;
                }
                if shows(&page, &w.id) {
                    w.last_shown_sent[i] = Some(sent);
                } else {
                    w.absent[i] = Some(received);
                }
            }
        }
        pause(interval).await;
    }
}

/// One deletion, followed through.
#[derive(Debug, Clone)]
struct Tracked {
    delete_rpc: Duration,
    /// Per view (None: not polled), from the call returning (inner None: timeout).
    views: [Option<Option<Duration>>; 3],
    /// All polled views absent, from the call returning (None: timeout).
    all_views: Option<Duration>,
    /// Complete, from the call returning (outer None: not polled; inner: timeout).
    complete: Option<Option<Duration>>,
    /// A view still showed the device in a poll sent after `complete` was seen.
    shown_after_complete: bool,
    final_states: Option<[i32; 3]>,
}

#[derive(Debug, Clone, Copy)]
struct Polled {
    views: [bool; 3],
    complete: bool,
}

async fn track(
    pollers: Pollers,
    board: Arc<Board>,
    id: String,
    polled: Polled,
    config: DeletionConfig,
) -> anyhow::Result<Tracked> {
    let sent = Instant::now();
    let deletion = pollers
        .reseller
        .devices()
        .delete_devices(pb::DeleteDevicesRequest {
            device_ids: vec![id.clone()],
        })
        .await
        .context("DeleteDevices")?
        .into_inner();
    let returned = Instant::now();
    if deletion.deleted_device_ids != [id.clone()] {
        anyhow::bail!(
            "DeleteDevices of {id} deleted {:?} (not found: {:?})",
            deletion.deleted_device_ids,
            deletion.not_found_device_ids
        );
    }
    let deadline = returned + config.timeout;
    if polled.views.iter().any(|v| *v) {
        if let Ok(mut watched) = board.watched.lock() {
            watched.push(Watched {
                id: id.clone(),
                returned,
                absent: [None; 3],
                last_shown_sent: [None; 3],
            });
        }
        board.changed.notify_waiters();
    }

    // `complete`: polled by this deletion's own loop.
    let mut complete_at = None;
    let mut final_states = None;
    if polled.complete {
        loop {
            if let Ok(d) = pollers.deletion(&deletion.deletion_id).await {
                final_states = Some([d.reseller_portal, d.msp_portal, d.customer_portal]);
                if d.complete {
                    complete_at = Some(Instant::now());
                    break;
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            pause(config.poll_interval).await;
        }
    }

    // The views: watched by the pollers until each saw the device gone.
    let watched = loop {
        let done = board.watched.lock().ok().and_then(|watched| {
            let w = watched.iter().find(|w| w.id == id)?;
            let all = (0..3).all(|i| !polled.views[i] || w.absent[i].is_some());
            (all || Instant::now() >= deadline).then(|| w.clone())
        });
        match done {
            Some(w) => break Some(w),
            None if !polled.views.iter().any(|v| *v) => break None,
            None => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    };
    if let Ok(mut all) = board.watched.lock() {
        all.retain(|w| w.id != id);
    }

    let since = |at: Option<Instant>| at.map(|at| at - returned);
    let views: [Option<Option<Duration>>; 3] = std::array::from_fn(|i| {
        (polled.views[i]).then(|| watched.as_ref().and_then(|w| since(w.absent[i])))
    });
    let polled_views: Vec<Option<Duration>> = views.iter().flatten().copied().collect();
    let all_views = if polled_views.is_empty() {
        None
    } else {
        polled_views
            .iter()
            .try_fold(Duration::ZERO, |acc, d| d.map(|d| acc.max(d)))
    };
    let shown_after_complete = match (complete_at, &watched) {
        (Some(complete_at), Some(w)) => {
            (0..3).any(|i| polled.views[i] && w.last_shown_sent[i].is_some_and(|t| t > complete_at))
        }
        _ => false,
    };
    Ok(Tracked {
        delete_rpc: returned - sent,
        views,
        all_views,
        complete: polled.complete.then(|| since(complete_at)),
        shown_after_complete,
        final_states,
    })
}

/// Runs `count` deletions at `config.rate` starting with device `first`.
async fn run_phase(
    pollers: &Pollers,
    first: u64,
    count: usize,
    polled: Polled,
    config: &DeletionConfig,
) -> anyhow::Result<Vec<Tracked>> {
    let board = Arc::new(Board::default());
    let view_pollers: Vec<_> = VIEWS
        .into_iter()
        .filter(|v| polled.views[v.index()])
        .map(|v| {
            tokio::spawn(view_poller(
                pollers.clone(),
                board.clone(),
                v,
                config.poll_interval,
            ))
        })
        .collect();
    let period = Duration::from_secs_f64(1.0 / config.rate);
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for k in 0..count {
        tokio::time::sleep_until(started + period * k as u32).await;
        let id = setup::device_id(first + k as u64);
        tasks.push(tokio::spawn(track(
            pollers.clone(),
            board.clone(),
            id,
            polled,
            config.clone(),
        )));
    }
    let mut tracked = Vec::with_capacity(count);
    for task in tasks {
        tracked.push(task.await??);
    }
    board.stop.store(true, Ordering::Relaxed);
    board.changed.notify_waiters();
    for poller in view_pollers {
        let _ = poller.await;
    }
    Ok(tracked)
}

fn portal_state(n: i32) -> &'static str {
    match pb::PortalState::try_from(n) {
        Ok(pb::PortalState::Pending) => "PENDING",
        Ok(pb::PortalState::Removed) => "REMOVED",
        Ok(pb::PortalState::NotApplicable) => "NOT_APPLICABLE",
        _ => "UNSPECIFIED",
    }
}

/// Runs the floor and the benchmark; returns its JSON result.
///
/// # Errors
/// When the stack fails (a miss of a target is reported, not an error).
pub async fn run(stack: &Stack, config: &DeletionConfig) -> anyhow::Result<Value> {
    let floor_count = (config.rate * config.floor_seconds).round().max(1.0) as usize;
    eprintln!(
        "==> deletion: floor, {floor_count} JetStream round trips at {}/s",
        config.rate
    );
    let floor = floor(
        &stack.nats_url,
        config.stream_replicas,
        config.rate,
        config.warmup_count().max(10),
        floor_count,
    )
    .await
    .context("measuring the floor")?;
    eprintln!(
        "    p50 {:?} p99 {:?}",
        floor.percentile(50.0),
        floor.percentile(99.0)
    );
    eprintln!(
        "==> deletion: durable-hop floor, {floor_count} outbox → stream → inbox hops at {}/s",
        config.rate
    );
    let durable = crate::durable_floor::measure(
        &crate::durable_floor::FloorTarget {
            database_url: &stack.database_url,
            nats_url: &stack.nats_url,
            replicas: config.stream_replicas,
        },
        config.rate,
        config.warmup_count().max(10),
        floor_count,
    )
    .await
    .context("measuring the durable-hop floor")?;
    eprintln!(
        "    p50 {:?} p99 {:?}",
        durable.percentile(50.0),
        durable.percentile(99.0)
    );

    let pollers = Pollers {
        reseller: stack.caller(Role::Reseller, RESELLER)?,
        msp: stack.caller(Role::Msp, MSP)?,
        customer: stack.caller(Role::Customer, DELETE_CUSTOMER)?,
        stats: Arc::default(),
        deletion_polls: Arc::new(tokio::sync::Semaphore::new(DELETION_POLLS_IN_FLIGHT)),
    };

    // Which views can be polled: each must answer and show the customer's first device.
    let first_id = setup::device_id(DELETE_BASE);
    let mut unavailable = serde_json::Map::new();
    let mut views = [true; 3];
    for (i, view) in VIEWS.into_iter().enumerate() {
        match pollers.page(view).await.map(|page| shows(&page, &first_id)) {
            Ok(true) => {}
            Ok(false) => {
                views[i] = false;
                unavailable.insert(
                    view.name().into(),
                    json!(format!(
                        "{} does not show the customer's devices",
                        view.rpc()
                    )),
                );
            }
            Err(status) => {
                views[i] = false;
                unavailable.insert(
                    view.name().into(),
                    json!(format!(
                        "{}: {:?}: {}",
                        view.rpc(),
                        status.code(),
                        status.message()
                    )),
                );
            }
        }
    }

    // What one poll costs on an idle stack: the resolution the polls can give, and
    // the load they add.
    let mut idle_rtt = serde_json::Map::new();
    for (i, view) in VIEWS.into_iter().enumerate() {
        if !views[i] {
            continue;
        }
        let mut samples = Samples::default();
        for _ in 0..100 {
            let started = Instant::now();
            let ok = pollers.page(view).await.is_ok();
            samples.push(ok.then(|| started.elapsed()));
        }
        idle_rtt.insert(view.name().into(), samples.summary());
    }
    eprintln!(
        "    idle poll round trips: {}",
        serde_json::Value::Object(idle_rtt.clone())
    );

    let warmup = config.warmup_count();
    eprintln!(
        "==> deletion: warm-up, {warmup} deletions at {}/s (views polled: {:?})",
        config.rate, views
    );
    let mut polled = Polled {
        views,
        complete: true,
    };
    let warm = run_phase(&pollers, DELETE_BASE, warmup, polled, config).await?;
    // A view or `complete` that never came through in the warm-up would only time out
    // (and load the service with polls) in the measurement: leave it out and say why.
    for (i, view) in VIEWS.into_iter().enumerate() {
        if polled.views[i] && warm.iter().all(|t| matches!(t.views[i], Some(None))) {
            polled.views[i] = false;
            unavailable.insert(
                view.name().into(),
                json!(format!(
                    "{} still showed every warm-up deletion's device after {:?}",
                    view.rpc(),
                    config.timeout
                )),
            );
        }
    }
    let mut complete_unavailable = None;
    if warm.iter().all(|t| matches!(t.complete, Some(None))) {
        polled.complete = false;
        let states = warm.last().and_then(|t| t.final_states);
        complete_unavailable = Some(format!(
            "no warm-up deletion was complete after {:?}; last portal states (reseller, msp, customer): {}",
            config.timeout,
            states
                .map(|s| s.map(portal_state).join(", "))
                .unwrap_or_else(|| "unknown".into())
        ));
    }

    let count = config.measured_count();
    let stats_before = pollers.stats.snapshot();
    eprintln!(
        "==> deletion: measuring {count} deletions at {}/s for {} s",
        config.rate, config.seconds
    );
    let measured_from = std::time::SystemTime::now();
    let cpu_before = crate::cpu::Snapshot::take();
    let tracked = run_phase(&pollers, DELETE_BASE + warmup as u64, count, polled, config).await?;
    let cpu = cpu_before.report(&crate::cpu::Snapshot::take(), count);
    let measured_to = std::time::SystemTime::now();
    let stats_after = pollers.stats.snapshot();
    // The services' own account of each hop, when their log level has it.
    let event_ages = crate::hops::event_ages(&stack.log_files(), measured_from, measured_to)
        .unwrap_or_else(|| {
            json!("not logged: run with --service-log-level warn,reseller_kit::inbox=debug to see each consumer's event ages (received, applied) during the measurement")
        });
    let relays = crate::hops::relay_times(&stack.log_files(), measured_from, measured_to)
        .unwrap_or_else(|| {
            json!("not logged: add reseller_kit::outbox=debug to --service-log-level to see each relay's publish-to-ack and mark-sent times")
        });
    let mut polls = serde_json::Map::new();
    for (slot, name) in ["reseller", "msp", "customer", "get_deletion"]
        .into_iter()
        .enumerate()
    {
        let n = stats_after[slot].0 - stats_before[slot].0;
        let nanos = stats_after[slot].1 - stats_before[slot].1;
        polls.insert(
            name.into(),
            json!({
                "polls": n,
                "mean_rtt_ms": (n > 0).then(|| ms(Duration::from_nanos(nanos / n))),
            }),
        );
    }

    let mut delete_rpc = Samples::default();
    let mut all_views = Samples::default();
    let mut per_view = [Samples::default(), Samples::default(), Samples::default()];
    let mut complete = Samples::default();
    let mut shown_after_complete = 0;
    let mut final_states = std::collections::BTreeMap::<String, usize>::new();
    for t in &tracked {
        delete_rpc.push(Some(t.delete_rpc));
        if polled.views.iter().any(|v| *v) {
            all_views.push(t.all_views);
        }
        for (i, v) in t.views.iter().enumerate() {
            if let Some(v) = v {
                per_view[i].push(*v);
            }
        }
        if let Some(c) = t.complete {
            complete.push(c);
        }
        shown_after_complete += usize::from(t.shown_after_complete);
        if let Some(s) = t.final_states {
            *final_states
                .entry(s.map(portal_state).join("/"))
                .or_default() += 1;
        }
    }

    let floor_p50 = floor.percentile(50.0);
    let floor_p99 = floor.percentile(99.0);
    let ratio = |s: &Samples, p: f64, f: Option<Duration>| -> Option<f64> {
        match (s.percentile(p), f) {
            (Some(x), Some(f)) if !f.is_zero() => Some(round3(x.as_secs_f64() / f.as_secs_f64())),
            _ => None,
        }
    };
    let views_ratio = (
        ratio(&all_views, 50.0, floor_p50),
        ratio(&all_views, 99.0, floor_p99),
    );
    let complete_ratio = (
        ratio(&complete, 50.0, floor_p50),
        ratio(&complete, 99.0, floor_p99),
    );
    let (durable_p50, durable_p99) = (durable.percentile(50.0), durable.percentile(99.0));
    let durable_views_ratio = (
        ratio(&all_views, 50.0, durable_p50),
        ratio(&all_views, 99.0, durable_p99),
    );
    let durable_complete_ratio = (
        ratio(&complete, 50.0, durable_p50),
        ratio(&complete, 99.0, durable_p99),
    );
    let all_polled = polled.views.iter().all(|v| *v);
    let within = |r: Option<f64>, limit: f64| r.is_some_and(|r| r <= limit);
    let pass_views = all_polled
        && within(views_ratio.0, TARGET_VIEWS.0)
        && within(views_ratio.1, TARGET_VIEWS.1);
    let pass_complete = polled.complete
        && within(complete_ratio.0, TARGET_COMPLETE.0)
        && within(complete_ratio.1, TARGET_COMPLETE.1)
        && shown_after_complete == 0;
    let pass_durable = all_polled
        && polled.complete
        && shown_after_complete == 0
        && within(durable_views_ratio.0, DURABLE_TARGET_VIEWS.0)
        && within(durable_views_ratio.1, DURABLE_TARGET_VIEWS.1)
        && within(durable_complete_ratio.0, DURABLE_TARGET_COMPLETE.0)
        && within(durable_complete_ratio.1, DURABLE_TARGET_COMPLETE.1);
    let mut per_view_json = serde_json::Map::new();
    for (i, view) in VIEWS.into_iter().enumerate() {
        if polled.views[i] {
            per_view_json.insert(view.name().into(), per_view[i].summary());
        }
    }
    Ok(json!({
        "name": "deletion_propagation",
        "rate_per_second": config.rate,
        "seconds": config.seconds,
        "deletions": count,
        "warmup_deletions": warmup,
        "poll_interval_us": config.poll_interval.as_micros() as u64,
        "timeout_ms": config.timeout.as_millis() as u64,
        "floor": {
            "what": "one JetStream publish (file stream) acked, received by a durable pull consumer, double-acked; one at a time at the same rate, on the same NATS servers",
            "stream_replicas": config.stream_replicas,
            "latency": floor.summary(),
        },
        "durable_floor": {
            "what": "one outbox -> stream -> inbox hop with every PostgreSQL write durable: a statement inserting an outbox row and NOTIFYing (committed), a listener publishing it to JetStream and awaiting the ack, a durable pull consumer committing an inbox row and double-acking; at the same rate, on the same servers",
            "stream_replicas": config.stream_replicas,
            "fsync": "PostgreSQL: WAL fsynced at each commit (synchronous_commit on); nats-server 2.9: stream files synced on its own interval (2 min by default), not per message; with stream replicas > 1 a publish is acked once a quorum of the replicas stored it",
            "latency": durable.summary(),
        },
        "service": {
            "what": "from DeleteDevices (one device) returning; one poller per view (first page of 16, shared by the deletions in flight, polling only while one is) until the device is gone; GetDeletion polled per deletion (at most 2 polls in flight overall) until complete; a time is when the first answer saying so arrived",
            "delete_rpc": delete_rpc.summary(),
            "absent_from_all_views": all_views.summary(),
            "per_view": per_view_json,
            "views": VIEWS.iter().map(|v| (v.name(), v.rpc())).collect::<std::collections::BTreeMap<_, _>>(),
            "views_unavailable": unavailable,
            "complete": if polled.complete { complete.summary() } else { json!(null) },
            "complete_unavailable": complete_unavailable,
            "shown_after_complete": shown_after_complete,
            "final_portal_states_reseller_msp_customer": final_states,
            "idle_poll_rtt": idle_rtt,
            "polls_during_measurement": polls,
            "event_ages_by_consumer": event_ages,
            "event_ages_what": "from the services' logs (reseller_kit::inbox at debug): each event's age, from occurred_at (set where it was made), when its consumer received it and when it had applied it, and the time from the stream storing it to the consumer pulling it; devices_deleted events reach customer-portal, msp-portal and reporting (hop 1), the portals' receipts reach device-receipts (hop 2)",
            "relays_by_schema": relays,
            "cpu_during_measurement": cpu,
        },
        "ratios": {
            "absent_p50_over_floor_p50": views_ratio.0,
            "absent_p99_over_floor_p99": views_ratio.1,
            "complete_p50_over_floor_p50": complete_ratio.0,
            "complete_p99_over_floor_p99": complete_ratio.1,
            "absent_p50_over_durable_floor_p50": durable_views_ratio.0,
            "absent_p99_over_durable_floor_p99": durable_views_ratio.1,
            "complete_p50_over_durable_floor_p50": durable_complete_ratio.0,
            "complete_p99_over_durable_floor_p99": durable_complete_ratio.1,
        },
        "durable_target": format!(
            "(i) absent from all three views: p50 <= {}x durable floor p50, p99 <= {}x; (ii) complete: p50 <= {}x, p99 <= {}x",
            DURABLE_TARGET_VIEWS.0, DURABLE_TARGET_VIEWS.1, DURABLE_TARGET_COMPLETE.0, DURABLE_TARGET_COMPLETE.1
        ),
        "pass_durable": pass_durable,
        "target": format!(
            "(i) absent from all three views: p50 <= {}x floor p50, p99 <= {}x floor p99; (ii) complete: p50 <= {}x, p99 <= {}x (and no view shows the device after complete)",
            TARGET_VIEWS.0, TARGET_VIEWS.1, TARGET_COMPLETE.0, TARGET_COMPLETE.1
        ),
        "pass_views": pass_views,
        "pass_complete": pass_complete,
        "pass": pass_views && pass_complete,
    }))
}
