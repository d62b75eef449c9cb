//! `resellerctl customers`: a reseller's customers (CustomerService) and the Customers
//! page, detail and CSV downloads (ReportingService).

use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};

use reseller_proto::v1 as pb;
use tonic::Streaming;

use super::{Page, paged};
use crate::cli::{CustomersCommand, ListCustomersArgs, OutputFormat};
use crate::client::Portal;
use crate::errors::CliError;
use crate::output::{Printer, note};
use crate::views::{CustomerDetailView, CustomerDeviceView, CustomerRowView, CustomerView};

/// Runs a `customers` command.
///
/// # Errors
/// The service's refusal, a lost connection or an unwritable output file.
pub async fn run(portal: &Portal, printer: Printer, cmd: CustomersCommand) -> Result<(), CliError> {
    match cmd {
        CustomersCommand::Add { knox_id, reference } => {
            let customer = portal
                .customers()
                .add_customer(pb::AddCustomerRequest {
                    knox_id,
                    internal_reference: reference,
                })
                .await
                .map_err(|s| portal.fail(s))?
                .into_inner();
            printer.one(&CustomerView::from(customer))
        }
        CustomersCommand::SetReference { knox_id, reference } => {
            let customer = portal
                .customers()
                .update_internal_reference(pb::UpdateInternalReferenceRequest {
                    knox_id,
                    internal_reference: reference,
                })
                .await
                .map_err(|s| portal.fail(s))?
                .into_inner();
            printer.one(&CustomerView::from(customer))
        }
        CustomersCommand::Get { knox_id } => {
            let customer = portal
                .customers()
                .get_customer(pb::GetCustomerRequest { knox_id })
                .await
                .map_err(|s| portal.fail(s))?
                .into_inner();
            printer.one(&CustomerView::from(customer))
        }
        CustomersCommand::List(args) => list(portal, printer, args).await,
        CustomersCommand::Export {
            knox_id,
            search,
            output_file,
        } => {
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
            export(portal, stream, output_file.as_deref()).await
        }
        CustomersCommand::Detail { knox_id } => {
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
        CustomersCommand::Devices { knox_id, paging } => {
            let page_size = paging.page_size;
            let knox_id = &knox_id;
            paged(printer, &paging, |page_token| async move {
                let page = portal
                    .reporting()
                    .list_customer_devices(pb::ListCustomerDevicesRequest {
                        knox_id: knox_id.clone(),
                        page_size,
                        page_token,
                    })
                    .await
                    .map_err(|s| portal.fail(s))?
                    .into_inner();
                Ok(Page {
                    rows: page
                        .devices
                        .into_iter()
                        .map(CustomerDeviceView::from)
                        .collect(),
                    next_page_token: page.next_page_token,
                })
            })
            .await?;
            Ok(())
        }
    }
}

/// The Customers page: one page, or every page with `--all`.
async fn list(portal: &Portal, printer: Printer, args: ListCustomersArgs) -> Result<(), CliError> {
    let total = Cell::new(None);
    let (search, order_by, total_ref) = (&args.search, &args.order_by, &total);
    let page_size = args.paging.page_size;
    let count = paged(printer, &args.paging, |page_token| async move {
        let page = portal
            .reporting()
            .list_customers(pb::ListCustomersRequest {
                query: search.clone(),
                page_size,
                page_token,
                order_by: order_by.clone(),
            })
            .await
            .map_err(|s| portal.fail(s))?
            .into_inner();
        total_ref.set(Some(page.total_size));
        Ok(Page {
            rows: page
                .customers
                .into_iter()
                .map(CustomerRowView::from)
                .collect(),
            next_page_token: page.next_page_token,
        })
    })
    .await?;
    if let (OutputFormat::Table, Some(total)) = (printer.format(), total.get()) {
        note(format!("{count} of {total} customers"));
    }
    Ok(())
}

/// Writes a streamed CSV download to `file` (through a temporary file beside it, renamed
/// when complete, so a failed download leaves no partial file) or to standard output.
async fn export(
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
