//! The reseller's Customers page (reporting-service) over real gRPC, PostgreSQL and NATS:
//! the rows, search, ordering and keyset paging, tenancy, and the customers CSV.

use reseller_proto::v1::{self as pb, AccountKind, CustomerStatus};
use reseller_tests::assert::{invalid_fields, status};
use reseller_tests::clients::{Caller, Csv, customer, reseller};
use reseller_tests::fixtures::{CUSTOMERS_CSV_HEADER, csv_header, customers_csv_columns, register};
use reseller_tests::{TestStack, eventually};
use tonic::Code;

async fn add(stack: &TestStack, reseller_id: &str, knox_id: &str, reference: &str) {
    reseller(stack, reseller_id)
        .add_customer(knox_id, reference)
        .await
        .expect("add customer");
}

async fn list(
    caller: &Caller,
    query: &str,
    order_by: &str,
    page_size: i32,
    page_token: &str,
) -> pb::ListCustomersResponse {
    caller
        .list_customers(pb::ListCustomersRequest {
            query: query.into(),
            page_size,
            page_token: page_token.into(),
            order_by: order_by.into(),
        })
        .await
        .expect("list customers")
}

/// Waits until the reseller's list holds `n` rows.
async fn wait_for_rows(caller: &Caller, n: i64) {
    eventually(&format!("{n} rows on the Customers page"), || async {
        (list(caller, "", "", 1, "").await.total_size == n).then_some(())
    })
    .await;
}

async fn search(caller: &Caller, query: &str) -> Vec<String> {
    let mut names: Vec<String> = list(caller, query, "", 1000, "")
        .await
        .customers
        .into_iter()
        .map(|c| c.company_name)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn rows_show_the_portals_columns_and_follow_changes() {
    let stack = TestStack::start().await;
    register(&stack, "700000001", AccountKind::Customer, "Globex").await;
    register(&stack, "700000002", AccountKind::Msp, "Initech MSP").await;
    add(&stack, "acme", "700000001", "PO-7").await;
    add(&stack, "acme", "700000002", "").await;
    let acme = reseller(&stack, "acme");
    wait_for_rows(&acme, 2).await;

    let page = list(&acme, "", "", 0, "").await;
    assert_eq!(page.total_size, 2);
    assert!(page.next_page_token.is_empty());
    let globex = &page.customers[0];
    assert_eq!(
        (
            globex.company_name.as_str(),
            globex.internal_reference.as_str(),
            globex.knox_id.as_str(),
            globex.display_id.as_str()
        ),
        ("Globex", "PO-7", "700000001", "700000001")
    );
    assert_eq!(
        (globex.country.as_str(), globex.kind),
        ("DE", AccountKind::Customer as i32)
    );
    assert_eq!(
        (
            globex.uploaded_devices,
            globex.devices,
            globex.last_uploaded_at
        ),
        (0, 0, None)
    );
    assert_eq!(globex.status, CustomerStatus::PendingVerification as i32);
    assert_eq!(
        page.customers[1].kind,
        AccountKind::Msp as i32,
        "an MSP row is tagged MSP by its kind"
    );

    // Approvals and reference edits reach the page.
    customer(&stack, "700000001")
        .approve_reseller("acme")
        .await
        .unwrap();
    acme.update_internal_reference("700000001", "Key account")
        .await
        .unwrap();
    eventually("the approval and the new reference on the page", || async {
        let row = list(&acme, "globex", "", 1, "")
            .await
            .customers
            .into_iter()
            .next()?;
        (row.status == CustomerStatus::Active as i32 && row.internal_reference == "Key account")
            .then_some(())
    })
    .await;
    customer(&stack, "700000001")
        .revoke_reseller("acme")
        .await
        .unwrap();
    eventually("the revocation on the page", || async {
        let row = list(&acme, "globex", "", 1, "")
            .await
            .customers
            .into_iter()
            .next()?;
        (row.status == CustomerStatus::Inactive as i32).then_some(())
    })
    .await;
}

#[tokio::test]
async fn search_is_a_case_insensitive_literal_substring_of_name_reference_or_knox_id() {
    let stack = TestStack::start().await;
    let accounts = [
        ("710000001", "ACME Corporation", "north"),
        ("710000002", "acme lower", ""),
        ("710000003", "100% Cotton Ltd", "PO_15"),
        ("710000004", "Under_Score AG", ""),
        ("710000005", "O'Brien & Sons", "ref \"quoted\""),
        ("710000006", "Ab", "cd"),
        ("710000007", "Back\\slash GmbH", ""),
        ("719999999", "Zeta", "Nord-Ost"),
    ];
    for (knox, name, reference) in accounts {
        register(&stack, knox, AccountKind::Customer, name).await;
        add(&stack, "acme", knox, reference).await;
    }
    // Another reseller's reference must never produce a hit for acme.
    add(&stack, "other", "710000004", "secret-needle").await;
    let acme = reseller(&stack, "acme");
    wait_for_rows(&acme, accounts.len() as i64).await;
    wait_for_rows(&reseller(&stack, "other"), 1).await;

    assert_eq!(
        search(&acme, "acme").await,
        ["ACME Corporation", "acme lower"]
    );
    assert_eq!(search(&acme, "CORP").await, ["ACME Corporation"]);
    assert_eq!(
        search(&acme, "NORTH").await,
        ["ACME Corporation"],
        "internal reference"
    );
    assert_eq!(search(&acme, "nord").await, ["Zeta"]);
    assert_eq!(
        search(&acme, "99999").await,
        ["Zeta"],
        "part of the Knox ID"
    );
    assert_eq!(
        search(&acme, "%").await,
        ["100% Cotton Ltd"],
        "% is literal"
    );
    assert_eq!(
        search(&acme, "_").await,
        ["100% Cotton Ltd", "Under_Score AG"],
        "_ is literal"
    );
    assert_eq!(search(&acme, "'").await, ["O'Brien & Sons"]);
    assert_eq!(search(&acme, "\"quoted\"").await, ["O'Brien & Sons"]);
    assert_eq!(search(&acme, "\\").await, ["Back\\slash GmbH"]);
    assert!(
        search(&acme, "bc").await.is_empty(),
        "a match never spans the name and the reference"
    );
    assert!(
        search(&acme, "needle").await.is_empty(),
        "another reseller's reference is not searched"
    );
    assert_eq!(
        search(&reseller(&stack, "other"), "needle").await,
        ["Under_Score AG"]
    );
    assert!(
        search(&reseller(&stack, "other"), "acme").await.is_empty(),
        "another reseller's rows are never hits"
    );
    let filtered = list(&acme, "acme", "", 1, "").await;
    assert_eq!(
        filtered.total_size, 2,
        "total_size counts the search's hits"
    );
    assert!(!filtered.next_page_token.is_empty());
}

#[tokio::test]
async fn paging_returns_every_row_exactly_once_in_order() {
    let stack = TestStack::start().await;
    let mut expected = Vec::new();
    for i in 0..23u32 {
        let knox = format!("{}", 720000000 + (i * 7919) % 1000);
        // Names that collate differently with and without case folding, plus ties.
        let name = match i % 4 {
            0 => format!("alpha {:02}", 22 - i),
            1 => format!("Beta {:02}", i),
            2 => "Same Name".to_owned(),
            _ => format!("gamma {:02}", i),
        };
        register(&stack, &knox, AccountKind::Customer, &name).await;
        add(&stack, "acme", &knox, "").await;
        expected.push((name.to_lowercase(), knox));
    }
    expected.sort();
    let acme = reseller(&stack, "acme");
    wait_for_rows(&acme, 23).await;

    for order_by in ["", "company_name", "last_uploaded desc", "devices desc"] {
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = list(&acme, "", order_by, 5, &token).await;
            assert_eq!(page.total_size, 23);
            assert!(page.customers.len() <= 5);
            seen.extend(
                page.customers
                    .into_iter()
                    .map(|c| (c.company_name.to_lowercase(), c.knox_id)),
            );
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        if order_by.is_empty() || order_by == "company_name" {
            assert_eq!(seen, expected, "order {order_by:?}");
        } else {
            // No uploads yet: every row ties, so the order falls back to the Knox ID.
            let mut by_knox: Vec<_> = expected.clone();
            by_knox.sort_by(|a, b| a.1.cmp(&b.1));
            assert_eq!(seen, by_knox, "order {order_by:?}");
        }
    }

    assert_eq!(
        invalid_fields(
            acme.list_customers(pb::ListCustomersRequest {
                order_by: "country".into(),
                ..Default::default()
            })
            .await
        ),
        ["order_by"]
    );
    assert_eq!(
        invalid_fields(
            acme.list_customers(pb::ListCustomersRequest {
                page_size: -1,
                ..Default::default()
            })
            .await
        ),
        ["page_size"]
    );
    let token = list(&acme, "", "", 5, "").await.next_page_token;
    let reused = acme
        .list_customers(pb::ListCustomersRequest {
            page_token: token,
            order_by: "devices desc".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(invalid_fields(reused), ["page_token"]);
    assert_eq!(
        invalid_fields(
            acme.list_customers(pb::ListCustomersRequest {
                page_token: "garbage".into(),
                ..Default::default()
            })
            .await
        ),
        ["page_token"]
    );
    // Tokens are no way into another tenant: the same token read by another reseller
    // pages through that reseller's (empty) list.
    let token = list(&acme, "", "", 5, "").await.next_page_token;
    let theirs = list(&reseller(&stack, "other"), "", "", 5, &token).await;
    assert!(theirs.customers.is_empty());
}

/// The customers CSV for `query`, as it arrived.
async fn export(caller: &Caller, query: &str) -> Csv {
    let without_mark = pb::ExportCustomersCsvRequest {
        query: query.into(),
        byte_order_mark: false,
    };
    caller
        .export_customers_csv(without_mark)
        .await
        .expect("export")
}

#[tokio::test]
async fn the_customers_csv_is_rfc_4180_neutralised_and_follows_the_search() {
    let stack = TestStack::start().await;
    let rows = [
        ("730000001", "=HYPERLINK(\"http://x\")", ""),
        ("730000002", "+1 Corp", "-minus ref"),
        ("730000003", "@at Company", "a, b"),
        ("730000004", "Quote \"Q\" Ltd", "with \"quotes\""),
        ("730000005", "Plain Co", "PO-7"),
    ];
    for (knox, name, reference) in rows {
        register(&stack, knox, AccountKind::Customer, name).await;
        add(&stack, "acme", knox, reference).await;
    }
    customer(&stack, "730000005")
        .approve_reseller("acme")
        .await
        .unwrap();
    let acme = reseller(&stack, "acme");
    wait_for_rows(&acme, 5).await;
    eventually("Plain Co active", || async {
        (list(&acme, "plain", "", 1, "")
            .await
            .customers
            .first()?
            .status
            == CustomerStatus::Active as i32)
            .then_some(())
    })
    .await;

    let bytes = export(&acme, "").await.bytes;
    let text = String::from_utf8(bytes.clone()).expect("UTF-8");
    assert!(text.starts_with(&format!("{CUSTOMERS_CSV_HEADER}\r\n")));
    assert!(text.ends_with("\r\n"));
    assert_eq!(
        text.matches('\n').count(),
        text.matches("\r\n").count(),
        "every line ends with CRLF"
    );

    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes.as_slice());
    let header = csv_header(&mut reader);
    assert_eq!(header, customers_csv_columns());
    let records: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    let by_id = |knox: &str| {
        records
            .iter()
            .find(|r| r[1] == knox)
            .unwrap_or_else(|| panic!("{knox} missing"))
            .clone()
    };
    assert_eq!(
        by_id("730000001")[0],
        "'=HYPERLINK(\"http://x\")",
        "formula neutralised"
    );
    assert_eq!(by_id("730000002")[0], "'+1 Corp / -minus ref");
    assert_eq!(by_id("730000003")[0], "'@at Company / a, b");
    assert_eq!(by_id("730000004")[0], "Quote \"Q\" Ltd / with \"quotes\"");
    assert_eq!(
        by_id("730000005"),
        ["Plain Co / PO-7", "730000005", "DE", "", "0", "0", "Active"]
    );
    assert_eq!(by_id("730000001")[6], "Pending customer verification");
    assert_eq!(records.len(), 5);
    // Quotes are doubled in the file itself.
    assert!(text.contains("\"Quote \"\"Q\"\" Ltd / with \"\"quotes\"\"\""));

    // The download follows the search, and is per reseller.
    let filtered = export(&acme, "plain").await.bytes;
    let filtered = String::from_utf8(filtered).unwrap();
    assert_eq!(filtered.lines().count(), 2, "{filtered}");
    let theirs = export(&reseller(&stack, "other"), "").await.bytes;
    assert_eq!(
        String::from_utf8(theirs).unwrap().lines().count(),
        1,
        "only the header"
    );
}

#[tokio::test]
async fn a_large_customers_csv_streams_in_chunks() {
    let stack = TestStack::start().await;
    for i in 0..400u32 {
        let knox = format!("{}", 740000000 + i);
        register(
            &stack,
            &knox,
            AccountKind::Customer,
            &format!("{:0>180}", i),
        )
        .await;
        add(&stack, "acme", &knox, &"r".repeat(100)).await;
    }
    let acme = reseller(&stack, "acme");
    wait_for_rows(&acme, 400).await;
    let Csv {
        bytes,
        chunk_sizes: chunks,
    } = export(&acme, "").await;
    assert!(bytes.len() > 100_000);
    assert!(chunks.len() >= 2, "{chunks:?}");
    assert!(
        chunks.iter().all(|&n| n <= 70 * 1024),
        "chunks of about 64 KiB: {chunks:?}"
    );
    let records = csv::Reader::from_reader(bytes.as_slice()).records().count();
    assert_eq!(records, 400);
    status(
        customer(&stack, "740000001")
            .reporting()
            .export_customers_csv(pb::ExportCustomersCsvRequest::default())
            .await,
        Code::PermissionDenied,
    );
}
