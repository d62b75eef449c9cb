//! `resellerctl customers`: a reseller's customers (CustomerService) and the Customers
//! page, detail and CSV downloads (ReportingService).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use reseller_proto::v1 as pb;
use tonic::Streaming;

use super::{paged, paged_rows};
use crate::cli::{CustomersCommand, ListCustomersArgs, OutputFormat, Paging};
use crate::client::Portal;
use crate::errors::CliError;
use crate::output::{Printer, note};
use crate::views::{CustomerDetailView, CustomerDeviceView, CustomerView};

/// Runs a `customers` command.
///
/// # Errors
/// The service's refusal, a lost connection or an unwritable output file.
pub async fn run(portal: &Portal, printer: Printer, cmd: CustomersCommand) -> Result<(), CliError> {
    let mut client = portal.customers();
    let customer = match cmd {
        CustomersCommand::Add { knox_id, reference } => {
            client
                .add_customer(pb::AddCustomerRequest {
                    knox_id,
                    internal_reference: reference,
                })
                .await
        }
        CustomersCommand::SetReference { knox_id, reference } => {
            client
                .update_internal_reference(pb::UpdateInternalReferenceRequest {
                    knox_id,
                    internal_reference: reference,
                })
                .await
        }
        CustomersCommand::Get { knox_id } => {
            client
                .get_customer(pb::GetCustomerRequest { knox_id })
                .await
        }
        CustomersCommand::List(args) => return list(portal, printer, args).await,
        CustomersCommand::Export {
            knox_id,
            search,
            output_file,
        } => return download(portal, printer, knox_id, search, output_file).await,
        CustomersCommand::Detail { knox_id } => return detail(portal, printer, knox_id).await,
        CustomersCommand::Devices { knox_id, paging } => {
            return devices(portal, printer, &knox_id, &paging).await;
        }
    }
    .map_err(|s| portal.fail(s))?
    .into_inner();
    printer.one(&CustomerView::from(customer))
}

/// `customers export`: one customer's devices file (`KNOX_ID`), or the Customers page's
/// (`--search`), to `output_file` or standard output.
async fn download(
    portal: &Portal,
    printer: Printer,
    knox_id: Option<String>,
    search: Option<String>,
    output_file: Option<PathBuf>,
) -> Result<(), CliError> {
    let stream = match knox_id {
        Some(knox_id) => portal
            .reporting()
            .export_customer_csv(pb::ExportCustomerCsvRequest {
                knox_id,
                byte_order_mark: printer.excel(),
            })
            .await
            .map_err(|s| portal.fail(s))?
            .into_inner(),
        None => portal
            .reporting()
            .export_customers_csv(pb::ExportCustomersCsvRequest {
                query: search.unwrap_or_default(),
                byte_order_mark: printer.excel(),
            })
            .await
            .map_err(|s| portal.fail(s))?
            .into_inner(),
    };
    write_download(portal, stream, output_file.as_deref()).await
}

/// `customers detail KNOX_ID`: the customer's row and its uploads (in CSV, the uploads).
async fn detail(portal: &Portal, printer: Printer, knox_id: String) -> Result<(), CliError> {
    let detail = portal
        .reporting()
        .get_customer_detail(pb::GetCustomerDetailRequest { knox_id })
        .await
        .map_err(|s| portal.fail(s))?
        .into_inner();
    let view = CustomerDetailView::from(detail);
    match printer.format() {
        OutputFormat::Json => printer.json(&view),
        OutputFormat::Csv => printer.all(view.uploads),
        OutputFormat::Table => {
            if let Some(summary) = &view.summary {
                printer.one(summary)?;
                println!();
            }
            printer.all(view.uploads)
        }
    }
}

/// The Customers page: one page, or every page with `--all`.
async fn list(portal: &Portal, printer: Printer, args: ListCustomersArgs) -> Result<(), CliError> {
    let total = Cell::new(None);
    let (search, order_by, total_ref) = (&args.search, &args.order_by, &total);
    let count = paged(portal, printer, &args.paging, |page| async move {
        let request = pb::ListCustomersRequest {
            query: search.clone(),
            order_by: order_by.clone(),
            ..page.into()
        };
        let answer = portal.reporting().list_customers(request).await?;
        total_ref.set(Some(answer.get_ref().total_size));
        Ok(answer)
    })
    .await?;
    if let (OutputFormat::Table, Some(total)) = (printer.format(), total.get()) {
        note(format!("{count} of {total} customers"));
    }
    Ok(())
}

/// `customers devices KNOX_ID`: the devices placed under a customer's row.
///
/// In CSV these are the rows of the customer's download (`customers export KNOX_ID`),
/// whose `Via MSP` column `ListCustomerDevices` does not carry: it comes from the
/// customer's detail (each upload's MSP), asked for when a page holds a virtual device
/// of an upload not known yet.
async fn devices(
    portal: &Portal,
    printer: Printer,
    knox_id: &str,
    paging: &Paging,
) -> Result<(), CliError> {
    let csv = printer.format() == OutputFormat::Csv;
    // Upload ID → the MSP it was uploaded through.
    let vias: RefCell<HashMap<String, String>> = RefCell::default();
    let vias = &vias;
    let row = |device| {
        let mut view = CustomerDeviceView::from(device);
        if view.is_virtual {
            let via = vias.borrow().get(&view.upload_id).cloned();
            view.via_msp_id = via.unwrap_or_default();
        }
        view
    };
    paged_rows(portal, printer, paging, row, |page| async move {
        let request = pb::ListCustomerDevicesRequest {
            knox_id: knox_id.to_owned(),
            ..page.into()
        };
        let answer = portal.reporting().list_customer_devices(request).await?;
        let unknown =
            |d: &pb::CustomerDevice| d.r#virtual && !vias.borrow().contains_key(&d.upload_id);
        if csv && answer.get_ref().devices.iter().any(unknown) {
            let request = pb::GetCustomerDetailRequest {
                knox_id: knox_id.to_owned(),
            };
            let detail = portal.reporting().get_customer_detail(request).await?;
            let uploads = detail.into_inner().uploads.into_iter();
            vias.borrow_mut()
                .extend(uploads.map(|u| (u.upload_id, u.via_msp_id)));
        }
        Ok(answer)
    })
    .await?;
    Ok(())
}

/// Writes a streamed CSV download to `file` (through a temporary file beside it, renamed
/// when complete, so a failed download leaves no partial file) or to standard output.
pub(crate) async fn write_download(
    portal: &Portal,
    mut stream: Streaming<pb::CsvChunk>,
    file: Option<&Path>,
) -> Result<(), CliError> {
    match file {
        None => {
            let mut bytes = 0usize;
            while let Some(chunk) = stream.message().await.map_err(|s| portal.fail(s))? {
                bytes += chunk.data.len();
                let mut out = std::io::stdout().lock();
                out.write_all(&chunk.data)?;
                out.flush()?;
            }
            if bytes == 0 {
                note("the download was empty");
            }
            Ok(())
        }
        Some(path) => {
            let partial = partial_path(path);
            let result = async {
                let mut out = std::io::BufWriter::new(
                    std::fs::File::create(&partial).map_err(|e| CliError::file(&partial, e))?,
                );
                let mut bytes = 0usize;
                while let Some(chunk) = stream.message().await.map_err(|s| portal.fail(s))? {
                    bytes += chunk.data.len();
                    out.write_all(&chunk.data)
                        .map_err(|e| CliError::file(&partial, e))?;
                }
                out.flush().map_err(|e| CliError::file(&partial, e))?;
                std::fs::rename(&partial, path).map_err(|e| CliError::file(path, e))?;
                Ok::<_, CliError>(bytes)
            }
            .await;
            match result {
                Ok(bytes) => {
                    note(format!("wrote {} ({bytes} bytes)", path.display()));
                    Ok(())
                }
                Err(err) => {
                    let _ = std::fs::remove_file(&partial);
                    Err(err)
                }
            }
        }
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}
