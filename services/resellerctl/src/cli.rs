//! The command line: every flag, subcommand and argument, as clap types.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use encoding_rs::Encoding;
use reseller_kit::auth::Role;

use crate::device_file::encoding_for_label;
use crate::errors::EXIT_CODES_HELP;

/// The default address of the reseller portal (`deploy/local/up.sh` serves here).
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:50051";

#[derive(Debug, Parser)]
#[command(
    name = "resellerctl",
    version,
    about = "Command-line client of the reseller portal: accounts, customers, approvals, \
             device uploads and deletions, MSP links and the portals",
    after_help = EXIT_CODES_HELP,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Settings every command shares.
#[derive(Debug, Args)]
pub struct Global {
    /// The portal's gRPC address: a URL, or host:port (http is assumed).
    #[arg(long, env = "RESELLER_ADDR", default_value = DEFAULT_ADDR, global = true)]
    pub addr: String,
    /// The bearer token (mint a development one with `resellerctl token`).
    #[arg(long, env = "RESELLER_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// How results are printed.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table, global = true)]
    pub output: OutputFormat,
    /// CSV for Excel: start every CSV written (customers export, -o csv, rejects files)
    /// with a UTF-8 byte-order mark, so Excel shows accented names right.
    #[arg(long, global = true)]
    pub excel: bool,
    /// Print each call's trace ID to standard error: every call starts a trace
    /// (`traceparent`), under which a portal exporting traces records it and what it
    /// caused, and its access-log line names it.
    #[arg(long, short = 'v', global = true)]
    pub verbose: bool,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// JSON for programs (lists are arrays).
    Json,
    /// CSV with a header row.
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mint a development bearer token signed with AUTH_JWT_SECRET.
    Token(TokenArgs),
    /// Enrollment-platform accounts (role admin).
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// The reseller's customers, the Customers page and its CSV (role reseller).
    #[command(subcommand)]
    Customers(CustomersCommand),
    /// An account approves or revokes a reseller (role customer or msp).
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Upload and delete devices (role reseller).
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Past uploads and their rejections (role reseller).
    #[command(subcommand)]
    Uploads(UploadsCommand),
    /// Past deletions (role reseller).
    #[command(subcommand)]
    Deletions(DeletionsCommand),
    /// MSP links, modes, device moves and the MSP portal (role msp; delink also customer).
    #[command(subcommand)]
    Msp(MspCommand),
    /// The customer portal (role customer).
    #[command(subcommand)]
    Portal(PortalCommand),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The role the token grants.
    #[arg(long, value_enum)]
    pub role: Role,
    /// The principal: a reseller ID, or the Knox ID of an MSP or customer.
    #[arg(long)]
    pub sub: String,
    /// The person acting for the principal (the token's `name` claim, 1 to 100
    /// characters): a reseller's commands record it as their actor.
    #[arg(long)]
    pub name: Option<String>,
    /// How long the token is valid: seconds, or a number with s, m, h or d.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// The signing secret the portal trusts.
    #[arg(long, env = "AUTH_JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Register an account (platform admin).
    Register {
        /// Its Knox ID (6 to 20 digits).
        knox_id: String,
        /// Customer or MSP.
        #[arg(long, value_enum, default_value_t = AccountKindArg::Customer)]
        kind: AccountKindArg,
        /// The company name.
        #[arg(long)]
        name: String,
        /// ISO 3166-1 alpha-2 country code.
        #[arg(long)]
        country: String,
    },
    /// Show an account.
    Get {
        /// Its Knox ID.
        knox_id: String,
    },
}

/// The kind of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccountKindArg {
    Customer,
    Msp,
}

#[derive(Debug, Subcommand)]
pub enum CustomersCommand {
    /// Add a registered account to your customers.
    Add {
        /// The account's Knox ID.
        knox_id: String,
        /// Your internal customer reference (searchable).
        #[arg(long, default_value = "")]
        reference: String,
    },
    /// Replace your internal reference of a customer ("" clears it).
    SetReference {
        /// The customer's Knox ID.
        knox_id: String,
        /// The new reference.
        reference: String,
    },
    /// Show one of your customers.
    Get {
        /// The customer's Knox ID.
        knox_id: String,
    },
    /// The Customers page: company, ID, country, last upload, uploads, devices, status.
    List(ListCustomersArgs),
    /// Download the Customers page as CSV, or one customer's devices with KNOX_ID
    /// (add --excel for a file Excel opens with accents intact).
    Export {
        /// Export this customer's devices instead of the customer list.
        knox_id: Option<String>,
        /// Only customers matching this text (company name, reference or Knox ID).
        #[arg(long, conflicts_with = "knox_id")]
        search: Option<String>,
        /// Write to this file instead of standard output.
        #[arg(long)]
        output_file: Option<PathBuf>,
    },
    /// One customer's row and the uploads placed under it.
    Detail {
        /// The customer's Knox ID.
        knox_id: String,
    },
    /// The devices placed under one customer.
    ///
    /// With `-o csv`, the rows of the customer's download (`customers export KNOX_ID`),
    /// in its columns and format.
    Devices {
        /// The customer's Knox ID.
        knox_id: String,
        #[command(flatten)]
        paging: Paging,
    },
}

#[derive(Debug, Args)]
pub struct ListCustomersArgs {
    /// Case-insensitive text to find in company name, internal reference or Knox ID.
    #[arg(long, short = 's', default_value = "")]
    pub search: String,
    /// company_name (default), "last_uploaded desc" or "devices desc"
    /// (also: name, last-uploaded, devices).
    #[arg(long, default_value = "", value_parser = parse_order_by)]
    pub order_by: String,
    #[command(flatten)]
    pub paging: Paging,
}

/// Paging flags of every list.
#[derive(Debug, Args, Clone)]
pub struct Paging {
    /// Rows per page (the service's default is 50, its maximum 1000).
    #[arg(long, default_value_t = 0)]
    pub page_size: i32,
    /// Start at this page (the token a previous page printed).
    #[arg(long, default_value = "")]
    pub page_token: String,
    /// Follow every page to the end.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Approve a reseller to upload devices to your account.
    Approve {
        /// The reseller's ID.
        reseller_id: String,
    },
    /// Revoke your approval of a reseller.
    Revoke {
        /// The reseller's ID.
        reseller_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Upload the devices of a file to a customer or MSP, streamed in batches.
    #[command(after_help = EXIT_CODES_HELP, long_about = UPLOAD_ABOUT)]
    Upload(UploadArgs),
    /// Delete devices you uploaded, by ID or from a file.
    Delete(DeleteArgs),
    /// Show a deletion and each portal's progress.
    Deletion {
        /// The deletion's ID.
        deletion_id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// `devices upload --help`: the file formats accepted (DOMAIN.md "Upload files").
const UPLOAD_ABOUT: &str = "\
Upload the devices of a file to a customer or MSP, streamed in batches.

The file is CSV as spreadsheets write it: separated by , ; or tab (told from the first
line, or from an Excel sep=X first line), CRLF, LF or CR line ends, quoted fields; UTF-8
(with or without a byte-order mark) or UTF-16 with a byte-order mark. Other encodings are
refused with the line and byte at fault unless named with --encoding.

A header names the columns, ignoring case, spaces and _ . # -: the device ID (device_id,
device id, imei, imei1, imei 1, meid, serial, serial number, serialnumber, sn or id),
secondary IDs (imei2, imei 2, and a serial column beside an IMEI or device ID column),
model, and kind or Device Type. A first line is a header when a cell is one of these names
or no cell holds a digit. Without a header the file has one identifier per line. The
product's own CSV exports read back as they are.

Rows are numbered from 0, the header not counted, skipping rows whose cells are all empty:
that is the index in the rejects file. A file with no devices is refused.";

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// CSV with a header (a device ID column such as imei, device_id or serial; optional
    /// imei2, model and kind columns), or one identifier per line.
    pub file: PathBuf,
    /// The Knox ID of the receiving customer or MSP (required unless --dry-run).
    #[arg(long, required_unless_present = "dry_run")]
    pub target: Option<String>,
    /// Your order number.
    #[arg(long, default_value = "")]
    pub order_number: String,
    /// A retry key: repeating an upload with the same ID returns the first result.
    #[arg(long, default_value = "")]
    pub client_upload_id: String,
    /// Devices per streamed message.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// Where to write the rejected rows (default: <FILE>.rejects.csv).
    #[arg(long)]
    pub rejects: Option<PathBuf>,
    /// Check the file locally with the service's identifier rules; upload nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Send the file to the portal to check every rule, "already registered"
    /// included, and answer as the upload would; nothing is registered or recorded.
    #[arg(long, conflicts_with = "dry_run")]
    pub validate_only: bool,
    /// Read the first line as data even if it looks like a header.
    #[arg(long)]
    pub no_header: bool,
    /// The file's encoding when it is neither UTF-8 nor UTF-16 with a byte-order mark:
    /// windows-1252 (Western European Excel "CSV"), iso-8859-2, shift_jis, utf-16le, …
    #[arg(long, value_name = "LABEL", value_parser = encoding_for_label)]
    pub encoding: Option<&'static Encoding>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Device IDs to delete.
    pub device_ids: Vec<String>,
    /// Also delete the devices listed in this file (same format as an upload file).
    #[arg(long)]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// Following a deletion to its end.
#[derive(Debug, Args, Clone)]
pub struct WaitArgs {
    /// Follow the deletion until every portal has removed the devices.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits: seconds, or a number with s, m, h or d.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum UploadsCommand {
    /// Show an upload: its counts and its first rejections.
    Get {
        /// The upload's ID.
        upload_id: String,
        /// Write all its rejections to this CSV file.
        #[arg(long)]
        rejects: Option<PathBuf>,
    },
    /// Every rejection of an upload, by index (`--all -o csv` is a complete rejects
    /// file).
    Rejections {
        /// The upload's ID.
        upload_id: String,
        #[command(flatten)]
        paging: Paging,
    },
    /// Your uploads, newest first (counts; `uploads get ID` for one's rejections).
    List {
        /// Only uploads to this customer or MSP (Knox ID).
        #[arg(long)]
        target: Option<String>,
        /// Only uploads with exactly this order number.
        #[arg(long)]
        order_number: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeletionsCommand {
    /// Your deletions, newest first, with their counts and each portal's state
    /// (`devices deletion ID` for one's device lists).
    List {
        #[command(flatten)]
        paging: Paging,
    },
}

#[derive(Debug, Subcommand)]
pub enum MspCommand {
    /// Link a customer account to your MSP.
    Link {
        /// The customer's Knox ID.
        customer_knox_id: String,
        /// How you manage it.
        #[arg(long, value_enum, default_value_t = ModeArg::Fully)]
        mode: ModeArg,
    },
    /// Switch a fully managed customer to jointly managed (there is no way back).
    Jointly {
        /// The customer's Knox ID.
        customer_knox_id: String,
    },
    /// End a jointly managed link (as the MSP, or as the customer).
    Delink {
        /// The customer's Knox ID.
        customer_knox_id: String,
        /// The MSP's Knox ID (optional: a customer has at most one MSP).
        #[arg(long, default_value = "")]
        msp: String,
    },
    /// Move devices from your pool or a customer to a customer you link.
    Move {
        /// Device IDs to move.
        device_ids: Vec<String>,
        /// The receiving customer's Knox ID.
        #[arg(long)]
        to: String,
        /// Also move the devices listed in this file.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// The customers your MSP links.
    Customers {
        #[command(flatten)]
        paging: Paging,
    },
    /// The MSP portal: your devices, or one linked customer's.
    Devices {
        /// Only this customer's devices.
        #[arg(long)]
        customer: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
}

/// How an MSP manages a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Fully managed.
    Fully,
    /// Jointly managed.
    Jointly,
}

#[derive(Debug, Subcommand)]
pub enum PortalCommand {
    /// The customer portal: the devices of your account.
    Devices {
        #[command(flatten)]
        paging: Paging,
    },
}

/// Reads `3600`, `90s`, `15m`, `24h` or `7d`.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let input = input.trim();
    let split = input
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(input.len());
    let (digits, unit) = input.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{input:?} is not a duration like 3600, 90s, 15m, 24h or 7d"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{input:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(factor)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{input:?} is too long"))
}

/// Maps the friendly spellings of `--order-by` to the contract's; anything else goes to
/// the service as given, which names the accepted values when it refuses.
pub fn parse_order_by(input: &str) -> Result<String, String> {
    let normal = input
        .trim()
        .to_ascii_lowercase()
        .replace('-', "_")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    Ok(match normal.as_str() {
        "name" | "company" | "company_name" => "company_name".into(),
        "last_uploaded" | "last_uploaded desc" => "last_uploaded desc".into(),
        "devices" | "devices desc" => "devices desc".into(),
        _ => input.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn order_by_takes_friendly_names() {
        assert_eq!(parse_order_by("devices").unwrap(), "devices desc");
        assert_eq!(
            parse_order_by("last-uploaded").unwrap(),
            "last_uploaded desc"
        );
        assert_eq!(parse_order_by("").unwrap(), "");
        assert_eq!(parse_order_by("size").unwrap(), "size");
    }
}
