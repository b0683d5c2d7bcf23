"""A stock grpcio service behind `rmicro api --handler api`, as a go-micro service
behind `micro api --handler=api` is: `apitest.Foo/Call` takes go-micro's
`go.api.Request` and answers a `go.api.Response`. Its body is the request it saw,
as JSON, so the test can check what the gateway sent.

Binds 127.0.0.1:0, prints `PORT <n>`, serves (with reflection) until killed.
"""
import importlib
import json
import os
import sys
import tempfile

import grpc_tools

import stubs
from grpc_tools import protoc

API_DIR = stubs.API_DIR
FOO = """
syntax = "proto3";
package apitest;
import "go/api/api.proto";
service Foo {
  rpc Call(go.api.Request) returns (go.api.Response);
}
"""


def load():
    out = tempfile.mkdtemp(prefix="rmicro-api-handler-")
    with open(os.path.join(out, "foo.proto"), "w") as f:
        f.write(FOO)
    rc = protoc.main([
        "grpc_tools.protoc",
        f"-I{out}",
        f"-I{API_DIR}",
        f"-I{os.path.join(os.path.dirname(grpc_tools.__file__), '_proto')}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        os.path.join(out, "foo.proto"),
        os.path.join(API_DIR, "go", "api", "api.proto"),
    ])
    if rc != 0:
        raise SystemExit(f"protoc failed with {rc}")
    sys.path.insert(0, out)
    return (importlib.import_module("go.api.api_pb2"), importlib.import_module("foo_pb2"),
            importlib.import_module("foo_pb2_grpc"))


api_pb2, foo_pb2, foo_pb2_grpc = load()


class Foo(foo_pb2_grpc.FooServicer):
    def Call(self, request, context):
        seen = {
            "method": request.method,
            "path": request.path,
            "url": request.url,
            "body": request.body,
            "get": {k: list(v.values) for k, v in request.get.items()},
            "post": {k: list(v.values) for k, v in request.post.items()},
            "header": {k: list(v.values) for k, v in request.header.items()},
        }
        reply = api_pb2.Response(statusCode=201, body=json.dumps(seen))
        reply.header["X-Handled-By"].key = "X-Handled-By"
        reply.header["X-Handled-By"].values.append("python")
        return reply


def main():
    stubs.serve(
        lambda server: foo_pb2_grpc.add_FooServicer_to_server(Foo(), server),
        foo_pb2.DESCRIPTOR.services_by_name["Foo"].full_name,
        workers=4,
    )


if __name__ == "__main__":
    main()
