//! The Behaviour rules of DOMAIN.md walked step by step: uploads to an MSP, moves to a
//! fully and a jointly managed customer, a direct upload to the jointly managed one, the
//! refused delink of a fully managed customer, the switch, the delink — with what every
//! portal shows after each step — and then deletions in each placement.

use reseller_proto::v1::{self as pb, AccountKind, CustomerStatus, ManagementMode, PortalState};
use reseller_tests::assert::status;
use reseller_tests::clients::{Caller, customer, msp, reseller};
use reseller_tests::fixtures::{
    self, active_account, active_customer, msp_devices, my_devices, nanos, register, upload,
};
use reseller_tests::{TestStack, eventually, until_eq};
use tonic::Code;

const MSP: &str = "950000001";
const FULL: &str = "960000001"; // linked fully managed; never added by the reseller
const JOINT: &str = "960000002"; // linked jointly managed; also the reseller's customer

/// One row of the reseller's Customers page, as the test compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    knox_id: String,
    display_id: String,
    managing_msp_id: String,
    uploads: i64,
    devices: i64,
    last_uploaded: Option<i64>,
    status: i32,
}

async fn rows(acme: &Caller) -> Vec<Row> {
    acme.list_customers(pb::ListCustomersRequest {
        page_size: 100,
        ..Default::default()
    })
    .await
    .unwrap()
    .customers
    .into_iter()
    .map(|c| Row {
        knox_id: c.knox_id,
        display_id: c.display_id,
        managing_msp_id: c.managing_msp_id,
        uploads: c.uploaded_devices,
        devices: c.devices,
        last_uploaded: nanos(&c.last_uploaded_at),
        status: c.status,
    })
    .collect()
}

fn row(
    knox_id: &str,
    display_id: &str,
    managing: &str,
    uploads: i64,
    devices: i64,
    last: Option<i64>,
) -> Row {
    Row {
        knox_id: knox_id.into(),
        display_id: display_id.into(),
        managing_msp_id: managing.into(),
        uploads,
        devices,
        last_uploaded: last,
        status: CustomerStatus::Active as i32,
    }
}

/// Waits until the Customers page is exactly `expected` (rows in company-name order).
async fn page_is(acme: &Caller, expected: Vec<Row>) {
    until_eq("the Customers page", &expected, || rows(acme)).await;
}

async fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

async fn msp_portal(stack: &TestStack) -> Vec<String> {
    let devices = msp_devices(&msp(stack, MSP), "").await;
    sorted(devices.into_iter().map(|d| d.device_id).collect()).await
}

async fn customer_portal(stack: &TestStack, knox: &str) -> Vec<pb::PortalDevice> {
    let mut devices = my_devices(&customer(stack, knox)).await;
    devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    devices
}

async fn portal_ids(stack: &TestStack, knox: &str) -> Vec<String> {
    customer_portal(stack, knox)
        .await
        .into_iter()
        .map(|d| d.device_id)
        .collect()
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(what, || {
        let fut = check();
        async move { fut.await.then_some(()) }
    })
    .await;
}

fn strings(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

async fn detail(acme: &Caller, knox: &str) -> pb::CustomerDetail {
    acme.get_customer_detail(knox).await.unwrap()
}

async fn customer_devices(acme: &Caller, knox: &str) -> Vec<pb::CustomerDevice> {
    let mut devices = fixtures::customer_devices(acme, knox).await;
    devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    devices
}

async fn delete_and_complete(stack: &TestStack, device: &str) -> (i32, i32, i32) {
    let acme = reseller(stack, "acme");
    let deletion = acme.delete_devices([device]).await.unwrap();
    assert_eq!(deletion.deleted_device_ids, [device]);
    let done = eventually(&format!("the deletion of {device} to complete"), || async {
        let d = acme.get_deletion(&deletion.deletion_id).await.unwrap();
        d.complete.then_some(d)
    })
    .await;
    (done.reseller_portal, done.msp_portal, done.customer_portal)
}

/// The scenario's world: the stack, its callers, and what earlier steps produced. Each
/// step is one rule of DOMAIN.md, taken on the state the steps before it left, and checks
/// what every portal shows afterwards; each test runs the steps up to its rule.
struct Scenario {
    stack: TestStack,
    acme: Caller,
    m: Caller,
    u1: pb::Upload,
    t1: Option<i64>,
    t2: Option<i64>,
}

impl Scenario {
    /// 1. The reseller uploads four devices to the MSP: they sit in its pool.
    async fn uploads_to_an_msp_sit_in_its_pool() -> Self {
        let stack = TestStack::start().await;
        let acme = reseller(&stack, "acme");
        let m = msp(&stack, MSP);
        active_account(&stack, "acme", MSP, AccountKind::Msp, "Managed Services Co").await;
        register(&stack, FULL, AccountKind::Customer, "Fully Managed Ltd").await;
        active_customer(&stack, "acme", JOINT, "Jointly Managed AG").await;

        let u1 = upload(&stack, "acme", MSP, &strings(&["M-1", "M-2", "M-3", "M-4"]))
            .await
            .unwrap();
        let t1 = nanos(&u1.uploaded_at);
        // Company-name order: "Jointly Managed AG", "Managed Services Co".
        page_is(
            &acme,
            vec![
                row(JOINT, JOINT, "", 0, 0, None),
                row(MSP, MSP, "", 4, 4, t1),
            ],
        )
        .await;
        let msp_detail = detail(&acme, MSP).await;
        assert_eq!(
            msp_detail.summary.as_ref().unwrap().kind,
            AccountKind::Msp as i32
        );
        assert_eq!(msp_detail.uploads.len(), 1);
        assert_eq!(
            (
                msp_detail.uploads[0].upload_id.as_str(),
                msp_detail.uploads[0].device_count,
                msp_detail.uploads[0].r#virtual
            ),
            (u1.upload_id.as_str(), 4, false)
        );
        wait_for("the MSP pool", || async {
            msp_portal(&stack).await == strings(&["M-1", "M-2", "M-3", "M-4"])
        })
        .await;
        assert!(portal_ids(&stack, FULL).await.is_empty());
        assert!(portal_ids(&stack, JOINT).await.is_empty());
        status(acme.get_customer_detail(FULL).await, Code::NotFound);
        Self {
            stack,
            acme,
            m,
            u1,
            t1,
            t2: None,
        }
    }

    /// 2. The MSP links one customer fully and one jointly: the reseller's row of the
    ///    jointly managed customer now shows the MSP's ID.
    async fn linking_shows_the_msp_on_the_jointly_managed_row(&self) {
        self.m
            .link_customer(FULL, ManagementMode::FullyManaged)
            .await
            .unwrap();
        self.m
            .link_customer(JOINT, ManagementMode::JointlyManaged)
            .await
            .unwrap();
        self.page_is_linked_before_any_direct_upload().await;
    }

    /// The Customers page once the MSP links JOINT, until a device is uploaded to it: the
    ///    MSP's ID on JOINT's row, the pool's four devices on the MSP's.
    async fn page_is_linked_before_any_direct_upload(&self) {
        let rows = vec![
            row(JOINT, MSP, MSP, 0, 0, None),
            row(MSP, MSP, "", 4, 4, self.t1),
        ];
        page_is(&self.acme, rows).await;
    }

    /// 3. Moves: two to the fully managed customer, one to the jointly managed one. The
    ///    reseller still sees them under the MSP (rule 2); the customer that only has
    ///    moved devices is not listed.
    async fn moved_devices_stay_under_the_msp_for_the_reseller(&self) {
        let stack = &self.stack;
        let moved = self.m.move_devices(["M-1", "M-2"], FULL).await.unwrap();
        assert_eq!(moved.moved_device_ids, ["M-1", "M-2"]);
        self.m.move_devices(["M-3"], JOINT).await.unwrap();
        wait_for("moved devices in the customer portals", || async {
            portal_ids(stack, FULL).await == strings(&["M-1", "M-2"])
                && portal_ids(stack, JOINT).await == strings(&["M-3"])
        })
        .await;
        let full_portal = customer_portal(stack, FULL).await;
        assert!(
            full_portal
                .iter()
                .all(|d| d.moved_by_msp && d.msp_id == MSP && d.upload_id == self.u1.upload_id)
        );
        self.page_is_linked_before_any_direct_upload().await;
        assert_eq!(
            msp_portal(stack).await,
            strings(&["M-1", "M-2", "M-3", "M-4"])
        );
    }

    /// 4. A direct upload to the jointly managed customer: placed under it (rule 1), and
    ///    shown in the MSP portal because the MSP links it.
    async fn a_direct_upload_to_a_linked_customer_is_placed_under_it(&mut self) {
        let stack = &self.stack;
        let u2 = upload(stack, "acme", JOINT, &strings(&["J-1", "J-2"]))
            .await
            .unwrap();
        let t2 = nanos(&u2.uploaded_at);
        page_is(
            &self.acme,
            vec![
                row(JOINT, MSP, MSP, 2, 2, t2),
                row(MSP, MSP, "", 4, 4, self.t1),
            ],
        )
        .await;
        wait_for("direct devices in the MSP and customer portals", || async {
            msp_portal(stack).await == strings(&["J-1", "J-2", "M-1", "M-2", "M-3", "M-4"])
                && portal_ids(stack, JOINT).await == strings(&["J-1", "J-2", "M-3"])
        })
        .await;
        let joint_detail = detail(&self.acme, JOINT).await;
        assert_eq!(joint_detail.summary.as_ref().unwrap().display_id, MSP);
        assert_eq!(joint_detail.uploads.len(), 1);
        assert!(!joint_detail.uploads[0].r#virtual);
        self.t2 = t2;
    }

    /// 5. The fully managed customer cannot be delinked, by the MSP or by itself.
    async fn a_fully_managed_customer_cannot_be_delinked(&self) {
        let refused = status(
            self.m.delink_customer(FULL, "").await,
            Code::FailedPrecondition,
        );
        assert!(refused.message().contains("jointly managed"));
        status(
            customer(&self.stack, FULL).delink_customer(FULL, MSP).await,
            Code::FailedPrecondition,
        );
    }

    /// 6. Switched to jointly managed (nothing a portal shows changes), then 7. the
    ///    delink: the devices moved to it become one virtual upload under it, with the
    ///    original upload's ID, date and order number, and the counts move over.
    async fn a_delink_turns_moved_devices_into_a_virtual_upload(&self) {
        let (stack, acme, t1) = (&self.stack, &self.acme, self.t1);
        self.m.set_jointly_managed(FULL).await.unwrap();
        customer(stack, FULL)
            .delink_customer(FULL, MSP)
            .await
            .unwrap();
        page_is(
            acme,
            vec![
                row(FULL, FULL, "", 2, 2, t1),
                row(JOINT, MSP, MSP, 2, 2, self.t2),
                row(MSP, MSP, "", 2, 2, t1),
            ],
        )
        .await;
        let full_detail = detail(acme, FULL).await;
        assert_eq!(full_detail.uploads.len(), 1);
        let virtual_upload = &full_detail.uploads[0];
        assert_eq!(
            (
                virtual_upload.upload_id.as_str(),
                virtual_upload.order_number.as_str(),
                virtual_upload.device_count,
                virtual_upload.r#virtual,
                virtual_upload.via_msp_id.as_str()
            ),
            (self.u1.upload_id.as_str(), "PO-1", 2, true, MSP)
        );
        assert_eq!(nanos(&virtual_upload.uploaded_at), t1);
        let full_devices = customer_devices(acme, FULL).await;
        assert_eq!(
            full_devices
                .iter()
                .map(|d| (d.device_id.as_str(), d.r#virtual))
                .collect::<Vec<_>>(),
            [("M-1", true), ("M-2", true)]
        );
        assert_eq!(
            customer_devices(acme, MSP)
                .await
                .iter()
                .map(|d| d.device_id.as_str())
                .collect::<Vec<_>>(),
            ["M-3", "M-4"]
        );
        // The customer's CSV marks the virtual upload too.
        let csv_bytes = acme
            .export_customer_csv(pb::ExportCustomerCsvRequest {
                knox_id: FULL.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .bytes;
        let mut reader = csv::Reader::from_reader(csv_bytes.as_slice());
        let headers = reader.headers().unwrap().clone();
        let column = |name: &str| {
            headers
                .iter()
                .position(|h| h == name)
                .unwrap_or_else(|| panic!("no {name} column"))
        };
        let (virtual_column, via_column, upload_column) = (
            column("Virtual Upload"),
            column("Via MSP"),
            column("Upload ID"),
        );
        let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(records.len(), 2);
        for record in &records {
            assert_eq!(
                (
                    &record[virtual_column],
                    &record[via_column],
                    &record[upload_column]
                ),
                ("yes", MSP, self.u1.upload_id.as_str())
            );
        }
        wait_for(
            "the MSP portal without the delinked customer's devices",
            || async { msp_portal(stack).await == strings(&["J-1", "J-2", "M-3", "M-4"]) },
        )
        .await;
        assert_eq!(
            portal_ids(stack, FULL).await,
            strings(&["M-1", "M-2"]),
            "the customer keeps what was moved to it"
        );
    }

    /// Deletions in each placement, with their exact portal states.
    async fn deletions_report_exactly_the_portals_that_showed_the_device(&self) {
        let stack = &self.stack;
        let removed = PortalState::Removed as i32;
        let not_applicable = PortalState::NotApplicable as i32;
        // (reseller portal, MSP portal, customer portal), in this order of deletions.
        for (device, portals, placement) in [
            ("M-4", (removed, removed, not_applicable), "in the MSP pool"),
            (
                "M-3",
                (removed, removed, removed),
                "moved, at a linked customer",
            ),
            (
                "M-1",
                (removed, not_applicable, removed),
                "moved, at a delinked customer",
            ),
            (
                "J-1",
                (removed, removed, removed),
                "direct, at an MSP-managed customer",
            ),
        ] {
            assert_eq!(
                delete_and_complete(stack, device).await,
                portals,
                "{placement}"
            );
        }
        // UPLOADS keeps deleted devices, DEVICES drops them; no view shows them.
        page_is(
            &self.acme,
            vec![
                row(FULL, FULL, "", 2, 1, self.t1),
                row(JOINT, MSP, MSP, 2, 1, self.t2),
                row(MSP, MSP, "", 2, 0, self.t1),
            ],
        )
        .await;
        assert_eq!(msp_portal(stack).await, strings(&["J-2"]));
        assert_eq!(portal_ids(stack, FULL).await, strings(&["M-2"]));
        assert_eq!(portal_ids(stack, JOINT).await, strings(&["J-2"]));
        assert_eq!(customer_devices(&self.acme, FULL).await.len(), 1);
    }

    /// A fresh scenario taken through every step up to and including `last`, each
    /// checking its rule.
    async fn through(last: Step) -> Self {
        let mut world = Self::uploads_to_an_msp_sit_in_its_pool().await;
        for step in Step::AFTER_THE_FIRST {
            if step > last {
                break;
            }
            match step {
                Step::Pool => {}
                Step::Link => {
                    world
                        .linking_shows_the_msp_on_the_jointly_managed_row()
                        .await
                }
                Step::Move => {
                    world
                        .moved_devices_stay_under_the_msp_for_the_reseller()
                        .await
                }
                Step::DirectUpload => {
                    world
                        .a_direct_upload_to_a_linked_customer_is_placed_under_it()
                        .await
                }
                Step::RefusedDelink => world.a_fully_managed_customer_cannot_be_delinked().await,
                Step::Delink => {
                    world
                        .a_delink_turns_moved_devices_into_a_virtual_upload()
                        .await
                }
                Step::Deletions => {
                    world
                        .deletions_report_exactly_the_portals_that_showed_the_device()
                        .await
                }
            }
        }
        world
    }
}

/// The scenario's steps, in the order they are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Pool,
    Link,
    Move,
    DirectUpload,
    RefusedDelink,
    Delink,
    Deletions,
}

impl Step {
    const AFTER_THE_FIRST: [Step; 6] = [
        Step::Link,
        Step::Move,
        Step::DirectUpload,
        Step::RefusedDelink,
        Step::Delink,
        Step::Deletions,
    ];
}

/// One test per rule, named after it: each takes a fresh scenario through the steps up
/// to and including its own.
macro_rules! rule_tests {
    ($($name:ident => $step:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            Scenario::through(Step::$step).await;
        }
    )*};
}

rule_tests! {
    uploads_to_an_msp_sit_in_its_pool => Pool,
    linking_shows_the_msp_on_the_jointly_managed_row => Link,
    moved_devices_stay_under_the_msp_for_the_reseller => Move,
    a_direct_upload_to_a_linked_customer_is_placed_under_it => DirectUpload,
    a_fully_managed_customer_cannot_be_delinked => RefusedDelink,
    a_delink_turns_moved_devices_into_a_virtual_upload => Delink,
    deletions_report_exactly_the_portals_that_showed_the_device => Deletions,
}
