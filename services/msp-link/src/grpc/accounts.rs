//! Asks customer-service, over gRPC, what an account is (read-your-writes: a link right
//! after registration works). msp-link calls as the platform, with a short-lived
//! `admin` token it signs with the shared secret.

use std::time::Duration;

use reseller_kit::ApiError;
use reseller_kit::auth::{JwtAuth, Role, with_bearer};
use reseller_proto::v1::{self as pb, account_service_client::AccountServiceClient};
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::domain::AccountKind;

/// customer-service's accounts, as msp-link-service sees them.
#[derive(Debug, Clone)]
pub struct AccountDirectory {
    channel: Channel,
    auth: JwtAuth,
}

impl AccountDirectory {
    /// A directory at `url` (`CUSTOMER_SERVICE_URL`); connects on first use.
    ///
    /// # Errors
    /// When `url` is not a valid URI.
    pub fn new(url: &str, auth: JwtAuth) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect_lazy();
        Ok(Self { channel, auth })
    }

    /// The kind of account `knox_id`, or `None` when it is not registered.
    ///
    /// # Errors
    /// `UNAVAILABLE` when customer-service cannot be asked; `INTERNAL` when it answers a
    /// kind this version does not know (never read as a customer).
    pub async fn kind(&self, knox_id: &str) -> Result<Option<AccountKind>, ApiError> {
        let token = self
            .auth
            .mint(Role::Admin, "msp-link-service", Duration::from_secs(60))?;
        let request = with_bearer(
            Request::new(pb::GetAccountRequest {
                knox_id: knox_id.to_owned(),
            }),
            &token,
        )
        .map_err(|s| ApiError::Internal(anyhow::anyhow!("{s}")))?;
        match AccountServiceClient::new(self.channel.clone())
            .get_account(request)
            .await
        {
            Ok(account) => AccountKind::try_from(account.into_inner().kind)
                .map(Some)
                .map_err(|e| {
                    ApiError::Internal(anyhow::anyhow!(
                        "customer-service answered account {knox_id} with a kind that {e}"
                    ))
                }),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => {
                tracing::warn!(%status, "customer-service did not answer");
                Err(ApiError::Unavailable(format!(
                    "customer-service is unavailable ({}); retry later",
                    status.message()
                )))
            }
        }
    }
}
