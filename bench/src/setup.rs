//! The bench's data, set up through the public gRPC API as the platform, a reseller, an
//! MSP and its customers would, and the wait for the projections to settle.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream;
use futures::TryStreamExt;
use reseller_kit::auth::Role;
use reseller_proto::v1::{self as pb, AccountKind, upload_devices_request::Item};
use sqlx::AssertSqlSafe;
use tonic::Code;

use crate::stack::Stack;

/// The reseller every upload and deletion is made by.
pub const RESELLER: &str = "bench-reseller";
/// The customer the ingest benchmark uploads to, and whose CSV the export benchmark
/// downloads.
pub const INGEST_CUSTOMER: &str = "900000000001";
/// The customer the ingest warm-up uploads to.
pub const WARMUP_CUSTOMER: &str = "900000000002";
/// The customer whose devices the deletion benchmark deletes; linked to [`MSP`], so each
/// of its devices shows in all three portals.
pub const DELETE_CUSTOMER: &str = "900000000003";
/// The MSP that manages [`DELETE_CUSTOMER`].
pub const MSP: &str = "900000000009";

/// The model every benchmark device has.
pub const MODEL: &str = "SM-S921B";

/// Device numbers (see [`device_id`]) of each data set; the ranges never overlap.
pub const INGEST_BASE: u64 = 10_000_000;
/// The ingest warm-up's devices.
pub const WARMUP_BASE: u64 = 30_000_000;
/// The deletion benchmark's devices.
pub const DELETE_BASE: u64 = 40_000_000;

/// Offset of a device's IMEI 2 from its IMEI 1's number (`--imei2`): far above every
/// base, so no IMEI 2 is another device's IMEI 1.
pub const IMEI2_OFFSET: u64 = 500_000_000;

/// The IMEI 2 of device number `n` (a dual-SIM phone).
pub fn imei2(n: u64) -> String {
    device_id(n + IMEI2_OFFSET)
}

/// The IMEI of device number `n`. IMEIs of the same width sort like their numbers, so a
/// range of devices is in ascending ID order.
pub fn device_id(n: u64) -> String {
    reseller_tests::fixtures::imei(n)
}

/// Retries `call` while it fails with a code in `retry_on` (a projection not caught up
/// yet), for up to 30 s.
async fn retrying<T, F, Fut>(what: &str, retry_on: &[Code], mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(status) if retry_on.contains(&status.code()) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => bail!("{what}: {status}"),
        }
    }
}

/// Registers `knox_id` as an account of `kind`, adds it as [`RESELLER`]'s customer and
/// approves the reseller as that account.
///
/// # Errors
/// When a call fails.
pub async fn onboard(
    stack: &Stack,
    knox_id: &str,
    kind: AccountKind,
    name: &str,
) -> anyhow::Result<()> {
    let admin = stack.caller(Role::Admin, "bench-admin")?;
    let reseller = stack.caller(Role::Reseller, RESELLER)?;
    admin
        .accounts()
        .register_account(pb::RegisterAccountRequest {
            knox_id: knox_id.into(),
            kind: kind as i32,
            company_name: name.into(),
            country: "DE".into(),
        })
        .await
        .with_context(|| format!("registering {knox_id}"))?;
    reseller
        .customers()
        .add_customer(pb::AddCustomerRequest {
            knox_id: knox_id.into(),
            internal_reference: format!("BENCH-{knox_id}"),
        })
        .await
        .with_context(|| format!("adding {knox_id}"))?;
    let role = if kind == AccountKind::Msp {
        Role::Msp
    } else {
        Role::Customer
    };
    stack
        .caller(role, knox_id)?
        .customers()
        .approve_reseller(pb::ApproveResellerRequest {
            reseller_id: RESELLER.into(),
        })
        .await
        .with_context(|| format!("approving as {knox_id}"))?;
    Ok(())
}

/// `msp` links `customer` in `mode`, retried while msp-link-service has not heard of the
/// account or the approval yet.
///
/// # Errors
/// When the link fails for another reason or for 30 s.
pub async fn link(
    stack: &Stack,
    msp: &str,
    customer: &str,
    mode: pb::ManagementMode,
) -> anyhow::Result<()> {
    let caller = stack.caller(Role::Msp, msp)?;
    retrying(
        &format!("linking {customer} to the MSP {msp}"),
        &[
            Code::NotFound,
            Code::FailedPrecondition,
            Code::PermissionDenied,
        ],
        || {
            let mut client = caller.msp();
            async move {
                client
                    .link_customer(pb::LinkCustomerRequest {
                        customer_knox_id: customer.into(),
                        mode: mode as i32,
                    })
                    .await
            }
        },
    )
    .await?;
    Ok(())
}

/// Registers the accounts, adds them as the reseller's customers, approves the reseller
/// as each account, and links [`DELETE_CUSTOMER`] (fully managed) and [`INGEST_CUSTOMER`]
/// (jointly managed) to [`MSP`].
///
/// # Errors
/// When a call fails.
pub async fn accounts(stack: &Stack) -> anyhow::Result<()> {
    let accounts = [
        (
            INGEST_CUSTOMER,
            AccountKind::Customer,
            "Ingest Customer GmbH",
        ),
        (
            WARMUP_CUSTOMER,
            AccountKind::Customer,
            "Warm-up Customer GmbH",
        ),
        (
            DELETE_CUSTOMER,
            AccountKind::Customer,
            "Deletion Customer GmbH",
        ),
        (MSP, AccountKind::Msp, "Bench MSP AG"),
    ];
    for (knox_id, kind, name) in accounts {
        onboard(stack, knox_id, kind, name).await?;
    }
    link(
        stack,
        MSP,
        DELETE_CUSTOMER,
        pb::ManagementMode::FullyManaged,
    )
    .await?;
    // The ingest's devices show in the MSP portal too (the views catch-up watches it);
    // jointly managed, so the reseller keeps listing the customer.
    link(
        stack,
        MSP,
        INGEST_CUSTOMER,
        pb::ManagementMode::JointlyManaged,
    )
    .await
}

/// The request stream of an upload of devices `first..first + count` to `target`, in
/// batches of `batch`, built in full beforehand so that building it is not timed.
pub fn upload_messages(
    target: &str,
    order_number: &str,
    first: u64,
    count: usize,
    batch: usize,
    with_imei2: bool,
) -> Vec<pb::UploadDevicesRequest> {
    let mut messages = Vec::with_capacity(count / batch.max(1) + 2);
    messages.push(pb::UploadDevicesRequest {
        item: Some(Item::Header(pb::UploadHeader {
            target_knox_id: target.into(),
            order_number: order_number.into(),
            client_upload_id: String::new(),
            validate_only: false,
        })),
    });
    let mut n = first;
    let end = first + count as u64;
    while n < end {
        let upto = (n + batch.max(1) as u64).min(end);
        let devices = (n..upto)
            .map(|i| pb::DeviceInput {
                device_id: device_id(i),
                id_kind: 0,
                model: MODEL.into(),
                secondary_ids: if with_imei2 {
                    vec![imei2(i)]
                } else {
                    Vec::new()
                },
            })
            .collect();
        messages.push(pb::UploadDevicesRequest {
            item: Some(Item::Batch(pb::DeviceBatch { devices })),
        });
        n = upto;
    }
    messages
}

/// Uploads pre-built `messages` as the reseller; returns the upload and how long the call
/// took (first message sent to the answer received).
///
/// # Errors
/// When the upload fails or rejects a device.
pub async fn upload(
    stack: &Stack,
    messages: Vec<pb::UploadDevicesRequest>,
) -> anyhow::Result<(pb::Upload, Duration)> {
    // Its own connection, so nothing else shares the upload's HTTP/2 flow control.
    let reseller = stack.caller_own_channel(Role::Reseller, RESELLER).await?;
    let mut client = reseller.devices();
    let started = Instant::now();
    let upload = client
        .upload_devices(futures::stream::iter(messages))
        .await
        .context("UploadDevices")?
        .into_inner();
    let took = started.elapsed();
    if upload.rejected_count != 0 {
        bail!(
            "the upload rejected {} devices (first: {:?})",
            upload.rejected_count,
            upload.rejections.first()
        );
    }
    Ok((upload, took))
}

/// What is still in flight between the services.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Outbox rows not yet published, over every service schema.
    pub outbox: i64,
    /// Events not yet delivered to, or not yet acked by, a durable consumer.
    pub consumers: u64,
}

/// The backlog now.
///
/// # Errors
/// When PostgreSQL or JetStream cannot be asked.
pub async fn backlog(stack: &Stack, js: &jetstream::Context) -> anyhow::Result<Backlog> {
    let mut backlog = Backlog::default();
    for schema in ["customer", "device", "msp", "reporting"] {
        let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(format!("{schema}.outbox"))
            .fetch_one(&stack.pool)
            .await?;
        if exists.is_none() {
            continue;
        }
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL"
        )))
        .fetch_one(&stack.pool)
        .await?;
        backlog.outbox += n;
    }
    let stream = js
        .get_stream(reseller_kit::subjects::EVENTS_STREAM)
        .await
        .context("the events stream")?;
    let names: Vec<String> = stream.consumer_names().try_collect().await?;
    for name in names {
        let mut consumer: jetstream::consumer::PullConsumer = stream
            .get_consumer(&name)
            .await
            .map_err(|e| anyhow::anyhow!("consumer {name}: {e}"))?;
        let info = consumer.info().await?;
        backlog.consumers += info.num_pending + info.num_ack_pending as u64;
    }
    Ok(backlog)
}

/// Waits until every outbox is published and every consumer has acked everything, seen
/// twice in a row; returns how long that took.
///
/// # Errors
/// When it does not happen within `timeout`.
pub async fn settle(
    stack: &Stack,
    js: &jetstream::Context,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut idle_seen = 0;
    let mut last = Backlog::default();
    while started.elapsed() < timeout {
        last = backlog(stack, js).await?;
        if last == Backlog::default() {
            idle_seen += 1;
            if idle_seen == 2 {
                return Ok(started.elapsed());
            }
        } else {
            idle_seen = 0;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("the stack did not settle within {timeout:?}; still in flight: {last:?}")
}
