#!/usr/bin/python3
"""The kubelet's side of a DRA plugin's sockets, on grpcio: a gRPC stack
that is not the plugin's own, dialling as the kubelet does.

The kubelet's plugin watcher dials the registration socket with the bare
socket path as its target, so grpc-go sends that path, percent-encoded, as
the :authority pseudo-header; it dials the DRA service as unix:PATH, which
sends "localhost". --authority picks what goes on the wire.

Messages come from the .proto files beside this script, compiled at start
with grpc_tools (written from the kubelet's published API, not from the
plugin's code).

    kubelet.py register SOCKET [--authority KIND] [--refuse ERROR]
        GetInfo, then NotifyRegistrationStatus (registered, or refused
        with ERROR); prints {"info": PluginInfo}
    kubelet.py prepare SOCKET --api v1|v1beta1 --claim NS/NAME/UID...
    kubelet.py unprepare SOCKET --api v1|v1beta1 --claim NS/NAME/UID...
        prints the response

Output is JSON on stdout (field names as in the .proto). An RPC that fails
prints {"code": ..., "details": ...} and exits 3.
"""

import argparse
import importlib
import json
import os
import sys
import tempfile
import urllib.parse

import grpc
from google.protobuf import json_format
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTOS = ["pluginregistration.proto", "dra_v1.proto", "dra_v1beta1.proto"]
SERVICES = {
    "v1": "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin",
    "v1beta1": "k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin",
}


def compile_protos(out):
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["protoc", f"-I{HERE}", f"-I{include}", f"--python_out={out}"]
    if protoc.main(args + [os.path.join(HERE, p) for p in PROTOS]) != 0:
        sys.exit("kubelet.py: protoc failed on " + " ".join(PROTOS))
    sys.path.insert(0, out)
    return {p[: -len(".proto")]: importlib.import_module(p[: -len(".proto")] + "_pb2") for p in PROTOS}


def authority(kind, socket):
    """What the channel sends as :authority."""
    return {
        "default": None,  # grpcio's own choice for unix: targets
        "localhost": "localhost",
        "path": socket,
        "percent": urllib.parse.quote(socket, safe=""),  # as grpc-go encodes it
        "empty": "",
    }[kind]


def channel(socket, kind):
    options = []
    value = authority(kind, socket)
    if value is not None:
        options.append(("grpc.default_authority", value))
    return grpc.insecure_channel("unix:" + socket, options=options)


def unary(ch, path, request, response_type):
    call = ch.unary_unary(
        path,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_type.FromString,
    )
    return call(request, timeout=10)


def as_json(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def claims(pb, specs):
    out = []
    for spec in specs:
        namespace, name, uid = spec.split("/")
        out.append(pb.Claim(namespace=namespace, name=name, uid=uid))
    return out


def main():
    parser = argparse.ArgumentParser(description="The kubelet's side of a DRA plugin, on grpcio")
    parser.add_argument("verb", choices=["register", "prepare", "unprepare"])
    parser.add_argument("socket")
    parser.add_argument(
        "--authority",
        choices=["default", "localhost", "path", "percent", "empty"],
        default="default",
    )
    parser.add_argument("--refuse", metavar="ERROR")
    parser.add_argument("--api", choices=sorted(SERVICES), default="v1")
    parser.add_argument("--claim", action="append", default=[], metavar="NS/NAME/UID")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out:
        pb = compile_protos(out)
        ch = channel(args.socket, args.authority)
        try:
            if args.verb == "register":
                reg = pb["pluginregistration"]
                service = "/pluginregistration.Registration/"
                info = unary(ch, service + "GetInfo", reg.InfoRequest(), reg.PluginInfo)
                status = reg.RegistrationStatus(
                    plugin_registered=args.refuse is None, error=args.refuse or ""
                )
                unary(ch, service + "NotifyRegistrationStatus", status, reg.RegistrationStatusResponse)
                print(json.dumps({"info": as_json(info)}))
            else:
                dra = pb["dra_" + args.api]
                method = "NodePrepareResources" if args.verb == "prepare" else "NodeUnprepareResources"
                request = getattr(dra, method + "Request")(claims=claims(dra, args.claim))
                response = getattr(dra, method + "Response")
                answer = unary(ch, f"/{SERVICES[args.api]}/{method}", request, response)
                print(json.dumps(as_json(answer)))
        except grpc.RpcError as e:
            print(json.dumps({"code": e.code().name, "details": e.details()}))
            sys.exit(3)
        finally:
            ch.close()


if __name__ == "__main__":
    main()
