//! customer-service's accounts, asked over gRPC: the account directory
//! ([`AccountDirectory`]) that decides an upload's target (`domain::accounts`).

use std::time::Duration;

use reseller_kit::ids::KnoxId;
use reseller_proto::v1::{self as pb, customer_service_client::CustomerServiceClient};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::domain::accounts::{AccountDirectory, Customer, CustomerStatus, DirectoryUnavailable};

/// A client of customer-service (`CUSTOMER_SERVICE_URL`).
#[derive(Debug, Clone)]
pub struct AccountsClient {
    channel: Channel,
}

impl AccountsClient {
    /// A client of `url`; connects on first use.
    ///
    /// # Errors
    /// When `url` is not a valid URI.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect_lazy();
        Ok(Self { channel })
    }

    /// The directory as the caller whose `authorization` this is sees it: the header is
    /// forwarded, so customer-service applies its own tenancy.
    pub fn as_caller<'a>(&'a self, authorization: &'a MetadataValue<Ascii>) -> CallerAccounts<'a> {
        CallerAccounts {
            client: self,
            authorization,
        }
    }
}

/// [`AccountsClient`] on behalf of one caller.
#[derive(Debug, Clone, Copy)]
pub struct CallerAccounts<'a> {
    client: &'a AccountsClient,
    authorization: &'a MetadataValue<Ascii>,
}

impl AccountDirectory for CallerAccounts<'_> {
    async fn customer(&self, knox_id: &KnoxId) -> Result<Option<Customer>, DirectoryUnavailable> {
        let mut request = Request::new(pb::GetCustomerRequest {
            knox_id: knox_id.to_string(),
        });
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        match CustomerServiceClient::new(self.client.channel.clone())
            .get_customer(request)
            .await
        {
            Ok(response) => {
                let customer = response.into_inner();
                Ok(Some(Customer {
                    kind: customer.kind,
                    status: status_from_proto(customer.status),
                }))
            }
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => {
                tracing::warn!(%status, "customer-service did not answer");
                Err(DirectoryUnavailable(status.message().to_owned()))
            }
        }
    }
}

/// A customer's status as customer-service sends it. Anything neither active nor pending
/// (an unspecified or unknown value included) is taken as revoked: only an explicit
/// `ACTIVE` lets devices through.
fn status_from_proto(value: i32) -> CustomerStatus {
    match pb::CustomerStatus::try_from(value) {
        Ok(pb::CustomerStatus::Active) => CustomerStatus::Active,
        Ok(pb::CustomerStatus::PendingVerification) => CustomerStatus::PendingVerification,
        _ => CustomerStatus::Inactive,
    }
}
