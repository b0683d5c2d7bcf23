"""A stock grpcio client calling rmicro's user service: registration, the errors
a caller can provoke (by their gRPC codes), login, a token in metadata, paging,
health. Stubs come from services/user/proto/user.proto, compiled here by
grpcio-tools, not from rmicro.

Usage: user_client.py HOST:PORT. Prints one line per check; exits 1 on the first failure.
"""
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import stubs

pb, pb_grpc = stubs.load(os.path.join(stubs.ROOT, "services", "user", "proto"), "user")


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}", flush=True)
        sys.exit(1)
    print(f"ok   {name}", flush=True)


def expect_code(name, fn, code):
    try:
        fn()
    except grpc.RpcError as e:
        check(name, e.code() == code, f"got {e.code()} {e.details()!r}, want {code}")
        return e
    check(name, False, "call succeeded, want an error")


def main():
    channel = grpc.insecure_channel(sys.argv[1])
    users = pb_grpc.UserStub(channel)

    ann = users.Register(pb.RegisterRequest(user_name="py-ann", first_name="Ann",
                                            email="ann@example.com", password="correct horse"), timeout=10)
    check("register returns the user", ann.user_name == "py-ann" and ann.user_id > 0, str(ann))
    check("no password in the reply", all("pass" not in f.name for f in pb.UserInfo.DESCRIPTOR.fields))
    expect_code("a taken name is ALREADY_EXISTS", lambda: users.Register(
        pb.RegisterRequest(user_name="py-ann", first_name="A", email="a@example.com", password="another one"),
        timeout=10), grpc.StatusCode.ALREADY_EXISTS)
    bad = expect_code("a bad email is INVALID_ARGUMENT", lambda: users.Register(
        pb.RegisterRequest(user_name="py-bob", first_name="Bob", email="nope", password="long enough"),
        timeout=10), grpc.StatusCode.INVALID_ARGUMENT)
    check("the error names the field", bad.details().startswith("email"), bad.details())

    wrong = expect_code("a wrong password is UNAUTHENTICATED", lambda: users.Login(
        pb.LoginRequest(user_name="py-ann", password="wrong password"), timeout=10),
        grpc.StatusCode.UNAUTHENTICATED)
    unknown = expect_code("an unknown user is UNAUTHENTICATED", lambda: users.Login(
        pb.LoginRequest(user_name="py-nobody", password="correct horse"), timeout=10),
        grpc.StatusCode.UNAUTHENTICATED)
    check("both say the same", wrong.details() == unknown.details(), f"{wrong.details()!r} {unknown.details()!r}")

    login = users.Login(pb.LoginRequest(user_name="py-ann", password="correct horse"), timeout=10)
    check("login returns a token", login.token.count(".") == 2 and login.user.user_id == ann.user_id)
    auth = (("authorization", f"Bearer {login.token}"),)
    expect_code("no token is UNAUTHENTICATED", lambda: users.GetUserInfo(
        pb.GetUserInfoRequest(user_id=ann.user_id), timeout=10), grpc.StatusCode.UNAUTHENTICATED)
    got = users.GetUserInfo(pb.GetUserInfoRequest(user_id=ann.user_id), metadata=auth, timeout=10)
    check("get-info with the token", got == ann, str(got))
    expect_code("a missing user is NOT_FOUND", lambda: users.GetUserInfo(
        pb.GetUserInfoRequest(user_id=987654), metadata=auth, timeout=10), grpc.StatusCode.NOT_FOUND)
    updated = users.UpdateUser(pb.UpdateUserRequest(user_id=ann.user_id, first_name="Annie"),
                               metadata=auth, timeout=10)
    check("an update changes only what is set", updated.first_name == "Annie" and updated.email == ann.email)
    page = users.ListUsers(pb.ListUsersRequest(page_size=1), metadata=auth, timeout=10)
    check("a page of one", len(page.users) == 1 and page.users[0].user_name == "py-ann", str(page))
    users.DeleteUser(pb.DeleteUserRequest(user_id=ann.user_id), metadata=auth, timeout=10)
    expect_code("deleted is NOT_FOUND", lambda: users.GetUserInfo(
        pb.GetUserInfoRequest(user_id=ann.user_id), metadata=auth, timeout=10), grpc.StatusCode.NOT_FOUND)

    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="user.v1.User"), timeout=5)
    check("health SERVING", health.status == health_pb2.HealthCheckResponse.SERVING)
    print("all user interop checks passed", flush=True)


if __name__ == "__main__":
    main()
