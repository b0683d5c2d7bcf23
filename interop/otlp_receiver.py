"""An OTLP trace receiver built on OpenTelemetry's published protocol types
(the `opentelemetry-proto` package, with grpcio), not on rmicro's code.

    python otlp_receiver.py

Listens on two free loopback ports, OTLP/gRPC (TraceService/Export) and
OTLP/HTTP (POST /v1/traces, protobuf bodies), prints one line
`{"grpc": PORT, "http": PORT}` when ready, then one JSON line per span
received: ids in hex, kind by name, attributes, resource attributes, events,
status, and which protocol brought it. Exits when stdin closes.
"""
import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.trace.v1 import trace_pb2

lock = threading.Lock()


def value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind)


def attrs(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


def emit(request, protocol):
    lines = []
    for rs in request.resource_spans:
        resource = attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                lines.append(
                    json.dumps(
                        {
                            "protocol": protocol,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "name": span.name,
                            "kind": trace_pb2.Span.SpanKind.Name(span.kind),
                            "attributes": attrs(span.attributes),
                            "events": [
                                {"name": e.name, "attributes": attrs(e.attributes)}
                                for e in span.events
                            ],
                            "status": {
                                "code": trace_pb2.Status.StatusCode.Name(
                                    span.status.code
                                ),
                                "message": span.status.message,
                            },
                            "duration_ns": span.end_time_unix_nano
                            - span.start_time_unix_nano,
                            "resource": resource,
                            "scope": ss.scope.name,
                        }
                    )
                )
    with lock:
        for line in lines:
            print(line)
        sys.stdout.flush()


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        emit(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


class Http(BaseHTTPRequestHandler):
    def do_POST(self):
        if self.path != "/v1/traces":
            self.send_response(404)
            self.end_headers()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        emit(request, "http")
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
grpc_port = server.add_insecure_port("127.0.0.1:0")
server.start()
http = ThreadingHTTPServer(("127.0.0.1", 0), Http)
threading.Thread(target=http.serve_forever, daemon=True).start()
print(json.dumps({"grpc": grpc_port, "http": http.server_address[1]}))
sys.stdout.flush()
sys.stdin.read()
server.stop(0)
http.shutdown()
