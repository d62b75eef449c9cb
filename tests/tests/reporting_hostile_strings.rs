//! ReportingService and strings nothing downstream can hold (issue 9, item 1), over real
//! gRPC, PostgreSQL and NATS.
//!
//! A table: every string field a caller sends to ReportingService (`query`, `order_by`,
//! `page_token`, `knox_id` of each RPC) is fed hostile values — a NUL (PostgreSQL text
//! refuses 0x00), other control characters, 10 kB strings, non-ASCII text — one field at
//! a time, the other fields valid. Each answer must be the one the field's rule gives:
//! success, `INVALID_ARGUMENT` with a field violation naming the field, or `NOT_FOUND`
//! for a well-formed Knox ID nobody has; never `INTERNAL` or `UNKNOWN`. Every message
//! and violation description quotes at most 64 characters of the value, with control
//! characters escaped. Page tokens are also fed tokens that decode (real tokens with
//! each string inside replaced by the value), because a token's content reaches SQL.
//!
//! Search for non-ASCII text still works: `Ärzte`, `ärzte`, `ÄRZTE NORD` find
//! `Ärzte Nord`, in the list and in the CSV.

use reseller_kit::paging;
use reseller_proto::v1::{self as pb, AccountKind};
use reseller_tests::clients::{Caller, reseller};
use reseller_tests::fixtures::{active_customer, imei, register, upload_stream};
use reseller_tests::tokens::with_each_string_replaced;
use reseller_tests::{TestStack, eventually};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// "Ärzte Nord": active, with two devices (so its devices page).
const ARZTE: &str = "970000001";
/// "émile & Søn": added, pending.
const EMILE: &str = "970000002";
/// A well-formed Knox ID nobody has.
const NOBODY: &str = "979999999";

/// Most characters of a caller's value an answer may quote.
const ECHO_MAX_CHARS: usize = 64;

/// The hostile values, each with a label for the report.
fn hostile_values() -> Vec<(&'static str, String)> {
    vec![
        ("NUL inside", "Ärz\u{0}te".into()),
        ("NUL alone", "\u{0}".into()),
        ("NUL inside digits", "97000\u{0}0001".into()),
        ("ANSI escape and DEL", "\u{1b}[31mred\u{7f}".into()),
        ("tab", "a\tb".into()),
        ("CR LF", "a\r\nb".into()),
        ("C1 control", "a\u{85}b".into()),
        ("10 kB ASCII", "x".repeat(10_240)),
        ("10 kB digits", "9".repeat(10_240)),
        ("10 kB non-ASCII", "Ä".repeat(5_120)),
        ("10 kB with NULs", "é\u{0}".repeat(3_500)),
        ("non-ASCII", "Ärzte".into()),
        ("emoji", "📱🔥".into()),
        ("RTL override", "\u{202e}enoN".into()),
        ("byte-order mark", "\u{feff}970000001".into()),
        ("SQL and LIKE syntax", "'; DROP TABLE x; -- %_\\".into()),
        ("blank", "   ".into()),
    ]
}

/// A string field of one RPC of ReportingService.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    ListCustomersQuery,
    ListCustomersOrderBy,
    ListCustomersPageToken,
    GetCustomerDetailKnoxId,
    ListCustomerDevicesKnoxId,
    ListCustomerDevicesPageToken,
    ExportCustomersCsvQuery,
    ExportCustomerCsvKnoxId,
}

const FIELDS: [Field; 8] = [
    Field::ListCustomersQuery,
    Field::ListCustomersOrderBy,
    Field::ListCustomersPageToken,
    Field::GetCustomerDetailKnoxId,
    Field::ListCustomerDevicesKnoxId,
    Field::ListCustomerDevicesPageToken,
    Field::ExportCustomersCsvQuery,
    Field::ExportCustomerCsvKnoxId,
];

impl Field {
    /// The field's name, as a field violation names it.
    fn name(self) -> &'static str {
        match self {
            Field::ListCustomersQuery | Field::ExportCustomersCsvQuery => "query",
            Field::ListCustomersOrderBy => "order_by",
            Field::ListCustomersPageToken | Field::ListCustomerDevicesPageToken => "page_token",
            Field::GetCustomerDetailKnoxId
            | Field::ListCustomerDevicesKnoxId
            | Field::ExportCustomerCsvKnoxId => "knox_id",
        }
    }

    /// What the field's rule answers for `value` sent as is.
    fn expected(self, value: &str) -> Expect {
        match self.name() {
            // A search box: any printable text of at most 200 characters is searched
            // (blank lists everything).
            "query" => {
                let query = value.trim();
                if query.chars().count() <= 200 && !query.chars().any(char::is_control) {
                    Expect::Ok
                } else {
                    Expect::Invalid
                }
            }
            // A Knox ID is 6 to 20 digits after trimming; one nobody has is not found.
            "knox_id" => {
                let id = value.trim();
                if (6..=20).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()) {
                    Expect::NotFound
                } else {
                    Expect::Invalid
                }
            }
            // No hostile value is an order or a token this list issued; blank is the
            // default order, or the first page.
            _ if value.is_empty() => Expect::Ok,
            "order_by" if value.trim().is_empty() => Expect::Ok,
            _ => Expect::Invalid,
        }
    }

    /// Calls the field's RPC with `value` in the field (the others valid), reading a
    /// download to its end.
    async fn call(self, caller: &Caller, value: String) -> Result<(), Status> {
        match self {
            Field::ListCustomersQuery
            | Field::ListCustomersOrderBy
            | Field::ListCustomersPageToken => {
                let mut request = pb::ListCustomersRequest {
                    page_size: 1,
                    ..Default::default()
                };
                match self {
                    Field::ListCustomersQuery => request.query = value,
                    Field::ListCustomersOrderBy => request.order_by = value,
                    _ => request.page_token = value,
                }
                caller.list_customers(request).await.map(drop)
            }
            Field::GetCustomerDetailKnoxId => caller.get_customer_detail(&value).await.map(drop),
            Field::ListCustomerDevicesKnoxId | Field::ListCustomerDevicesPageToken => {
                let mut request = pb::ListCustomerDevicesRequest {
                    knox_id: ARZTE.into(),
                    page_size: 1,
                    ..Default::default()
                };
                if self == Field::ListCustomerDevicesKnoxId {
                    request.knox_id = value;
                } else {
                    request.page_token = value;
                }
                caller.list_customer_devices(request).await.map(drop)
            }
            Field::ExportCustomersCsvQuery => caller
                .export_customers_csv(pb::ExportCustomersCsvRequest {
                    query: value,
                    byte_order_mark: true,
                })
                .await
                .map(drop),
            Field::ExportCustomerCsvKnoxId => {
                let request = pb::ExportCustomerCsvRequest {
                    knox_id: value,
                    byte_order_mark: false,
                };
                caller.export_customer_csv(request).await.map(drop)
            }
        }
    }
}

/// The answer a field's rule gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Ok,
    Invalid,
    NotFound,
    /// A decodable token: it continues the list from wherever it says, or is refused
    /// as not issued by this list; either is a clear answer.
    OkOrInvalid,
}

/// Tokens that decode and carry `value`: `real` (a token the list issued) with each of
/// its strings in turn replaced by `value`.
fn forged_tokens(real: &str, value: &str) -> Vec<String> {
    let json: serde_json::Value = paging::decode_token(real)
        .expect("a real token decodes")
        .expect("not empty");
    let forged = with_each_string_replaced(&json, value);
    assert!(forged.len() >= 2, "a token carries strings: {json}");
    forged
}

/// What is wrong with `outcome` for `field` fed `value` when `expected`; empty when
/// nothing.
fn judge(field: Field, value: &str, expected: Expect, outcome: &Result<(), Status>) -> Vec<String> {
    let mut wrong = Vec::new();
    let code = match outcome {
        Ok(()) => Code::Ok,
        Err(status) => status.code(),
    };
    let fits = match expected {
        Expect::Ok => code == Code::Ok,
        Expect::Invalid => code == Code::InvalidArgument,
        Expect::NotFound => code == Code::NotFound,
        Expect::OkOrInvalid => matches!(code, Code::Ok | Code::InvalidArgument),
    };
    if !fits || matches!(code, Code::Internal | Code::Unknown) {
        let message = outcome.as_ref().err().map(Status::message).unwrap_or("");
        wrong.push(format!(
            "expected {expected:?}, got {code:?}: {}",
            reseller_kit::text::echo(message)
        ));
    }
    let Err(status) = outcome else {
        return wrong;
    };
    let details = status.get_error_details();
    let violations = details
        .bad_request()
        .map(|b| b.field_violations.clone())
        .unwrap_or_default();
    if code == Code::InvalidArgument {
        let named: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        if named != [field.name()] {
            wrong.push(format!(
                "violations name {named:?}, not [{:?}]",
                field.name()
            ));
        }
    }
    let texts =
        std::iter::once(status.message()).chain(violations.iter().map(|v| v.description.as_str()));
    for text in texts {
        if text.chars().any(char::is_control) {
            wrong.push(format!("unescaped control character in {text:?}"));
        }
        if let Some(run) = longest_echo(value, text).filter(|&n| n > ECHO_MAX_CHARS) {
            wrong.push(format!(
                "quotes {run} characters of the value: {}",
                reseller_kit::text::echo(text)
            ));
        }
    }
    wrong
}

/// The most consecutive characters of `value` that `text` quotes (`None`: none, or
/// `value` is short enough to be quoted whole).
fn longest_echo(value: &str, text: &str) -> Option<usize> {
    let value: Vec<char> = value.chars().collect();
    if value.len() <= ECHO_MAX_CHARS {
        // Quoting a short value whole is allowed; no need to measure.
        return None;
    }
    let text: Vec<char> = text.chars().collect();
    // Longest common substring; the texts are short (a message), the values at most
    // 10 kB, so the quadratic table is small.
    let mut best = 0;
    let mut previous = vec![0usize; text.len() + 1];
    for v in &value {
        let mut current = vec![0usize; text.len() + 1];
        for (j, t) in text.iter().enumerate() {
            if v == t {
                current[j + 1] = previous[j] + 1;
                best = best.max(current[j + 1]);
            }
        }
        previous = current;
    }
    (best > 0).then_some(best)
}

/// The names the list shows for `query`, and those the CSV lists.
async fn search(caller: &Caller, query: &str) -> (Vec<String>, Vec<String>) {
    let listed = caller
        .list_customers(pb::ListCustomersRequest {
            query: query.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("search {query:?}: {s:?}"))
        .customers
        .into_iter()
        .map(|c| c.company_name)
        .collect();
    let bytes = caller
        .export_customers_csv(pb::ExportCustomersCsvRequest {
            query: query.into(),
            byte_order_mark: true,
        })
        .await
        .expect("export")
        .bytes;
    // The CSV's first cell is the name, then ` / ` and the reference when there is one.
    let exported = csv::Reader::from_reader(bytes.as_slice())
        .records()
        .map(|r| {
            let cell = r.expect("record")[0].to_owned();
            cell.split(" / ").next().unwrap_or_default().to_owned()
        })
        .collect();
    (listed, exported)
}

#[tokio::test]
async fn every_string_field_of_reporting_answers_hostile_strings_per_field() {
    let stack = TestStack::start().await;
    active_customer(&stack, "acme", ARZTE, "Ärzte Nord").await;
    register(&stack, EMILE, AccountKind::Customer, "émile & Søn").await;
    let acme = reseller(&stack, "acme");
    acme.add_customer(EMILE, "Référence 7")
        .await
        .expect("add customer");
    let upload = upload_stream(
        pb::UploadHeader {
            target_knox_id: ARZTE.into(),
            order_number: "Nº 1".into(),
            ..Default::default()
        },
        vec![
            pb::DeviceInput {
                device_id: imei(1),
                model: "Téléphone".into(),
                ..Default::default()
            },
            pb::DeviceInput {
                device_id: imei(2),
                ..Default::default()
            },
        ],
        10,
    );
    acme.upload_devices(futures::stream::iter(upload))
        .await
        .expect("upload");

    // Real tokens of both paged lists, to forge decodable ones from.
    let customers_token = eventually("the Customers page to page", || async {
        let request = pb::ListCustomersRequest {
            page_size: 1,
            ..Default::default()
        };
        let page = acme.list_customers(request).await.ok()?;
        (page.total_size == 2).then_some(page.next_page_token)
    })
    .await;
    let devices_token = eventually("the customer's devices to page", || async {
        let request = pb::ListCustomerDevicesRequest {
            knox_id: ARZTE.into(),
            page_size: 1,
            ..Default::default()
        };
        let page = acme.list_customer_devices(request).await.ok()?;
        (!page.next_page_token.is_empty()).then_some(page.next_page_token)
    })
    .await;

    let mut failures = Vec::new();
    let mut calls = 0;
    for field in FIELDS {
        let mut inputs: Vec<(String, String, Expect)> = hostile_values()
            .into_iter()
            .map(|(label, value)| {
                let expected = field.expected(&value);
                (label.to_owned(), value, expected)
            })
            .collect();
        if field.name() == "knox_id" {
            inputs.push(("nobody's Knox ID".into(), NOBODY.into(), Expect::NotFound));
            inputs.push(("padded".into(), format!(" {NOBODY}\t"), Expect::NotFound));
        }
        let real = match field {
            Field::ListCustomersPageToken => Some(&customers_token),
            Field::ListCustomerDevicesPageToken => Some(&devices_token),
            _ => None,
        };
        if let Some(real) = real {
            inputs.push(("the real token".into(), real.clone(), Expect::Ok));
            for (label, value) in hostile_values() {
                // A NUL can never be bound; anything else may just move where the page
                // starts (or not parse where a Knox ID or a UUID is expected).
                let expected = if value.contains('\u{0}') {
                    Expect::Invalid
                } else {
                    Expect::OkOrInvalid
                };
                for (n, token) in forged_tokens(real, &value).into_iter().enumerate() {
                    inputs.push((
                        format!("{label} as string #{n} of a token"),
                        token,
                        expected,
                    ));
                }
            }
        }
        for (label, value, expected) in inputs {
            calls += 1;
            let outcome = field.call(&acme, value.clone()).await;
            for wrong in judge(field, &value, expected, &outcome) {
                failures.push(format!("{field:?} <- {label}: {wrong}"));
            }
        }
    }
    assert!(calls > 150, "{calls} calls");
    assert!(
        failures.is_empty(),
        "{} failing case(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn search_finds_non_ascii_text_in_the_list_and_the_csv() {
    let stack = TestStack::start().await;
    for (knox, name) in [
        (ARZTE, "Ärzte Nord"),
        (EMILE, "émile & Søn"),
        (NOBODY, "Arzt"),
    ] {
        register(&stack, knox, AccountKind::Customer, name).await;
        let reference = if knox == EMILE {
            "Référence Ü-7"
        } else {
            ""
        };
        reseller(&stack, "acme")
            .add_customer(knox, reference)
            .await
            .expect("add customer");
    }
    let acme = reseller(&stack, "acme");
    eventually("three rows", || async {
        (search(&acme, "").await.0.len() == 3).then_some(())
    })
    .await;

    let long = "Ä".repeat(200);
    for (query, expected) in [
        ("Ärzte", &["Ärzte Nord"][..]),
        ("ärzte", &["Ärzte Nord"]),
        ("  ÄRZTE NORD ", &["Ärzte Nord"]),
        ("rzte", &["Ärzte Nord"]),
        ("émile", &["émile & Søn"]),
        ("ÉMILE", &["émile & Søn"]),
        ("søn", &["émile & Søn"]),
        ("référence ü", &["émile & Søn"]),
        ("arzt", &["Arzt"]),
        ("📱", &[]),
        (long.as_str(), &[]),
    ] {
        let (listed, exported) = search(&acme, query).await;
        assert_eq!(listed, expected, "list, query {query:?}");
        assert_eq!(exported, expected, "CSV, query {query:?}");
    }
}

/// Sends already-encoded request bytes and returns the answer's bytes, so a test can send
/// what no generated client would: a `string` field that is not UTF-8.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        prost::bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = prost::bytes::Buf::remaining(src);
        Ok(Some(prost::bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

/// Stray bytes: tonic decodes the request before any handler runs and answers a message
/// that does not decode (here a `string` field holding bytes that are not UTF-8) with
/// `INTERNAL`; `reseller_kit::grpc` rewrites that answer to `INVALID_ARGUMENT` for every
/// service, keeping tonic's message, which names the field.
#[tokio::test]
async fn a_string_field_that_is_not_utf8_is_invalid_argument() {
    let stack = TestStack::start().await;
    let token = stack.token(reseller_kit::auth::Role::Reseller, "acme");
    // Field 1 (`query` of ListCustomersRequest, `knox_id` of GetCustomerDetailRequest),
    // length-delimited, holding 0xC3 0x28: not UTF-8.
    let body = vec![0x0A, 0x02, 0xC3, 0x28];
    for method in ["ListCustomers", "GetCustomerDetail"] {
        let mut grpc = tonic::client::Grpc::new(stack.channel.clone());
        grpc.ready().await.expect("ready");
        let mut request = tonic::Request::new(body.clone());
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        let path = tonic::codegen::http::uri::PathAndQuery::try_from(format!(
            "/reseller.v1.ReportingService/{method}"
        ))
        .expect("path");
        let status = grpc
            .unary(request, path, RawCodec)
            .await
            .expect_err("not UTF-8 is refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{method}: {status:?}");
        assert!(
            status.message().contains("not UTF-8") || status.message().contains("invalid string"),
            "{method}: {status:?}"
        );
    }
}
