//! The kubelet's side of the DRA plugin's sockets: a gRPC channel over a
//! unix socket and one unary call on it, as the kubelet makes them; and
//! the kubelet stand-in on grpcio, a gRPC stack that is not the plugin's.

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

/// Runs the kubelet stand-in on grpcio (tests/kubelet/kubelet.py) with
/// `args`; its exit code and the JSON it printed.
pub fn kubelet_py(args: &[&str]) -> (i32, serde_json::Value) {
    const PYTHON: &str = "/usr/bin/python3";
    const PACKAGES: &str = "python3-grpcio python3-grpc-tools python3-protobuf";
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kubelet/kubelet.py");
    let out = std::process::Command::new(PYTHON)
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {PYTHON}: {e}; apt-get install -y {PACKAGES} (.ci/run does)")
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("ModuleNotFoundError") {
        panic!(
            "this test needs grpcio, grpc_tools and protobuf for {PYTHON}: apt-get install -y {PACKAGES} (.ci/run does)\n{stderr}"
        );
    }
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("kubelet.py printed no JSON ({e}): {stderr}"));
    (out.status.code().unwrap_or(-1), json)
}
