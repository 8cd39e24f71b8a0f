//! The gRPC services the kubelet calls, over tonic without generated code:
//! each service routes its methods by path to a handler and lets tonic's
//! unary machinery do the framing and the protobuf coding.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::{Grpc, NamedService, UnaryService};

use super::Handler;
use super::proto::{self, InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse};
use super::registration::Tracker;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One unary call: decode `Req`, run `f`, encode its answer.
async fn unary<Req, Resp, F, Fut>(req: http::Request<Body>, f: F) -> http::Response<Body>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnOnce(Req) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
{
    struct Once<F>(Option<F>);
    impl<Req, Resp, F, Fut> UnaryService<Req> for Once<F>
    where
        Req: Send + 'static,
        F: FnOnce(Req) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
    {
        type Response = Resp;
        type Future = BoxFuture<Result<tonic::Response<Resp>, Status>>;

        fn call(&mut self, request: tonic::Request<Req>) -> Self::Future {
            let f = self.0.take();
            Box::pin(async move {
                match f {
                    Some(f) => f(request.into_inner()).await.map(tonic::Response::new),
                    None => Err(Status::internal("handler called twice")),
                }
            })
        }
    }
    let mut grpc = Grpc::new(tonic_prost::ProstCodec::<Resp, Req>::default());
    grpc.unary(Once(Some(f)), req).await
}

fn unimplemented(path: &str) -> http::Response<Body> {
    Status::unimplemented(format!("{path} is not served here")).into_http()
}

/// `pluginregistration.Registration`: the kubelet's plugin watcher asks
/// what we are and tells whether it took us.
#[derive(Clone)]
pub struct Registration {
    pub info: PluginInfo,
    pub tracker: Arc<Tracker>,
}

impl NamedService for Registration {
    const NAME: &'static str = proto::REGISTRATION;
}

impl Service<http::Request<Body>> for Registration {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let path = req.uri().path().to_string();
            let method = path.rsplit('/').next().unwrap_or_default();
            Ok(match method {
                "GetInfo" => {
                    this.tracker.asked();
                    let info = this.info.clone();
                    unary(req, move |_: InfoRequest| async move { Ok(info) }).await
                }
                "NotifyRegistrationStatus" => {
                    let tracker = this.tracker.clone();
                    unary(req, move |status: RegistrationStatus| async move {
                        tracker.answered(&status);
                        Ok(RegistrationStatusResponse {})
                    })
                    .await
                }
                _ => unimplemented(&path),
            })
        })
    }
}

/// Which DRA API a service speaks (the messages are the same).
pub trait DraApi: Send + Sync + 'static {
    const NAME: &'static str;
}

pub struct V1;
pub struct V1beta1;

impl DraApi for V1 {
    const NAME: &'static str = proto::DRA_V1;
}

impl DraApi for V1beta1 {
    const NAME: &'static str = proto::DRA_V1BETA1;
}

/// The DRA node service: NodePrepareResources, NodeUnprepareResources.
pub struct Dra<A> {
    pub handler: Arc<Handler>,
    api: PhantomData<A>,
}

impl<A> Dra<A> {
    pub fn new(handler: Arc<Handler>) -> Self {
        Dra {
            handler,
            api: PhantomData,
        }
    }
}

impl<A> Clone for Dra<A> {
    fn clone(&self) -> Self {
        Dra::new(self.handler.clone())
    }
}

impl<A: DraApi> NamedService for Dra<A> {
    const NAME: &'static str = A::NAME;
}

impl<A: DraApi> Service<http::Request<Body>> for Dra<A> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let handler = self.handler.clone();
        Box::pin(async move {
            let path = req.uri().path().to_string();
            let method = path.rsplit('/').next().unwrap_or_default();
            Ok(match method {
                "NodePrepareResources" => {
                    unary(
                        req,
                        move |r: proto::NodePrepareResourcesRequest| async move {
                            Ok(handler.prepare(r.claims).await)
                        },
                    )
                    .await
                }
                "NodeUnprepareResources" => {
                    unary(
                        req,
                        move |r: proto::NodeUnprepareResourcesRequest| async move {
                            Ok(handler.unprepare(r.claims))
                        },
                    )
                    .await
                }
                _ => unimplemented(&path),
            })
        })
    }
}
