//! Test data and the steps most tests share: accounts, active customers, uploads.

use reseller_kit::device_id::luhn_check_digit;
use reseller_proto::v1::{self as pb, AccountKind, upload_devices_request::Item};
use tonic::Status;

use crate::TestStack;
use crate::clients::{admin, customer, msp, reseller};

/// A valid IMEI made from `n` (14 digits of payload plus the Luhn digit).
pub fn imei(n: u64) -> String {
    let payload = format!("{:014}", 35_000_000_000_000u64 + n);
    let digits: Vec<u32> = payload.bytes().map(|b| u32::from(b - b'0')).collect();
    format!("{payload}{}", luhn_check_digit(&digits))
}

/// Registers an account.
pub async fn register(stack: &TestStack, knox_id: &str, kind: AccountKind, name: &str) {
    admin(stack)
        .accounts()
        .register_account(pb::RegisterAccountRequest {
            knox_id: knox_id.into(),
            kind: kind as i32,
            company_name: name.into(),
            country: "DE".into(),
        })
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
    let _ = admin(stack)
        .accounts()
        .register_account(pb::RegisterAccountRequest {
            knox_id: knox_id.into(),
            kind: kind as i32,
            company_name: name.into(),
            country: "DE".into(),
        })
        .await;
    reseller(stack, reseller_id)
        .customers()
        .add_customer(pb::AddCustomerRequest {
            knox_id: knox_id.into(),
            internal_reference: String::new(),
        })
        .await
        .expect("add customer");
    let approver = if kind == AccountKind::Msp {
        msp(stack, knox_id)
    } else {
        customer(stack, knox_id)
    };
    approver
        .customers()
        .approve_reseller(pb::ApproveResellerRequest {
            reseller_id: reseller_id.into(),
        })
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
    reseller(stack, reseller_id)
        .devices()
        .upload_devices(requests)
        .await
        .map(tonic::Response::into_inner)
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
            .devices()
            .list_upload_rejections(pb::ListUploadRejectionsRequest {
                upload_id: upload.upload_id.clone(),
                page_size: 1000,
                page_token,
            })
            .await
            .expect("ListUploadRejections")
            .into_inner();
        all.extend(page.rejections);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}
