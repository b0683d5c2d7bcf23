"""A stock grpcio client calling an rmicro greeter: all four kinds of call, errors,
health, reflection (v1 and v1alpha), bad input and deadlines.

Usage: greeter_client.py HOST:PORT. Prints one line per check; exits 1 on the first failure.
"""
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import stubs

pb, pb_grpc = stubs.load()


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}", flush=True)
        sys.exit(1)
    print(f"ok   {name}", flush=True)


def expect_code(name, fn, *codes):
    try:
        fn()
    except grpc.RpcError as e:
        check(name, e.code() in codes, f"got {e.code()} {e.details()!r}, want {codes}")
        return e
    check(name, False, "call succeeded, want an error")


def reflection_services(channel, path):
    call = channel.stream_stream(
        path,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    replies = list(call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    return sorted(s.name for s in replies[0].list_services_response.service)


def main():
    address = sys.argv[1]
    channel = grpc.insecure_channel(address)
    stub = pb_grpc.GreeterStub(channel)

    r = stub.SayHello(pb.HelloRequest(name="py"), timeout=5)
    check("unary SayHello", r.message == "Hello py", r.message)

    msgs = [m.message for m in stub.SayHelloStream(pb.HelloRequest(name="py", count=5), timeout=5)]
    check("server streaming SayHelloStream", msgs == [f"Hello py #{i}" for i in range(1, 6)], msgs)

    r = stub.Collect(iter([pb.HelloRequest(name=n) for n in "abc"]), timeout=5)
    check("client streaming Collect", r.message == "Hello a, b, c", r.message)

    msgs = [m.message for m in stub.Chat(iter([pb.HelloRequest(name=n) for n in ["x", "y"]]), timeout=5)]
    check("bidi streaming Chat", msgs == ["Hello x", "Hello y"], msgs)

    e = expect_code("empty name is INVALID_ARGUMENT",
                    lambda: stub.SayHello(pb.HelloRequest(name=""), timeout=5),
                    grpc.StatusCode.INVALID_ARGUMENT)
    check("error message is readable", "name must not be empty" in e.details(), e.details())

    health = health_pb2_grpc.HealthStub(channel)
    for svc in ["", "greeter.v1.Greeter"]:
        h = health.Check(health_pb2.HealthCheckRequest(service=svc), timeout=5)
        check(f"health {svc or '(server)'} SERVING", h.status == health_pb2.HealthCheckResponse.SERVING, h)
    expect_code("health of unknown service is NOT_FOUND",
                lambda: health.Check(health_pb2.HealthCheckRequest(service="nope.Nope"), timeout=5),
                grpc.StatusCode.NOT_FOUND)

    for path in ["/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                 "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"]:
        names = reflection_services(channel, path)
        check(f"reflection {path.split('.')[2]} lists services",
              "greeter.v1.Greeter" in names and "grpc.health.v1.Health" in names, names)

    stub_ref = reflection_pb2_grpc.ServerReflectionStub(channel)
    req = reflection_pb2.ServerReflectionRequest(file_containing_symbol="greeter.v1.Greeter")
    reply = next(stub_ref.ServerReflectionInfo(iter([req]), timeout=5))
    check("reflection describes greeter.v1.Greeter",
          len(reply.file_descriptor_response.file_descriptor_proto) >= 1, reply)

    raw = channel.unary_unary("/greeter.v1.Greeter/SayHello")
    expect_code("garbage message is INVALID_ARGUMENT or INTERNAL",
                lambda: raw(b"\xff\xff\xff\xff\x0f", timeout=5),
                grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL)
    r = stub.SayHello(pb.HelloRequest(name="again"), timeout=5)
    check("server still serves after garbage", r.message == "Hello again", r.message)

    expect_code("unknown method is UNIMPLEMENTED",
                lambda: channel.unary_unary("/greeter.v1.Greeter/Nope")(b"", timeout=5),
                grpc.StatusCode.UNIMPLEMENTED)
    expect_code("unknown service is UNIMPLEMENTED",
                lambda: channel.unary_unary("/nope.v1.Nope/Nope")(b"", timeout=5),
                grpc.StatusCode.UNIMPLEMENTED)

    expect_code("oversized message is RESOURCE_EXHAUSTED",
                lambda: stub.SayHello(pb.HelloRequest(name="x" * (5 * 1024 * 1024)), timeout=10),
                grpc.StatusCode.RESOURCE_EXHAUSTED)

    def slow_stream():
        for _ in stub.SayHelloStream(pb.HelloRequest(name="slow", count=2_000_000_000), timeout=0.3):
            pass
    expect_code("deadline ends a long stream with DEADLINE_EXCEEDED", slow_stream,
                grpc.StatusCode.DEADLINE_EXCEEDED)

    print("all interop checks passed", flush=True)


if __name__ == "__main__":
    main()
