//! Views catch-up (issue #12, part 7): from the moment the ingest's `UploadDevices`
//! answers, how long until each view shows all of the upload's devices, against the
//! upload's own duration (target: ≤ 1×, the views are current when a second upload of
//! the same size would finish).
//!
//! - The reseller's list: `ListCustomers` (a real gRPC call, as the Customers page makes
//!   it) shows the ingest customer with DEVICES equal to the upload's count.
//! - The customer portal and the MSP portal: they list devices page by page and count
//!   nothing, so a view is current when device-service's outbox holds none of the
//!   upload's events unsent and the portal's durable consumer has applied (acked) every
//!   event delivered to it. Their pages are then checked once to show the customer's
//!   devices.

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;
use reseller_kit::auth::Role;
use reseller_proto::v1 as pb;
use serde_json::{Value, json};

use crate::setup::{INGEST_CUSTOMER, MSP, RESELLER};
use crate::stack::Stack;
use crate::stats::{round3, secs};

/// How often the views are looked at.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// The durable consumers behind the two portals' device lists.
const PORTAL_CONSUMERS: [(&str, &str); 2] = [
    ("customer_portal", "customer-portal"),
    ("msp_portal", "msp-portal"),
];

/// When each view first showed the whole upload, after the upload answered.
#[derive(Debug, Default)]
struct Seen {
    reseller_list: Option<Duration>,
    portals: [Option<Duration>; 2],
}

impl Seen {
    fn all(&self) -> bool {
        self.reseller_list.is_some() && self.portals.iter().all(Option::is_some)
    }
}

/// DEVICES of the ingest customer on the reseller's Customers page (0 before it is
/// listed).
async fn listed_devices(stack: &Stack) -> anyhow::Result<i64> {
    let mut reporting = stack.caller(Role::Reseller, RESELLER)?.reporting();
    let page = reporting
        .list_customers(pb::ListCustomersRequest {
            query: INGEST_CUSTOMER.into(),
            page_size: 10,
            page_token: String::new(),
            order_by: String::new(),
        })
        .await
        .context("ListCustomers")?
        .into_inner();
    Ok(page
        .customers
        .iter()
        .find(|row| row.knox_id == INGEST_CUSTOMER)
        .map_or(0, |row| row.devices))
}

/// device-service's outbox rows not yet published.
async fn device_outbox_unsent(stack: &Stack) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM device.outbox WHERE published_at IS NULL")
            .fetch_one(&stack.pool)
            .await?,
    )
}

/// Events delivered to `consumer` and not yet acked, or not yet delivered.
async fn consumer_backlog(js: &jetstream::Context, consumer: &str) -> anyhow::Result<u64> {
    let stream = js
        .get_stream(reseller_kit::subjects::EVENTS_STREAM)
        .await
        .context("the events stream")?;
    let mut consumer: jetstream::consumer::PullConsumer = stream
        .get_consumer(consumer)
        .await
        .map_err(|e| anyhow::anyhow!("consumer {consumer}: {e}"))?;
    let info = consumer.info().await?;
    Ok(info.num_pending + info.num_ack_pending as u64)
}

/// Checks that a portal's first page shows the ingest customer's devices.
async fn portal_shows_devices(stack: &Stack, portal: usize) -> anyhow::Result<bool> {
    let devices = if portal == 0 {
        let mut customers = stack.caller(Role::Customer, INGEST_CUSTOMER)?.customers();
        customers
            .list_my_devices(pb::ListMyDevicesRequest {
                page_size: 10,
                page_token: String::new(),
            })
            .await?
            .into_inner()
            .devices
    } else {
        let mut msp = stack.caller(Role::Msp, MSP)?.msp();
        msp.list_msp_devices(pb::ListMspDevicesRequest {
            customer_knox_id: INGEST_CUSTOMER.into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await?
        .into_inner()
        .devices
    };
    Ok(!devices.is_empty())
}

/// Watches the three views from now (the upload just answered, after `upload` took)
/// until each shows `devices` devices; returns the result's JSON.
///
/// # Errors
/// When a view cannot be asked, or not all caught up within `timeout`.
pub async fn measure(
    stack: &Stack,
    js: &jetstream::Context,
    devices: i64,
    upload: Duration,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let answered = Instant::now();
    let cpu_before = crate::cpu::Snapshot::take();
    let mut seen = Seen::default();
    while !seen.all() {
        if answered.elapsed() > timeout {
            anyhow::bail!("the views did not catch up within {timeout:?}: {seen:?}");
        }
        if seen.reseller_list.is_none() && listed_devices(stack).await? >= devices {
            seen.reseller_list = Some(answered.elapsed());
        }
        if seen.portals.iter().any(Option::is_none) && device_outbox_unsent(stack).await? == 0 {
            for (slot, (_, consumer)) in PORTAL_CONSUMERS.iter().enumerate() {
                if seen.portals[slot].is_none() && consumer_backlog(js, consumer).await? == 0 {
                    seen.portals[slot] = Some(answered.elapsed());
                }
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    // Whether the views waited for the machine (the sum near cores × window) and who
    // used it; "events" here are the upload's parts of 1,000 devices.
    let cpu = cpu_before.report(
        &crate::cpu::Snapshot::take(),
        (devices as usize).div_ceil(1_000),
    );
    let mut views = serde_json::Map::new();
    let ratio = |d: Duration| round3(d.as_secs_f64() / upload.as_secs_f64());
    let reseller = seen.reseller_list.unwrap_or_default();
    views.insert(
        "reseller_list".into(),
        json!({"seconds_after_answer": secs(reseller), "ratio_to_upload": ratio(reseller)}),
    );
    for (slot, (name, consumer)) in PORTAL_CONSUMERS.iter().enumerate() {
        let took = seen.portals[slot].unwrap_or_default();
        let shows = portal_shows_devices(stack, slot).await?;
        views.insert(
            (*name).into(),
            json!({"seconds_after_answer": secs(took), "ratio_to_upload": ratio(took),
                   "consumer": consumer, "first_page_shows_devices": shows}),
        );
    }
    let slowest = seen
        .portals
        .iter()
        .flatten()
        .chain(seen.reseller_list.iter())
        .max()
        .copied()
        .unwrap_or_default();
    Ok(json!({
        "name": "views_catch_up",
        "devices": devices,
        "what": "from UploadDevices answering to each view showing all its devices: the reseller's list by ListCustomers (DEVICES of the customer), the customer portal and the MSP portal when device-service's outbox is published and the portal's durable consumer has acked every event",
        "upload_seconds": secs(upload),
        "views": views,
        "all_views_seconds_after_answer": secs(slowest),
        "ratio": ratio(slowest),
        "ratio_definition": "slowest view's catch-up seconds / the upload's own seconds",
        "cpu_during_catch_up": cpu,
        "target": "ratio <= 1",
        "pass": slowest <= upload,
    }))
}
