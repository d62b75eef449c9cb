//! Server reflection as a tool such as `grpcurl` uses it: both protocol versions.

use tonic::transport::Channel;

/// The gRPC services every stack serves besides reflection itself.
pub const SERVICES: [&str; 6] = [
    "reseller.v1.AccountService",
    "reseller.v1.CustomerService",
    "reseller.v1.DeviceService",
    "reseller.v1.MspService",
    "reseller.v1.ReportingService",
    "grpc.health.v1.Health",
];

/// `ListServices` over one version of the reflection protocol: the generated types of
/// `v1` and `v1alpha` have the same shape in two modules, so one body serves both.
macro_rules! list_services {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = ServerReflectionClient::new($channel)
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .expect(concat!(stringify!($version), " reflection"))
            .into_inner();
        match answers
            .message()
            .await
            .unwrap()
            .expect("an answer")
            .message_response
        {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
            }
            other => panic!("not a service list: {other:?}"),
        }
    }};
}

/// The services `grpc.reflection.v1` lists on `channel`.
///
/// # Panics
/// When the call fails or answers anything but a service list.
pub async fn services_v1(channel: Channel) -> Vec<String> {
    list_services!(v1, channel)
}

/// The services `grpc.reflection.v1alpha` lists on `channel`.
///
/// # Panics
/// When the call fails or answers anything but a service list.
pub async fn services_v1alpha(channel: Channel) -> Vec<String> {
    list_services!(v1alpha, channel)
}

/// Asserts that `listed` (what a reflection call answered) names each of `expected`.
///
/// # Panics
/// Naming the first service missing, beside the list.
pub fn assert_lists<'a>(listed: &[String], expected: impl IntoIterator<Item = &'a str>) {
    for name in expected {
        assert!(
            listed.iter().any(|n| n == name),
            "{name} missing from {listed:?}"
        );
    }
}
