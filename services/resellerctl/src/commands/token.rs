//! `resellerctl token`: development tokens signed with the portal's secret.

use reseller_kit::auth::{JwtAuth, parse_name};

use crate::cli::{OutputFormat, TokenArgs};
use crate::errors::CliError;
use crate::output::Printer;
use crate::views::TokenView;

/// Prints a token; in table format only the token, so `$(resellerctl token …)` works.
///
/// # Errors
/// A usage error for an empty secret or subject, or a `--name` the services would refuse.
pub fn run(args: TokenArgs, printer: Printer) -> Result<(), CliError> {
    let secret = args.secret.as_deref().unwrap_or_default();
    if secret.is_empty() {
        return Err(CliError::Usage(
            "AUTH_JWT_SECRET is not set: set it (or pass --secret) to the secret the portal trusts"
                .into(),
        ));
    }
    let sub = args.sub.trim();
    if sub.is_empty() {
        return Err(CliError::Usage("--sub must name the principal".into()));
    }
    // Checked here by the services' own rule, so that no token is minted only to be
    // refused on every call.
    let name = args
        .name
        .as_deref()
        .map(parse_name)
        .transpose()
        .map_err(|problem| CliError::Usage(format!("--name {problem}")))?;
    let token = JwtAuth::new(secret)
        .mint_named(args.role, sub, name.as_deref(), args.ttl)
        .map_err(|e| CliError::Other(format!("cannot sign the token: {e}")))?;
    match printer.format() {
        OutputFormat::Json => printer.json(&TokenView {
            token,
            role: args.role.as_str(),
            sub: sub.to_owned(),
            name,
            expires_in_seconds: args.ttl.as_secs(),
        }),
        _ => {
            println!("{token}");
            Ok(())
        }
    }
}
