"""Generates Python gRPC stubs for an rmicro proto (the greeter's by default) into a
temp dir and imports them."""
import importlib
import os
import shutil
import signal
import sys
import tempfile

import grpc_tools
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_DIR = os.path.join(ROOT, "examples", "greeter", "proto")
# google/api/annotations.proto for the greeter's HTTP routes; at run time the
# generated module imports googleapis-common-protos' copy of the same file.
API_DIR = os.path.join(ROOT, "crates", "rmicro-build", "proto")


def load(proto_dir=PROTO_DIR, name="greeter"):
    """The `<name>_pb2` and `<name>_pb2_grpc` modules of `<proto_dir>/<name>.proto`."""
    out = tempfile.mkdtemp(prefix="rmicro-interop-")
    rc = protoc.main([
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{API_DIR}",
        # google/protobuf/*.proto, which grpcio-tools carries.
        f"-I{os.path.join(os.path.dirname(grpc_tools.__file__), '_proto')}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        os.path.join(proto_dir, f"{name}.proto"),
    ])
    if rc != 0:
        raise SystemExit(f"protoc failed with {rc}")
    sys.path.insert(0, out)
    try:
        return importlib.import_module(f"{name}_pb2"), importlib.import_module(f"{name}_pb2_grpc")
    finally:
        # Both modules are loaded now; the generated files are no longer needed.
        sys.path.remove(out)
        shutil.rmtree(out, ignore_errors=True)


def serve(add_servicer, service_name, workers=8):
    """Serves one servicer with reflection on 127.0.0.1:0, prints `PORT <n>` and
    blocks until SIGTERM or a kill: the test servers' common main."""
    from concurrent import futures

    import grpc
    from grpc_reflection.v1alpha import reflection

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    add_servicer(server)
    reflection.enable_server_reflection((service_name, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.wait_for_termination()
