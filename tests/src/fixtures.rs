//! Test data and the steps most tests share: accounts, active customers, uploads.

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::RawMessageError;
use reseller_kit::device_id::luhn_check_digit;
use reseller_proto::v1::{self as pb, AccountKind, upload_devices_request::Item};
use tonic::Status;

use crate::TestStack;
use crate::clients::{Caller, admin, customer, msp, reseller};

/// A valid IMEI made from `n` (14 digits of payload plus the Luhn digit).
pub fn imei(n: u64) -> String {
    let payload = format!("{:014}", 35_000_000_000_000u64 + n);
    let digits: Vec<u32> = payload.bytes().map(|b| u32::from(b - b'0')).collect();
    format!("{payload}{}", luhn_check_digit(&digits))
}

/// The IMEIs made from each of `numbers` (see [`imei`]).
pub fn imeis(numbers: std::ops::Range<u64>) -> Vec<String> {
    numbers.map(imei).collect()
}

/// The request that registers an account in Germany.
pub fn account(knox_id: &str, kind: AccountKind, name: &str) -> pb::RegisterAccountRequest {
    pb::RegisterAccountRequest {
        knox_id: knox_id.into(),
        kind: kind as i32,
        company_name: name.into(),
        country: "DE".into(),
    }
}

/// Registers an account.
pub async fn register(stack: &TestStack, knox_id: &str, kind: AccountKind, name: &str) {
    admin(stack)
        .register_account(account(knox_id, kind, name))
        .await
        .expect("register account");
}

/// Registers a customer account, adds it to `reseller_id` and approves that reseller.
pub async fn active_customer(stack: &TestStack, reseller_id: &str, knox_id: &str, name: &str) {
    active_account(stack, reseller_id, knox_id, AccountKind::Customer, name).await;
}

/// Like [`active_customer`] for an account of any kind (registers it if needed).
pub async fn active_account(
    stack: &TestStack,
    reseller_id: &str,
    knox_id: &str,
    kind: AccountKind,
    name: &str,
) {
    // Already registered is fine: tests add one account to several resellers.
    let _ = admin(stack)
        .register_account(account(knox_id, kind, name))
        .await;
    reseller(stack, reseller_id)
        .add_customer(knox_id, "")
        .await
        .expect("add customer");
    let approver = if kind == AccountKind::Msp {
        msp(stack, knox_id)
    } else {
        customer(stack, knox_id)
    };
    approver
        .approve_reseller(reseller_id)
        .await
        .expect("approve");
}

/// The request stream of an upload: the header, then `devices` in batches of `batch`.
pub fn upload_stream(
    header: pb::UploadHeader,
    devices: Vec<pb::DeviceInput>,
    batch: usize,
) -> Vec<pb::UploadDevicesRequest> {
    let mut messages = vec![pb::UploadDevicesRequest {
        item: Some(Item::Header(header)),
    }];
    for chunk in devices.chunks(batch.max(1)) {
        messages.push(pb::UploadDevicesRequest {
            item: Some(Item::Batch(pb::DeviceBatch {
                devices: chunk.to_vec(),
            })),
        });
    }
    messages
}

/// A device input with an inferred kind.
pub fn device(id: &str) -> pb::DeviceInput {
    pb::DeviceInput {
        device_id: id.into(),
        id_kind: 0,
        model: String::new(),
        secondary_ids: Vec::new(),
    }
}

/// Uploads `ids` as `reseller_id` to `target`.
pub async fn upload(
    stack: &TestStack,
    reseller_id: &str,
    target: &str,
    ids: &[String],
) -> Result<pb::Upload, Status> {
    upload_pausing(stack, reseller_id, target, ids, std::time::Duration::ZERO).await
}

/// Uploads `ids` as `reseller_id` to `target`, pausing `pause` half-way through the
/// stream (long enough, at 500 ms, for the service to have sent the first half's rows to
/// PostgreSQL: tests of concurrent uploads use it).
pub async fn upload_pausing(
    stack: &TestStack,
    reseller_id: &str,
    target: &str,
    ids: &[String],
    pause: std::time::Duration,
) -> Result<pb::Upload, Status> {
    use futures::StreamExt;
    let header = pb::UploadHeader {
        target_knox_id: target.into(),
        order_number: "PO-1".into(),
        client_upload_id: String::new(),
        validate_only: false,
    };
    let messages = upload_stream(header, ids.iter().map(|id| device(id)).collect(), 500);
    let half = messages.len() / 2;
    let requests = futures::stream::iter(messages.into_iter().enumerate()).then(
        move |(i, message)| async move {
            if i == half && !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            message
        },
    );
    reseller(stack, reseller_id).upload_devices(requests).await
}

/// Every rejection of `upload`, by index: the inline ones when they are all there, else
/// every page of `ListUploadRejections` (the answer carries at most the first 1,000).
pub async fn all_rejections(
    stack: &TestStack,
    reseller_id: &str,
    upload: &pb::Upload,
) -> Vec<pb::DeviceRejection> {
    if !upload.rejections_truncated {
        return upload.rejections.clone();
    }
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = reseller(stack, reseller_id)
            .list_upload_rejections(pb::ListUploadRejectionsRequest {
                upload_id: upload.upload_id.clone(),
                page_size: 1000,
                page_token,
            })
            .await
            .expect("ListUploadRejections");
        all.extend(page.rejections);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// A timestamp in nanoseconds since the Unix epoch (`None` when unset), to compare
/// instants exactly.
pub fn nanos(ts: &Option<prost_types::Timestamp>) -> Option<i64> {
    ts.as_ref()
        .map(|t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
}

/// `items` in a deterministic shuffled order (Fisher–Yates driven by xorshift64 from
/// `seed`, which must not be 0), so that a failing order can be reproduced from its seed.
pub fn shuffled<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
    let mut out = items.to_vec();
    let mut state = seed;
    for i in (1..out.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.swap(i, (state % (i as u64 + 1)) as usize);
    }
    out
}

/// How many of customer `knox_id`'s devices reseller `caller` is shown (0 while
/// reporting-service does not know the customer yet, or on any error: callers wait for
/// a number).
pub async fn devices_shown(caller: &Caller, knox_id: &str) -> usize {
    first_devices_page(caller, knox_id)
        .await
        .map_or(0, |page| page.devices.len())
}

/// The first 1,000 devices reseller `caller` sees on customer `knox_id`'s page.
async fn first_devices_page(
    caller: &Caller,
    knox_id: &str,
) -> Result<pb::ListCustomerDevicesResponse, Status> {
    caller
        .list_customer_devices(pb::ListCustomerDevicesRequest {
            knox_id: knox_id.into(),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
}

/// The devices `caller` (a customer account) sees in its own portal: the first 1,000.
///
/// # Panics
/// When the call fails.
pub async fn my_devices(caller: &Caller) -> Vec<pb::PortalDevice> {
    caller
        .list_my_devices(pb::ListMyDevicesRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("customer portal")
        .devices
}

/// The devices `caller` (an MSP) sees in its portal for `customer_knox_id` (empty: all
/// of them): the first 1,000.
///
/// # Panics
/// When the call fails.
pub async fn msp_devices(caller: &Caller, customer_knox_id: &str) -> Vec<pb::PortalDevice> {
    caller
        .list_msp_devices(pb::ListMspDevicesRequest {
            customer_knox_id: customer_knox_id.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("MSP portal")
        .devices
}

/// The devices reseller `caller` sees on customer `knox_id`'s page: the first 1,000.
///
/// # Panics
/// When the call fails.
pub async fn customer_devices(caller: &Caller, knox_id: &str) -> Vec<pb::CustomerDevice> {
    let page = first_devices_page(caller, knox_id).await;
    page.expect("the customer's devices").devices
}

/// Every sequence of the events stream, in order, read one by one (a sequence that
/// cannot be read, e.g. deleted, is its error).
///
/// # Panics
/// When the stream or its info cannot be read.
pub async fn event_stream(stack: &TestStack) -> Vec<Result<StreamMessage, RawMessageError>> {
    let mut stream = stack
        .platform
        .js
        .get_stream(reseller_kit::subjects::EVENTS_STREAM)
        .await
        .expect("the events stream");
    let last = stream
        .info()
        .await
        .expect("stream info")
        .state
        .last_sequence;
    let mut messages = Vec::new();
    for seq in 1..=last {
        messages.push(stream.get_raw_message(seq).await);
    }
    messages
}

/// The header line of the customers CSV (`ReportingService.ExportCustomersCsv`), as
/// CONTRACT.md spells it (kept apart from the service's own constant on purpose: a test
/// oracle that changed with the code would catch nothing).
pub const CUSTOMERS_CSV_HEADER: &str = "Company Name / Internal Reference,Customer ID / MSP ID,\
    Country,Last Uploaded,Uploads,Devices,Status";

/// The columns of [`CUSTOMERS_CSV_HEADER`], in order.
pub fn customers_csv_columns() -> Vec<&'static str> {
    CUSTOMERS_CSV_HEADER.split(',').collect()
}

/// The header row of a CSV file, as strings.
///
/// # Panics
/// When the header is not CSV.
pub fn csv_header<R: std::io::Read>(reader: &mut csv::Reader<R>) -> Vec<String> {
    let header = reader.headers().expect("a CSV header");
    header.iter().map(str::to_owned).collect()
}
