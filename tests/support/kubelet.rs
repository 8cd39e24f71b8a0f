//! The kubelet's side of the DRA plugin's sockets: a gRPC channel over a
//! unix socket and one unary call on it, as the kubelet makes them.

use std::path::PathBuf;

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

/// A gRPC channel over the unix socket at `path`.
pub async fn dial(path: PathBuf) -> Channel {
    Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .unwrap()
}

/// One unary call of method `path` (`/package.Service/Method`).
pub async fn call<Req, Resp>(channel: &Channel, path: &str, req: Req) -> Result<Resp, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let path = PathAndQuery::try_from(path.to_string()).unwrap();
    grpc.unary(tonic::Request::new(req), path, codec)
        .await
        .map(tonic::Response::into_inner)
}
