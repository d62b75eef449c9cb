//! CSV exports for people (issue 9, item 7), over real gRPC, PostgreSQL and NATS:
//!
//! - `byte_order_mark` on both exports starts the file with the UTF-8 byte-order mark
//!   (EF BB BF), so Excel shows accented company names; without it the file is byte for
//!   byte what it was (the same bytes after the mark, no mark at all).
//! - Sorting by company name follows PostgreSQL's ICU root collation (`und-x-icu`):
//!   `Ärzte` sorts with `A`, `émile` with `E`, case does not split the list, exact ties go
//!   by Knox ID, over keyset pages as small as 2 and in the customers CSV alike.

use reseller_proto::v1::{self as pb, AccountKind};
use reseller_tests::clients::{Caller, Csv, reseller};
use reseller_tests::fixtures::{
    CUSTOMERS_CSV_HEADER, active_customer, imei, register, upload_stream,
};
use reseller_tests::{TestStack, eventually};

/// The UTF-8 byte-order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The bytes of an export, which must succeed to its end.
fn read_all(answer: Result<Csv, tonic::Status>) -> Vec<u8> {
    answer.expect("export").bytes
}

/// Which file: the customers list for a search (`query`), or one customer's devices
/// (`knox_id`).
#[derive(Debug, Clone, Copy)]
enum File<'a> {
    Customers(&'a str),
    Customer(&'a str),
}

/// The bytes of `file`, with a byte-order mark when asked.
async fn export(caller: &Caller, file: File<'_>, byte_order_mark: bool) -> Vec<u8> {
    read_all(match file {
        File::Customers(query) => {
            caller
                .export_customers_csv(pb::ExportCustomersCsvRequest {
                    query: query.into(),
                    byte_order_mark,
                })
                .await
        }
        File::Customer(knox_id) => {
            let knox_id = knox_id.into();
            let request = pb::ExportCustomerCsvRequest {
                knox_id,
                byte_order_mark,
            };
            caller.export_customer_csv(request).await
        }
    })
}

/// The records of a CSV file (header not included), read by an RFC 4180 reader.
fn records(bytes: &[u8]) -> Vec<Vec<String>> {
    csv::Reader::from_reader(bytes)
        .records()
        .map(|r| r.expect("record").iter().map(str::to_owned).collect())
        .collect()
}

async fn list_page(caller: &Caller, page_size: i32, page_token: &str) -> pb::ListCustomersResponse {
    caller
        .list_customers(pb::ListCustomersRequest {
            page_size,
            page_token: page_token.into(),
            ..Default::default()
        })
        .await
        .expect("list customers")
}

#[tokio::test]
async fn both_exports_start_with_a_byte_order_mark_only_when_asked() {
    const KNOX: &str = "960000001";
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", KNOX, "Ärzte Nord Société").await;
    let acme = reseller(&stack, "acme");
    let upload = upload_stream(
        pb::UploadHeader {
            target_knox_id: KNOX.into(),
            order_number: "Bestellung Nº 7".into(),
            ..Default::default()
        },
        vec![pb::DeviceInput {
            device_id: imei(1),
            model: "Téléphone Ü".into(),
            ..Default::default()
        }],
        10,
    );
    acme.upload_devices(futures::stream::iter(upload))
        .await
        .expect("upload");
    eventually("the device in the customer's CSV", || async {
        // NOT_FOUND until reporting has the customer's events.
        let export = acme
            .reporting()
            .export_customer_csv(pb::ExportCustomerCsvRequest {
                knox_id: KNOX.into(),
                byte_order_mark: false,
            })
            .await
            .ok()?;
        let bytes = Csv::read(Ok(export)).await.expect("chunk").bytes;
        (records(&bytes).len() == 1).then_some(())
    })
    .await;

    // The customers file.
    let plain = export(&acme, File::Customers(""), false).await;
    let marked = export(&acme, File::Customers(""), true).await;
    let default = read_all(
        acme.export_customers_csv(pb::ExportCustomersCsvRequest::default())
            .await,
    );
    assert_eq!(
        plain, default,
        "an unset field is the file as it always was"
    );
    assert!(plain.starts_with(b"Company Name / Internal Reference,"));
    assert_eq!(&marked[..3], BOM);
    assert_eq!(marked[3..], plain[..], "the same bytes after the mark");
    assert_eq!(
        String::from_utf8(plain.clone()).unwrap(),
        format!("{CUSTOMERS_CSV_HEADER}\r\n")
            + &format!(
                "Ärzte Nord Société,{KNOX},DE,{},1,1,Active\r\n",
                records(&plain)[0][3]
            )
    );
    // A reader that honours the mark (the csv crate strips it) reads the same records.
    assert_eq!(records(&marked), records(&plain));
    assert_eq!(records(&marked)[0][0], "Ärzte Nord Société");

    // One customer's file.
    let plain = export(&acme, File::Customer(KNOX), false).await;
    let marked = export(&acme, File::Customer(KNOX), true).await;
    let default = read_all(
        acme.export_customer_csv(pb::ExportCustomerCsvRequest {
            knox_id: KNOX.into(),
            ..Default::default()
        })
        .await,
    );
    assert_eq!(plain, default);
    assert!(plain.starts_with(b"Upload ID,Uploaded At,"));
    assert_eq!(&marked[..3], BOM);
    assert_eq!(marked[3..], plain[..]);
    let rows = records(&marked);
    assert_eq!(
        (rows[0][2].as_str(), rows[0][5].as_str()),
        ("Bestellung Nº 7", "Téléphone Ü")
    );

    // A search with no hits is the header alone, with its mark when asked.
    let empty = export(&acme, File::Customers("no such company"), true).await;
    assert_eq!(
        empty,
        [BOM, format!("{CUSTOMERS_CSV_HEADER}\r\n").as_bytes(),].concat()
    );
}

#[tokio::test]
async fn company_names_sort_in_the_icu_root_collation_on_every_page_and_in_the_csv() {
    let stack = TestStack::start().await;
    let accounts = [
        ("961000001", "Zeta"),
        ("961000002", "Ärzte Nord"),
        ("961000003", "acme"),
        ("961000008", "Acme"),
        ("961000004", "Acme"),
        ("961000005", "Beta"),
        ("961000006", "émile"),
        ("961000007", "Arzt"),
        ("961000009", "acme b"),
    ];
    for (knox, name) in accounts {
        register(&stack, knox, AccountKind::Customer, name).await;
        reseller(&stack, "acme")
            .customers()
            .add_customer(pb::AddCustomerRequest {
                knox_id: knox.into(),
                internal_reference: String::new(),
            })
            .await
            .expect("add customer");
    }
    let acme = reseller(&stack, "acme");
    eventually("every row on the Customers page", || async {
        (list_page(&acme, 1, "").await.total_size == accounts.len() as i64).then_some(())
    })
    .await;

    // People's order: accents and case count only between names otherwise equal (lower
    // case first), so `Ärzte` is among the A's and `émile` among the E's, and `acme b`
    // follows every `acme`; the two rows named exactly `Acme` go by Knox ID.
    let expected = [
        ("acme", "961000003"),
        ("Acme", "961000004"),
        ("Acme", "961000008"),
        ("acme b", "961000009"),
        ("Arzt", "961000007"),
        ("Ärzte Nord", "961000002"),
        ("Beta", "961000005"),
        ("émile", "961000006"),
        ("Zeta", "961000001"),
    ];

    // Keyset pages of 2, so several page boundaries fall inside equal and case-equal
    // names (`Acme`/`Acme`, `acme`/`Acme`).
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = list_page(&acme, 2, &token).await;
        pages += 1;
        assert!(page.customers.len() <= 2);
        seen.extend(
            page.customers
                .into_iter()
                .map(|c| (c.company_name, c.knox_id)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 5);
    let seen: Vec<(&str, &str)> = seen
        .iter()
        .map(|(name, knox)| (name.as_str(), knox.as_str()))
        .collect();
    assert_eq!(seen, expected);

    // `company_name` spelled out is the same order, and so is one big page.
    let whole = acme
        .list_customers(pb::ListCustomersRequest {
            order_by: "Company_Name asc".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let whole: Vec<(&str, &str)> = whole
        .customers
        .iter()
        .map(|c| (c.company_name.as_str(), c.knox_id.as_str()))
        .collect();
    assert_eq!(whole, expected);

    // The CSV, with and without its mark, lists the rows in the same order.
    for byte_order_mark in [false, true] {
        let csv = export(&acme, File::Customers(""), byte_order_mark).await;
        let rows: Vec<(String, String)> = records(&csv)
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone()))
            .collect();
        let rows: Vec<(&str, &str)> = rows
            .iter()
            .map(|(name, knox)| (name.as_str(), knox.as_str()))
            .collect();
        assert_eq!(rows, expected, "byte_order_mark {byte_order_mark}");
    }

    // A search keeps the order among its hits. Search matches characters, not collation
    // keys: `Ärzte Nord` and `émile` hold no plain `a`.
    let hits: Vec<String> = records(&export(&acme, File::Customers("a"), false).await)
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(
        hits,
        ["acme", "Acme", "Acme", "acme b", "Arzt", "Beta", "Zeta"]
    );
}
