"""A stock grpcio greeter server, for rmicro's typed client to call.

Binds 127.0.0.1:0, prints `PORT <n>` and serves until killed. Serves server
reflection (v1alpha and, with grpcio-reflection >= 1.62, v1) as a stock server
does, so rmicro's gateway can find its descriptors.
"""
import sys

import grpc

import stubs

pb, pb_grpc = stubs.load()


def echo_metadata(context):
    """Answers a caller's `x-echo` in the response headers, as a server that
    sends metadata back does."""
    echo = dict(context.invocation_metadata()).get("x-echo")
    if echo is not None:
        context.send_initial_metadata((("x-echo", echo),))


class Greeter(pb_grpc.GreeterServicer):
    def SayHello(self, request, context):
        if not request.name:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name must not be empty")
        echo_metadata(context)
        context.set_trailing_metadata((("x-served-by", "grpcio"),))
        return pb.HelloReply(message=f"Hello {request.name}")

    def SayHelloStream(self, request, context):
        echo_metadata(context)
        for i in range(1, request.count + 1):
            yield pb.HelloReply(message=f"Hello {request.name} #{i}")

    def Collect(self, request_iterator, context):
        return pb.HelloReply(message="Hello " + ", ".join(r.name for r in request_iterator))

    def Chat(self, request_iterator, context):
        for r in request_iterator:
            yield pb.HelloReply(message=f"Hello {r.name}")


def main():
    stubs.serve(
        lambda server: pb_grpc.add_GreeterServicer_to_server(Greeter(), server),
        pb.DESCRIPTOR.services_by_name["Greeter"].full_name,
    )
    sys.exit(0)


if __name__ == "__main__":
    main()
