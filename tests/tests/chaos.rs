//! Chaos on the deployed shape: two replicas of every service as separate processes of
//! the real binaries, a three-node NATS JetStream cluster holding the streams in three
//! replicas, and a private PostgreSQL server (`reseller_tests::cluster`).
//!
//! A mixed workload (onboarding, uploads of 5,700 devices, an MSP link and moves,
//! deletions) runs through both replicas of every service. Mid-workload the replica of
//! every service that leads its outbox relay, and the NATS node that leads
//! `RESELLER_EVENTS`, are killed with `SIGKILL`; the workload goes on through the
//! survivors, then the killed ones are restarted. Later PostgreSQL is restarted
//! (`pg_ctl restart`) while the workload runs. Then every view on every replica must show
//! exactly what the workload did, every deletion must be complete, the stream must hold
//! each event once, nothing may be dead-lettered, and no program may have exited on its
//! own. It prints how long the relay hand-overs, the stream leader's election and the
//! convergence took.
//!
//! A call that fails because a replica (or what it depends on) is down is retried on the
//! next replica, as a client behind a load balancer would; commands are retried the way
//! the contract makes safe (uploads with a client upload ID, moves and approvals are
//! idempotent, a repeated registration answers `ALREADY_EXISTS`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{LocalBoxFuture, join_all};
use prost::Message;
use reseller_kit::auth::Role;
use reseller_proto::v1::{self as pb, AccountKind, CustomerStatus, ManagementMode};
use reseller_tests::clients::Caller;
use reseller_tests::cluster::{Clients, Cluster, ClusterOptions, Service};
use reseller_tests::fixtures::{device, imei, upload_stream};
use reseller_tests::wait::eventually_within;
use tokio::sync::watch;
use tonic::{Code, Status};

const RESELLER: &str = "chaos-reseller";
const MSP: &str = "980000001";
/// Linked jointly managed by the MSP, and one of the reseller's customers.
const JOINT: &str = "970000099";
/// Linked fully managed by the MSP; not the reseller's customer.
const FULL: &str = "970000098";
/// The reseller's plain customers.
const CUSTOMERS: [&str; 6] = [
    "970000001",
    "970000002",
    "970000003",
    "970000004",
    "970000005",
    "970000006",
];
/// Customers onboarded before the workload; the rest are onboarded during it.
const ONBOARDED_FIRST: usize = 4;
const DEVICES_PER_UPLOAD: usize = 400;

/// How long the system may take to converge after the workload's last answer.
const CONVERGENCE_DEADLINE: Duration = Duration::from_secs(120);
/// How long one call may keep failing over before the test gives up on it.
const CALL_DEADLINE: Duration = Duration::from_secs(90);

/// One step of the workload.
#[derive(Debug, Clone)]
enum Step {
    /// Register a customer account, add it, approve the reseller.
    Onboard(&'static str),
    /// Upload devices to a target.
    Upload {
        target: &'static str,
        ids: Vec<String>,
    },
    /// The MSP moves devices to one of its customers.
    Move { to: &'static str, ids: Vec<String> },
    /// The reseller deletes devices (`expect_found`: they exist).
    Delete {
        ids: Vec<String>,
        expect_found: bool,
    },
}

/// What the workload did, from which every view follows.
#[derive(Debug, Default)]
struct Expected {
    /// Devices uploaded to each target.
    uploaded: BTreeMap<&'static str, Vec<String>>,
    /// Devices moved by the MSP, and where to.
    moved: HashMap<String, &'static str>,
    deleted: HashSet<String>,
}

impl Expected {
    fn alive<'a>(&self, ids: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
        ids.into_iter()
            .filter(|id| !self.deleted.contains(*id))
            .cloned()
            .collect()
    }

    fn uploaded_to(&self, knox: &str) -> &[String] {
        self.uploaded.get(knox).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The reseller's view of one customer: what was uploaded to it (moves do not
    /// change where the reseller sees a device).
    fn reseller_view(&self, knox: &str) -> BTreeSet<String> {
        self.alive(self.uploaded_to(knox))
    }

    /// The MSP portal: its pool (moved devices included: they sit at its customers) and
    /// what was uploaded to the customers it links.
    fn msp_portal(&self) -> BTreeSet<String> {
        let mut all = self.alive(self.uploaded_to(MSP));
        all.extend(self.alive(self.uploaded_to(JOINT)));
        all
    }

    /// A customer portal: what was uploaded to it, and what the MSP moved to it.
    fn customer_portal(&self, knox: &str) -> BTreeSet<String> {
        let mut all = self.alive(self.uploaded_to(knox));
        all.extend(
            self.alive(
                self.moved
                    .iter()
                    .filter(|(_, to)| **to == knox)
                    .map(|(id, _)| id),
            ),
        );
        all
    }

    /// The reseller's Customers page: (knox, display ID, managing MSP, UPLOADS, DEVICES).
    fn customer_rows(&self) -> BTreeSet<(String, String, String, i64, i64)> {
        CUSTOMERS
            .iter()
            .chain([&JOINT, &MSP])
            .map(|&knox| {
                let (display, managing) = if knox == JOINT {
                    (MSP, MSP)
                } else {
                    (knox, "")
                };
                (
                    knox.to_owned(),
                    display.to_owned(),
                    managing.to_owned(),
                    self.uploaded_to(knox).len() as i64,
                    self.reseller_view(knox).len() as i64,
                )
            })
            .collect()
    }
}

/// The workload's plan: steps, and after which step the chaos comes.
struct Plan {
    steps: Vec<Step>,
    /// The kills come after this many steps.
    kill_after: usize,
    /// The restarted replicas come back after this many steps.
    restart_after: usize,
    /// PostgreSQL restarts after this many steps.
    postgres_after: usize,
}

fn plan() -> Plan {
    let mut next = 0u64;
    let mut batch = |n: usize| {
        let ids: Vec<String> = (next..next + n as u64).map(imei).collect();
        next += n as u64;
        ids
    };
    let c = CUSTOMERS;
    let first: Vec<Vec<String>> = (0..c.len()).map(|_| batch(DEVICES_PER_UPLOAD)).collect();
    let second: Vec<Vec<String>> = (0..c.len()).map(|_| batch(DEVICES_PER_UPLOAD)).collect();
    let pool = batch(600);
    let joint = batch(300);
    let never_uploaded = batch(5);
    let to_full = pool[..150].to_vec();
    let to_joint = pool[150..300].to_vec();
    let upload = |target, ids: &Vec<String>| Step::Upload {
        target,
        ids: ids.clone(),
    };
    let delete = |ids: &[String]| Step::Delete {
        ids: ids.to_vec(),
        expect_found: true,
    };
    let steps = vec![
        upload(c[0], &first[0]),
        upload(c[1], &first[1]),
        upload(MSP, &pool),
        upload(JOINT, &joint),
        // The kills come here, during the next upload; what follows runs on the
        // survivors.
        upload(c[2], &first[2]),
        Step::Onboard(c[4]),
        Step::Move {
            to: FULL,
            ids: to_full.clone(),
        },
        upload(c[3], &first[3]),
        // The killed processes come back here.
        Step::Onboard(c[5]),
        Step::Move {
            to: JOINT,
            ids: to_joint.clone(),
        },
        upload(c[4], &first[4]),
        upload(c[5], &first[5]),
        upload(c[0], &second[0]),
        delete(&first[0][..50]),
        upload(c[1], &second[1]),
        // PostgreSQL restarts here, during the next upload.
        upload(c[2], &second[2]),
        delete(&first[1][..50]),
        upload(c[3], &second[3]),
        delete(&first[2][..50]),
        upload(c[4], &second[4]),
        delete(&first[3][..50]),
        upload(c[5], &second[5]),
        delete(&first[4][..50]),
        delete(&[&second[5][..], &first[5][..50]].concat()),
        delete(&pool[300..320]),
        delete(&to_full[..20]),
        delete(&to_joint[..20]),
        delete(&joint[..20]),
        Step::Delete {
            ids: never_uploaded,
            expect_found: false,
        },
    ];
    Plan {
        steps,
        kill_after: 4,
        restart_after: 8,
        postgres_after: 15,
    }
}

/// Where the chaos is, as the workload sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Calm,
    Killed,
    Restarted,
    PostgresRestarting,
}

/// Failed calls that were retried, by replica and status, for the summary.
#[derive(Debug, Default, Clone)]
struct Retries(Arc<Mutex<BTreeMap<String, usize>>>);

impl Retries {
    fn record(&self, what: &str, status: &Status) {
        let message: String = status.message().chars().take(100).collect();
        let key = format!("{what}: {:?} {message}", status.code());
        *self.0.lock().unwrap().entry(key).or_default() += 1;
    }

    fn summary(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(k, n)| format!("{n:>4} × {k}"))
            .collect()
    }
}

/// Whether a failed call may succeed on another replica or a moment later: the replica
/// or what it depends on is down, or the connection broke mid-call.
fn transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    )
}

/// The workload's callers: every replica, with the retry rule.
#[derive(Clone)]
struct Api {
    clients: Clients,
    retries: Retries,
}

impl Api {
    /// Calls `call(replica)` starting with replica `first` of `service`, failing over to
    /// the next replica on a transient failure, until it answers. Answers other than
    /// `Ok` that `accept` maps to a value count as answers too.
    async fn call<T, F, Fut>(
        &self,
        what: &str,
        service: Service,
        first: usize,
        mut call: F,
        accept: impl Fn(&Status) -> Option<T>,
    ) -> T
    where
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let replicas = self.clients.replicas(service);
        let deadline = Instant::now() + CALL_DEADLINE;
        let mut attempt = 0;
        loop {
            let replica = (first + attempt) % replicas;
            match call(replica).await {
                Ok(value) => return value,
                Err(status) => {
                    if let Some(value) = accept(&status) {
                        return value;
                    }
                    assert!(
                        transient(&status) && Instant::now() < deadline,
                        "{what} through {}-{replica}: {status:?}",
                        service.binary()
                    );
                    self.retries
                        .record(&format!("{}-{replica} {what}", service.binary()), &status);
                    attempt += 1;
                    // A dead replica fails at once; don't spin on the pair.
                    tokio::time::sleep(Duration::from_millis(50 * attempt.min(10) as u64)).await;
                }
            }
        }
    }

    fn admin(&self, service: Service, replica: usize) -> Caller {
        self.clients
            .client(service, replica, Role::Admin, "platform-admin")
    }

    fn reseller(&self, service: Service, replica: usize) -> Caller {
        self.clients
            .client(service, replica, Role::Reseller, RESELLER)
    }

    async fn register(&self, first: usize, knox: &'static str, kind: AccountKind, name: &str) {
        self.call(
            &format!("RegisterAccount {knox}"),
            Service::Customer,
            first,
            |r| {
                let mut accounts = self.admin(Service::Customer, r).accounts();
                let request = pb::RegisterAccountRequest {
                    knox_id: knox.into(),
                    kind: kind as i32,
                    company_name: name.into(),
                    country: "DE".into(),
                };
                async move { accounts.register_account(request).await.map(|_| ()) }
            },
            // A retry of a registration that went through.
            |s| (s.code() == Code::AlreadyExists).then_some(()),
        )
        .await;
    }

    /// The reseller adds `knox`, which approves the reseller.
    async fn add_and_approve(&self, first: usize, knox: &'static str, role: Role) {
        self.call(
            &format!("AddCustomer {knox}"),
            Service::Customer,
            first,
            |r| {
                let mut customers = self.reseller(Service::Customer, r).customers();
                let request = pb::AddCustomerRequest {
                    knox_id: knox.into(),
                    internal_reference: format!("ref-{knox}"),
                };
                async move { customers.add_customer(request).await.map(|_| ()) }
            },
            |s| (s.code() == Code::AlreadyExists).then_some(()),
        )
        .await;
        self.call(
            &format!("ApproveReseller {knox}"),
            Service::Customer,
            first + 1,
            |r| {
                let mut customers = self
                    .clients
                    .client(Service::Customer, r, role, knox)
                    .customers();
                let request = pb::ApproveResellerRequest {
                    reseller_id: RESELLER.into(),
                };
                async move { customers.approve_reseller(request).await.map(|_| ()) }
            },
            |_| None,
        )
        .await;
    }

    async fn link(&self, first: usize, knox: &'static str, mode: ManagementMode) {
        self.call(
            &format!("LinkCustomer {knox}"),
            Service::MspLink,
            first,
            |r| {
                let mut msp = self
                    .clients
                    .client(Service::MspLink, r, Role::Msp, MSP)
                    .msp();
                let request = pb::LinkCustomerRequest {
                    customer_knox_id: knox.into(),
                    mode: mode as i32,
                };
                async move { msp.link_customer(request).await.map(|_| ()) }
            },
            |s| (s.code() == Code::AlreadyExists).then_some(()),
        )
        .await;
    }

    async fn onboard(&self, first: usize, knox: &'static str) {
        self.register(
            first,
            knox,
            AccountKind::Customer,
            &format!("Customer {knox}"),
        )
        .await;
        self.add_and_approve(first + 1, knox, Role::Customer).await;
    }

    async fn run(&self, step_no: usize, step: &Step, expected: &Mutex<Expected>) {
        match step {
            Step::Onboard(knox) => self.onboard(step_no, knox).await,
            Step::Upload { target, ids } => {
                let answer = self
                    .call(
                        &format!("UploadDevices #{step_no}"),
                        Service::Device,
                        step_no,
                        |r| {
                            let mut devices = self.reseller(Service::Device, r).devices();
                            let header = pb::UploadHeader {
                                target_knox_id: (*target).into(),
                                order_number: format!("PO-{step_no}"),
                                // A retry answers with the first attempt's result.
                                client_upload_id: format!("chaos-{step_no}"),
                                ..Default::default()
                            };
                            let requests = upload_stream(
                                header,
                                ids.iter().map(|id| device(id)).collect(),
                                500,
                            );
                            async move {
                                devices
                                    .upload_devices(futures::stream::iter(requests))
                                    .await
                                    .map(tonic::Response::into_inner)
                            }
                        },
                        |_| None,
                    )
                    .await;
                assert_eq!(
                    (answer.accepted_count, answer.rejected_count),
                    (ids.len() as i64, 0),
                    "upload #{step_no}: {:?}",
                    answer.rejections.first()
                );
                expected
                    .lock()
                    .unwrap()
                    .uploaded
                    .entry(target)
                    .or_default()
                    .extend(ids.iter().cloned());
            }
            Step::Move { to, ids } => {
                // msp-link knows a device once its upload's event arrived; until then a
                // move rejects it. Send the rest again until every device moved.
                let mut remaining: BTreeSet<String> = ids.iter().cloned().collect();
                let deadline = Instant::now() + CALL_DEADLINE;
                let mut round = 0;
                while !remaining.is_empty() {
                    assert!(
                        Instant::now() < deadline,
                        "move #{step_no}: {} devices never moved",
                        remaining.len()
                    );
                    let answer = self
                        .call(
                            &format!("MoveDevices #{step_no}"),
                            Service::MspLink,
                            step_no + round,
                            |r| {
                                let mut msp = self
                                    .clients
                                    .client(Service::MspLink, r, Role::Msp, MSP)
                                    .msp();
                                let request = pb::MoveDevicesRequest {
                                    device_ids: remaining.iter().cloned().collect(),
                                    to_customer_knox_id: (*to).into(),
                                };
                                async move {
                                    msp.move_devices(request)
                                        .await
                                        .map(tonic::Response::into_inner)
                                }
                            },
                            |_| None,
                        )
                        .await;
                    for id in &answer.moved_device_ids {
                        remaining.remove(id);
                    }
                    round += 1;
                    if !remaining.is_empty() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                let mut expected = expected.lock().unwrap();
                for id in ids {
                    expected.moved.insert(id.clone(), to);
                }
            }
            Step::Delete { ids, expect_found } => {
                let answer = self
                    .call(
                        &format!("DeleteDevices #{step_no}"),
                        Service::Device,
                        step_no,
                        |r| {
                            let mut devices = self.reseller(Service::Device, r).devices();
                            let request = pb::DeleteDevicesRequest {
                                device_ids: ids.clone(),
                            };
                            async move {
                                devices
                                    .delete_devices(request)
                                    .await
                                    .map(tonic::Response::into_inner)
                            }
                        },
                        |_| None,
                    )
                    .await;
                if *expect_found {
                    // A retry of a deletion that went through finds nothing left: the
                    // devices are gone either way.
                    assert_eq!(
                        answer.deleted_device_ids.len() as i64 + answer.not_found_count,
                        ids.len() as i64,
                        "deletion #{step_no}"
                    );
                    expected.lock().unwrap().deleted.extend(ids.iter().cloned());
                } else {
                    assert_eq!(
                        (answer.deleted_device_ids.len(), answer.not_found_count),
                        (0, ids.len() as i64),
                        "deletion #{step_no} of devices never uploaded"
                    );
                }
            }
        }
    }
}

/// How one view converged: when it first matched, and what it lacked at the start.
struct Converged {
    what: String,
    after: Duration,
    first_mismatch: Option<String>,
}

/// Polls `check` until it returns `Ok`, for up to `deadline`; returns how long that took
/// from `since`, and the first mismatch seen.
async fn converged<F, Fut>(
    what: String,
    since: Instant,
    deadline: Duration,
    mut check: F,
) -> Converged
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut first_mismatch = None;
    loop {
        match check().await {
            Ok(()) => {
                return Converged {
                    what,
                    after: since.elapsed(),
                    first_mismatch,
                };
            }
            Err(why) => {
                assert!(
                    since.elapsed() < deadline,
                    "{what} did not converge within {deadline:?}: {why}"
                );
                first_mismatch.get_or_insert(why);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits on a condition with a deadline, returning how long it took.
async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    eventually_within(what, deadline, || {
        let done = check();
        async move { done.await.then_some(()) }
    })
    .await;
    start.elapsed()
}

/// `want` vs `got`, said briefly: counts and a few of the differences.
fn compare(what: &str, want: &BTreeSet<String>, got: &[String]) -> Result<(), String> {
    let got_set: BTreeSet<String> = got.iter().cloned().collect();
    if got_set.len() != got.len() {
        return Err(format!(
            "{what}: {} rows but {} distinct devices",
            got.len(),
            got_set.len()
        ));
    }
    if &got_set == want {
        return Ok(());
    }
    let missing: Vec<_> = want.difference(&got_set).take(3).collect();
    let extra: Vec<_> = got_set.difference(want).take(3).collect();
    Err(format!(
        "{what}: {} devices, expected {} (missing e.g. {missing:?}, unexpected e.g. {extra:?})",
        got.len(),
        want.len()
    ))
}

fn status_text(s: Status) -> String {
    format!("{:?} {}", s.code(), s.message())
}

/// Every page of one list, as device IDs.
async fn all_pages<F, Fut>(mut page: F) -> Result<Vec<String>, String>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(Vec<String>, String), Status>>,
{
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let (ids, next) = page(token).await.map_err(status_text)?;
        all.extend(ids);
        if next.is_empty() {
            return Ok(all);
        }
        token = next;
    }
}

async fn reporting_view(api: &Api, replica: usize, expected: &Expected) -> Result<(), String> {
    let reseller = api.reseller(Service::Reporting, replica);
    let page = reseller
        .list_customers(pb::ListCustomersRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .map_err(status_text)?;
    let rows: BTreeSet<_> = page
        .customers
        .iter()
        .map(|c| {
            (
                c.knox_id.clone(),
                c.display_id.clone(),
                c.managing_msp_id.clone(),
                c.uploaded_devices,
                c.devices,
            )
        })
        .collect();
    let want = expected.customer_rows();
    if rows != want || page.customers.len() != want.len() || page.total_size != want.len() as i64 {
        // (knox, display ID, managing MSP, UPLOADS, DEVICES): only the rows that differ.
        return Err(format!(
            "ListCustomers ({} rows, total_size {}): has {:?}, expected {:?}",
            page.customers.len(),
            page.total_size,
            rows.difference(&want).collect::<Vec<_>>(),
            want.difference(&rows).collect::<Vec<_>>()
        ));
    }
    if let Some(c) = page
        .customers
        .iter()
        .find(|c| c.status != CustomerStatus::Active as i32)
    {
        return Err(format!(
            "ListCustomers: {} is not active: {}",
            c.knox_id, c.status
        ));
    }
    for knox in CUSTOMERS.iter().chain([&JOINT, &MSP]) {
        let got = Portal::Reseller(knox).device_ids(&reseller).await?;
        compare(
            &format!("ListCustomerDevices {knox}"),
            &expected.reseller_view(knox),
            &got,
        )?;
    }
    Ok(())
}

/// A list of devices a caller pages through: the reseller's view of one customer, the
/// MSP portal, or a customer's own portal.
#[derive(Debug, Clone, Copy)]
enum Portal<'a> {
    Reseller(&'a str),
    Msp,
    Customer,
}

impl Portal<'_> {
    /// Every device ID the list shows `caller`, page by page (1,000 a page).
    async fn device_ids(self, caller: &Caller) -> Result<Vec<String>, String> {
        all_pages(|page_token| async move {
            let page_size = 1000;
            Ok(match self {
                Portal::Reseller(knox_id) => {
                    let knox_id = knox_id.into();
                    let request = pb::ListCustomerDevicesRequest {
                        knox_id,
                        page_size,
                        page_token,
                    };
                    let page = caller.list_customer_devices(request).await?;
                    (
                        ids(page.devices.iter().map(|d| &d.device_id)),
                        page.next_page_token,
                    )
                }
                Portal::Msp => {
                    let request = pb::ListMspDevicesRequest {
                        page_size,
                        page_token,
                        ..Default::default()
                    };
                    let page = caller.list_msp_devices(request).await?;
                    (
                        ids(page.devices.iter().map(|d| &d.device_id)),
                        page.next_page_token,
                    )
                }
                Portal::Customer => {
                    let request = pb::ListMyDevicesRequest {
                        page_size,
                        page_token,
                    };
                    let page = caller.list_my_devices(request).await?;
                    (
                        ids(page.devices.iter().map(|d| &d.device_id)),
                        page.next_page_token,
                    )
                }
            })
        })
        .await
    }
}

/// The IDs, owned.
fn ids<'a>(ids: impl Iterator<Item = &'a String>) -> Vec<String> {
    ids.cloned().collect()
}

async fn msp_view(api: &Api, replica: usize, expected: &Expected) -> Result<(), String> {
    let msp = api
        .clients
        .client(Service::MspLink, replica, Role::Msp, MSP);
    let got = Portal::Msp.device_ids(&msp).await?;
    compare("ListMspDevices", &expected.msp_portal(), &got)
}

async fn customer_views(api: &Api, replica: usize, expected: &Expected) -> Result<(), String> {
    for knox in CUSTOMERS.iter().chain([&JOINT, &FULL]) {
        let customer = api
            .clients
            .client(Service::Customer, replica, Role::Customer, knox);
        let got = Portal::Customer.device_ids(&customer).await?;
        compare(
            &format!("ListMyDevices {knox}"),
            &expected.customer_portal(knox),
            &got,
        )?;
    }
    Ok(())
}

/// Every deletion device-service recorded (including any a retry made twice) is
/// complete, as replica `replica` answers.
async fn deletions_complete(api: &Api, replica: usize, ids: &[String]) -> Result<(), String> {
    let devices = api.reseller(Service::Device, replica).devices();
    for id in ids {
        let deletion = devices
            .clone()
            .get_deletion(pb::GetDeletionRequest {
                deletion_id: id.clone(),
            })
            .await
            .map_err(status_text)?
            .into_inner();
        if !deletion.complete {
            return Err(format!(
                "deletion {id} is not complete (reseller {}, MSP {}, customer {})",
                deletion.reseller_portal, deletion.msp_portal, deletion.customer_portal
            ));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_everything_converge_after_kills_and_a_postgres_restart() {
    let test_start = Instant::now();
    let mut cluster = Cluster::start(ClusterOptions::default())
        .await
        .unwrap_or_else(|e| panic!("starting the cluster: {e:#}"));
    let started_in = test_start.elapsed();
    println!(
        "cluster up in {started_in:.1?}: 2 × 4 service processes, 3 NATS nodes, PostgreSQL on port {} (logs in {})",
        cluster.postgres.port(),
        cluster.dir().display()
    );
    let api = Api {
        clients: cluster.clients(),
        retries: Retries::default(),
    };

    // Onboarding through both customer-service and msp-link-service replicas.
    tokio::join!(
        api.register(0, MSP, AccountKind::Msp, "Managed Services Co"),
        api.register(1, FULL, AccountKind::Customer, "Fully Managed Ltd"),
    );
    api.add_and_approve(0, MSP, Role::Msp).await;
    join_all(
        CUSTOMERS[..ONBOARDED_FIRST]
            .iter()
            .chain([&JOINT])
            .enumerate()
            .map(|(i, knox)| api.onboard(i, knox)),
    )
    .await;
    api.link(0, JOINT, ManagementMode::JointlyManaged).await;
    api.link(1, FULL, ManagementMode::FullyManaged).await;

    let plan = plan();
    let expected = Arc::new(Mutex::new(Expected::default()));
    let (progress_tx, progress) = watch::channel(0usize);
    let (phase_tx, phase) = watch::channel(Phase::Calm);
    let workload_start = Instant::now();
    let workload = {
        let api = api.clone();
        let expected = expected.clone();
        let steps = plan.steps.clone();
        let (kill_after, postgres_after) = (plan.kill_after, plan.postgres_after);
        let mut phase = phase.clone();
        tokio::spawn(async move {
            for (n, step) in steps.iter().enumerate() {
                // The chaos starts when the step before is done, so it lands on the step
                // in flight; the workload holds before the next one until it has, so
                // that the steps after it surely run against it.
                if n == kill_after + 1 {
                    let _ = phase.wait_for(|p| *p >= Phase::Killed).await;
                }
                if n == postgres_after + 1 {
                    let _ = phase.wait_for(|p| *p >= Phase::PostgresRestarting).await;
                }
                api.run(n, step, &expected).await;
                let _ = progress_tx.send(n + 1);
            }
            Instant::now()
        })
    };
    let progress_deadline = Duration::from_secs(120);
    let wait_progress = |n: usize| {
        let mut progress = progress.clone();
        async move {
            tokio::time::timeout(progress_deadline, progress.wait_for(|done| *done >= n))
                .await
                .unwrap_or_else(|_| panic!("the workload did not reach step {n}"))
                .expect("the workload stopped (its panic is above)");
        }
    };

    // 1. Kill the relay leader of every service, then the stream's leader NATS node.
    wait_progress(plan.kill_after).await;
    let mut leaders = BTreeMap::new();
    for service in Service::ALL {
        let deadline = Instant::now() + Duration::from_secs(30);
        let leader = loop {
            if let Ok(Some(index)) = cluster.relay_leader(service).await {
                break index;
            }
            assert!(
                Instant::now() < deadline,
                "no {} relay leader",
                service.schema()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        leaders.insert(service, leader);
    }
    let nats = cluster.nats.client().await.expect("NATS client");
    let js = async_nats::jetstream::new(nats);
    // Asked with a short timeout: a request made while the stream has no leader waits for
    // the client's whole request timeout (5 s), which would hide when the leader came.
    let stream_leader = || {
        let js = js.clone();
        async move {
            tokio::time::timeout(Duration::from_millis(300), async {
                let mut stream = js.get_stream("RESELLER_EVENTS").await.ok()?;
                let info = stream.info().await.ok()?;
                info.cluster.as_ref()?.leader.clone()
            })
            .await
            .ok()
            .flatten()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let old_stream_leader = loop {
        if let Some(leader) = stream_leader().await {
            break leader;
        }
        assert!(Instant::now() < deadline, "RESELLER_EVENTS has no leader");
    };
    let stream_info = js
        .get_stream("RESELLER_EVENTS")
        .await
        .expect("RESELLER_EVENTS")
        .cached_info()
        .clone();
    assert_eq!(
        stream_info.config.num_replicas, 3,
        "RESELLER_EVENTS is not replicated three times (NATS_STREAM_REPLICAS=3)"
    );
    let killed_node = cluster
        .nats
        .index_of(&old_stream_leader)
        .expect("the leader is one of ours");
    // The relay leaders first, with NATS whole, so that the hand-over is measured on its
    // own (while a stream has no leader, relays fail their publishes and let go of the
    // lock, which would blur it); then the NATS node.
    let killed_at = Instant::now();
    for (service, index) in &leaders {
        cluster
            .kill(*service, *index)
            .await
            .expect("kill -9 a replica");
    }
    let handovers = join_all(leaders.iter().map(|(&service, &index)| {
        let cluster = &cluster;
        async move {
            wait_until(
                &format!("the {} relay to move", service.schema()),
                Duration::from_secs(60),
                move || async move {
                    matches!(cluster.relay_leader(service).await, Ok(Some(i)) if i != index)
                },
            )
            .await;
            (service.schema(), killed_at.elapsed())
        }
    }))
    .await;
    let nats_killed_at = Instant::now();
    cluster
        .nats
        .kill(killed_node)
        .await
        .expect("kill -9 a NATS node");
    let _ = phase_tx.send(Phase::Killed);
    println!(
        "killed during step {}: {}, then NATS node {old_stream_leader} (the stream leader)",
        plan.kill_after,
        leaders
            .iter()
            .map(|(s, i)| format!("{}-{i}", s.binary()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let stream_election = {
        let old = old_stream_leader.clone();
        wait_until(
            "a new RESELLER_EVENTS leader",
            Duration::from_secs(60),
            || {
                let leader = stream_leader();
                let old = old.clone();
                async move { leader.await.is_some_and(|l| l != old) }
            },
        )
        .await;
        nats_killed_at.elapsed()
    };

    // 2. The workload goes on through the survivors; then the killed come back.
    wait_progress(plan.restart_after).await;
    let down_for = killed_at.elapsed();
    let restart_start = Instant::now();
    cluster
        .nats
        .restart(killed_node)
        .await
        .expect("restart the NATS node");
    for (service, index) in &leaders {
        cluster
            .restart(*service, *index)
            .await
            .unwrap_or_else(|e| panic!("restarting {}-{index}: {e:#}", service.binary()));
    }
    let restarted_in = restart_start.elapsed();
    let _ = phase_tx.send(Phase::Restarted);

    // 3. PostgreSQL restarts under the workload.
    wait_progress(plan.postgres_after).await;
    let _ = phase_tx.send(Phase::PostgresRestarting);
    let pg_start = Instant::now();
    cluster.postgres.restart().await.expect("pg_ctl restart");
    let pg_restart = pg_start.elapsed();
    let relays_back = {
        let cluster = &cluster;
        join_all(Service::ALL.map(|service| async move {
            wait_until(
                &format!("a {} relay after the PostgreSQL restart", service.schema()),
                Duration::from_secs(60),
                move || async move { matches!(cluster.relay_leader(service).await, Ok(Some(_))) },
            )
            .await;
        }))
        .await;
        pg_start.elapsed()
    };

    let workload_end = tokio::time::timeout(Duration::from_secs(300), workload)
        .await
        .expect("the workload finished")
        .expect("the workload did not panic");
    let workload_took = workload_end - workload_start;
    let expected = Arc::try_unwrap(expected)
        .expect("the workload is done")
        .into_inner()
        .unwrap();

    // 4. Every view on every replica converges to exactly what the workload did.
    let deletion_ids: Vec<String> =
        sqlx::query_scalar("SELECT deletion_id::text FROM device.deletions")
            .fetch_all(&cluster.db)
            .await
            .expect("the deletions");
    // A deletion retried after an answer lost to a kill is recorded twice; never less.
    assert!(
        deletion_ids.len()
            >= plan
                .steps
                .iter()
                .filter(|s| matches!(s, Step::Delete { .. }))
                .count(),
        "a DeleteDevices step left no deletion"
    );
    let mut checks: Vec<LocalBoxFuture<'_, Converged>> = Vec::new();
    for replica in 0..2 {
        let (api, expected, deletion_ids) = (&api, &expected, &deletion_ids);
        checks.push(Box::pin(converged(
            format!("reporting-service-{replica}"),
            workload_end,
            CONVERGENCE_DEADLINE,
            move || reporting_view(api, replica, expected),
        )));
        checks.push(Box::pin(converged(
            format!("msp-link-service-{replica}"),
            workload_end,
            CONVERGENCE_DEADLINE,
            move || msp_view(api, replica, expected),
        )));
        checks.push(Box::pin(converged(
            format!("customer-service-{replica}"),
            workload_end,
            CONVERGENCE_DEADLINE,
            move || customer_views(api, replica, expected),
        )));
        checks.push(Box::pin(converged(
            format!("device-service-{replica} deletions"),
            workload_end,
            CONVERGENCE_DEADLINE,
            move || deletions_complete(api, replica, deletion_ids),
        )));
    }
    let db = cluster.db.clone();
    checks.push(Box::pin(converged(
        "every outbox row published".into(),
        workload_end,
        CONVERGENCE_DEADLINE,
        move || {
            let db = db.clone();
            async move {
                let unsent: i64 = sqlx::query_scalar(
                    "SELECT (SELECT count(*) FROM customer.outbox WHERE published_at IS NULL) \
                          + (SELECT count(*) FROM device.outbox WHERE published_at IS NULL) \
                          + (SELECT count(*) FROM msp.outbox WHERE published_at IS NULL) \
                          + (SELECT count(*) FROM reporting.outbox WHERE published_at IS NULL)",
                )
                .fetch_one(&db)
                .await
                .map_err(|e| e.to_string())?;
                if unsent == 0 {
                    Ok(())
                } else {
                    Err(format!("{unsent} outbox rows unsent"))
                }
            }
        },
    )));
    let converged_views = join_all(checks).await;
    let convergence = converged_views
        .iter()
        .map(|c| c.after)
        .max()
        .unwrap_or_default();

    // 5. The stream holds every event exactly once: each outbox row's event ID, once.
    let mut stream = js.get_stream("RESELLER_EVENTS").await.expect("the stream");
    let state = stream.info().await.expect("stream info").state.clone();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for sequence in state.first_sequence..=state.last_sequence {
        let message = stream
            .get_raw_message(sequence)
            .await
            .unwrap_or_else(|e| panic!("message {sequence}: {e}"));
        let header = message
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned())
            .unwrap_or_else(|| panic!("message {sequence} has no Nats-Msg-Id"));
        let event = pb::Event::decode(message.payload.as_ref()).expect("an Event");
        assert_eq!(
            event.event_id, header,
            "message {sequence}: payload vs header"
        );
        *by_id.entry(header).or_default() += 1;
    }
    let duplicates: Vec<_> = by_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicates.is_empty(),
        "{} event IDs are in RESELLER_EVENTS more than once, e.g. {:?}",
        duplicates.len(),
        duplicates.iter().take(5).collect::<Vec<_>>()
    );
    let outbox: HashSet<String> = sqlx::query_scalar(
        "SELECT event_id::text FROM customer.outbox UNION ALL SELECT event_id::text FROM device.outbox \
         UNION ALL SELECT event_id::text FROM msp.outbox UNION ALL SELECT event_id::text FROM reporting.outbox",
    )
    .fetch_all(&cluster.db)
    .await
    .expect("the outboxes")
    .into_iter()
    .collect();
    let in_stream: HashSet<String> = by_id.keys().cloned().collect();
    assert_eq!(
        in_stream.len(),
        outbox.len(),
        "the stream holds {} events, the outboxes {} (missing from the stream e.g. {:?})",
        in_stream.len(),
        outbox.len(),
        outbox.difference(&in_stream).take(3).collect::<Vec<_>>()
    );
    assert_eq!(
        in_stream, outbox,
        "the stream's events are the outboxes' events"
    );
    let dead_letters = js
        .get_stream("RESELLER_DEAD_LETTERS")
        .await
        .expect("the dead-letter stream")
        .info()
        .await
        .expect("its info")
        .state
        .messages;
    assert_eq!(
        dead_letters, 0,
        "events were dead-lettered during the chaos"
    );

    // 6. Nothing exited but what the test killed.
    let exited = cluster.exited_on_their_own().await;
    assert!(
        exited.is_empty(),
        "programs exited on their own: {exited:?}"
    );

    let mut report = vec![
        format!("cluster start: {started_in:.1?}"),
        format!(
            "workload: {} steps, {} devices uploaded, {} deleted, {} moved, in {workload_took:.1?}",
            plan.steps.len(),
            expected.uploaded.values().map(Vec::len).sum::<usize>(),
            expected.deleted.len(),
            expected.moved.len()
        ),
    ];
    for (schema, took) in &handovers {
        report.push(format!(
            "relay leadership of {schema} moved {took:.2?} after its holder was killed"
        ));
    }
    report.push(format!(
        "RESELLER_EVENTS leader re-elected {stream_election:.2?} after its node was killed"
    ));
    report.push(format!(
        "killed processes down {down_for:.1?}; restarted and SERVING in {restarted_in:.1?}"
    ));
    report.push(format!(
        "pg_ctl restart took {pg_restart:.2?}; every relay leading again {relays_back:.2?} after it began"
    ));
    for c in &converged_views {
        report.push(format!(
            "converged: {} {:.2?} after the workload's last answer",
            c.what, c.after
        ));
        if c.after > Duration::from_secs(2)
            && let Some(why) = &c.first_mismatch
        {
            report.push(format!("  (at first: {why})"));
        }
    }
    report.push(format!(
        "CONVERGENCE: {convergence:.2?} after the workload's last answer"
    ));
    report.push(format!(
        "stream: {} events, each once; dead letters: 0",
        in_stream.len()
    ));
    let retries = api.retries.summary();
    // CONTRACT.md: a dependency that is down is UNAVAILABLE; INTERNAL says the service
    // failed. Counted apart so that a regression shows.
    report.push(format!(
        "INTERNAL answers while a dependency was down: {}",
        retries.iter().filter(|r| r.contains(": Internal ")).count()
    ));
    report.push(format!(
        "calls retried on another replica: {}",
        retries.len()
    ));
    report.extend(retries.into_iter().map(|r| format!("  {r}")));
    let problems = cluster.log_problems();
    report.push(format!("distinct ERROR/WARN log lines: {}", problems.len()));
    report.extend(
        problems
            .iter()
            .take(25)
            .map(|(n, line)| format!("  {n:>4} × {line}")),
    );
    report.push(format!("total: {:.1?}", test_start.elapsed()));
    println!("chaos summary:\n  {}", report.join("\n  "));
}
