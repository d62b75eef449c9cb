//! Paged lists: every `List…` RPC answers a page of rows and the token of the next, and
//! every list command prints one page, or with `--all` every page from `--page-token`
//! on. [`paged`] is that loop once, for any list answer ([`ListAnswer`]).

use std::future::Future;

use reseller_proto::v1 as pb;

use crate::cli::Paging;
use crate::client::Portal;
use crate::errors::CliError;
use crate::output::{ListWriter, Printer, Record, note};
use crate::views::{
    CustomerDeviceView, CustomerRowView, DeletionView, ManagedCustomerView, PortalDeviceView,
    RejectionView, UploadView,
};

/// Where a page of a list starts: a list request's `page_size` and `page_token`.
#[derive(Debug)]
pub(crate) struct PageAt {
    pub size: i32,
    pub token: String,
}

/// A list answer of the API: its rows, how each prints, and the next page's token.
pub(crate) trait ListAnswer {
    /// One row of the list.
    type Row;
    /// A row as resellerctl prints it.
    type View: Record + From<Self::Row>;
    /// The rows, and the token of the next page ("" on the last).
    fn into_page(self) -> (Vec<Self::Row>, String);
}

/// [`ListAnswer`] for answers whose rows are the repeated field named.
macro_rules! list_answers {
    ($($answer:ident { $rows:ident: $row:ident } => $view:ident),* $(,)?) => {$(
        impl ListAnswer for pb::$answer {
            type Row = pb::$row;
            type View = $view;
            fn into_page(self) -> (Vec<pb::$row>, String) {
                (self.$rows, self.next_page_token)
            }
        }
    )*};
}

list_answers! {
    ListCustomersResponse { customers: CustomerRow } => CustomerRowView,
    ListCustomerDevicesResponse { devices: CustomerDevice } => CustomerDeviceView,
    ListManagedCustomersResponse { customers: ManagedCustomer } => ManagedCustomerView,
    ListMspDevicesResponse { devices: PortalDevice } => PortalDeviceView,
    ListMyDevicesResponse { devices: PortalDevice } => PortalDeviceView,
    ListUploadsResponse { uploads: Upload } => UploadView,
    ListUploadRejectionsResponse { rejections: DeviceRejection } => RejectionView,
    ListDeletionsResponse { deletions: Deletion } => DeletionView,
}

/// `From<PageAt>` for every list request: the page, and the other fields empty, for a
/// call site to fill with struct update syntax (`Request { knox_id, ..page.into() }`).
macro_rules! page_requests {
    ($($request:ident),* $(,)?) => {$(
        impl From<PageAt> for pb::$request {
            // Some requests have no other fields.
            #[allow(clippy::needless_update)]
            fn from(page: PageAt) -> Self {
                Self {
                    page_size: page.size,
                    page_token: page.token,
                    ..Default::default()
                }
            }
        }
    )*};
}

page_requests!(
    ListCustomersRequest,
    ListCustomerDevicesRequest,
    ListManagedCustomersRequest,
    ListMspDevicesRequest,
    ListMyDevicesRequest,
    ListUploadsRequest,
    ListUploadRejectionsRequest,
    ListDeletionsRequest,
);

/// Prints a paged list, each row as its answer's [`ListAnswer::View`]; `fetch` asks for
/// the page [`PageAt`] names. Returns how many rows were printed.
///
/// # Errors
/// The first failed page, or a failed write.
pub(crate) async fn paged<A, F, Fut>(
    portal: &Portal,
    printer: Printer,
    paging: &Paging,
    fetch: F,
) -> Result<usize, CliError>
where
    A: ListAnswer,
    F: FnMut(PageAt) -> Fut,
    Fut: Future<Output = Result<tonic::Response<A>, tonic::Status>>,
{
    paged_rows(portal, printer, paging, A::View::from, fetch).await
}

/// [`paged`], each row printed as `row` makes it: one page, or with `--all` every page
/// from `--page-token` on. Paging hints go to standard error.
///
/// # Errors
/// The first failed page, or a failed write.
pub(crate) async fn paged_rows<A, T, F, Fut>(
    portal: &Portal,
    printer: Printer,
    paging: &Paging,
    mut row: impl FnMut(A::Row) -> T,
    mut fetch: F,
) -> Result<usize, CliError>
where
    A: ListAnswer,
    T: Record,
    F: FnMut(PageAt) -> Fut,
    Fut: Future<Output = Result<tonic::Response<A>, tonic::Status>>,
{
    let mut list: ListWriter<T> = printer.list();
    let mut token = paging.page_token.clone();
    loop {
        let (rows, next_page_token) = fetch(PageAt {
            size: paging.page_size,
            token,
        })
        .await
        .map_err(|s| portal.fail(s))?
        .into_inner()
        .into_page();
        list.push(rows.into_iter().map(&mut row).collect())?;
        token = next_page_token;
        if token.is_empty() || !paging.all {
            break;
        }
    }
    let count = list.finish()?;
    if !token.is_empty() {
        note(format!(
            "more rows follow: repeat with --page-token {token} (or --all)"
        ));
    }
    Ok(count)
}
