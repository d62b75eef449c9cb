//! Asks customer-service, over gRPC, whether an upload's target is one of the reseller's
//! active customers (read-your-writes: an upload right after approval works).

use reseller_kit::ApiError;
use reseller_kit::ids::KnoxId;
use reseller_proto::v1::{self as pb, customer_service_client::CustomerServiceClient};
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::domain::Target;

/// customer-service as device-service sees it.
#[derive(Debug, Clone)]
pub struct CustomerDirectory {
    channel: Channel,
}

impl CustomerDirectory {
    /// A directory at `url` (`CUSTOMER_SERVICE_URL`); connects on first use.
    ///
    /// # Errors
    /// When `url` is not a valid URI.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(url.to_owned())?
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(10))
            .connect_lazy();
        Ok(Self { channel })
    }

    /// The target if the caller (whose `authorization` is forwarded, so customer-service
    /// applies its own tenancy) added it and it is `ACTIVE`.
    ///
    /// # Errors
    /// `NOT_FOUND` when the reseller has not added it; `FAILED_PRECONDITION` when it is
    /// not active; `UNAVAILABLE` when customer-service cannot be asked.
    pub async fn active_target(
        &self,
        authorization: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
        knox_id: &KnoxId,
    ) -> Result<Target, ApiError> {
        let mut request = Request::new(pb::GetCustomerRequest {
            knox_id: knox_id.to_string(),
        });
        request
            .metadata_mut()
            .insert("authorization", authorization.clone());
        let customer = match CustomerServiceClient::new(self.channel.clone())
            .get_customer(request)
            .await
        {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == Code::NotFound => {
                return Err(ApiError::NotFound(format!(
                    "customer {knox_id} not found: add it as a customer before uploading devices to it"
                )));
            }
            Err(status) => {
                tracing::warn!(%status, "customer-service did not answer");
                return Err(ApiError::Unavailable(format!(
                    "customer-service is unavailable ({}); retry later",
                    status.message()
                )));
            }
        };
        match pb::CustomerStatus::try_from(customer.status) {
            Ok(pb::CustomerStatus::Active) => Ok(Target {
                knox_id: knox_id.clone(),
                kind: customer.kind,
            }),
            Ok(pb::CustomerStatus::PendingVerification) => {
                Err(ApiError::FailedPrecondition(format!(
                    "customer {knox_id} has not approved this reseller yet (pending customer verification); devices can be uploaded only to active customers"
                )))
            }
            _ => Err(ApiError::FailedPrecondition(format!(
                "customer {knox_id} revoked its approval of this reseller (inactive); devices can be uploaded only to active customers"
            ))),
        }
    }
}
