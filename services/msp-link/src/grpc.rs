//! The gRPC edge of msp-link-service.

use reseller_kit::auth::{Principal, Role};
use reseller_proto::v1::{self as pb, msp_service_server::MspService};
use tonic::{Request, Response, Status};

/// `reseller.v1.MspService`.
#[derive(Debug, Clone, Default)]
pub struct MspApi;

fn not_yet() -> Status {
    Status::unimplemented("MSP links and moves arrive with issue #4")
}

#[tonic::async_trait]
impl MspService for MspApi {
    async fn link_customer(&self, request: Request<pb::LinkCustomerRequest>) -> Result<Response<pb::ManagedCustomer>, Status> {
        Principal::of(&request)?.require(&[Role::Msp])?;
        Err(not_yet())
    }

    async fn set_jointly_managed(&self, request: Request<pb::SetJointlyManagedRequest>) -> Result<Response<pb::ManagedCustomer>, Status> {
        Principal::of(&request)?.require(&[Role::Msp])?;
        Err(not_yet())
    }

    async fn delink_customer(&self, request: Request<pb::DelinkCustomerRequest>) -> Result<Response<pb::ManagedCustomer>, Status> {
        Principal::of(&request)?.require(&[Role::Msp, Role::Customer])?;
        Err(not_yet())
    }

    async fn move_devices(&self, request: Request<pb::MoveDevicesRequest>) -> Result<Response<pb::MoveDevicesResponse>, Status> {
        Principal::of(&request)?.require(&[Role::Msp])?;
        Err(not_yet())
    }

    async fn list_managed_customers(
        &self,
        request: Request<pb::ListManagedCustomersRequest>,
    ) -> Result<Response<pb::ListManagedCustomersResponse>, Status> {
        Principal::of(&request)?.require(&[Role::Msp])?;
        Err(not_yet())
    }

    async fn list_msp_devices(&self, request: Request<pb::ListMspDevicesRequest>) -> Result<Response<pb::ListMspDevicesResponse>, Status> {
        Principal::of(&request)?.require(&[Role::Msp])?;
        Err(not_yet())
    }
}
