//! The gRPC edge of device-service.

use reseller_kit::auth::Principal;
use reseller_proto::v1::{self as pb, device_service_server::DeviceService};
use tonic::{Request, Response, Status, Streaming};

/// `reseller.v1.DeviceService`.
#[derive(Debug, Clone, Default)]
pub struct DeviceApi;

fn not_yet() -> Status {
    Status::unimplemented("device uploads and deletions arrive with issue #3")
}

#[tonic::async_trait]
impl DeviceService for DeviceApi {
    async fn upload_devices(&self, request: Request<Streaming<pb::UploadDevicesRequest>>) -> Result<Response<pb::Upload>, Status> {
        Principal::of(&request)?.reseller()?;
        Err(not_yet())
    }

    async fn get_upload(&self, request: Request<pb::GetUploadRequest>) -> Result<Response<pb::Upload>, Status> {
        Principal::of(&request)?.reseller()?;
        Err(not_yet())
    }

    async fn delete_devices(&self, request: Request<pb::DeleteDevicesRequest>) -> Result<Response<pb::Deletion>, Status> {
        Principal::of(&request)?.reseller()?;
        Err(not_yet())
    }

    async fn get_deletion(&self, request: Request<pb::GetDeletionRequest>) -> Result<Response<pb::Deletion>, Status> {
        Principal::of(&request)?.reseller()?;
        Err(not_yet())
    }
}
