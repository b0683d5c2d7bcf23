"""A plain HTTP/1.1 server behind `rmicro api --handler http`: answers every
request with what it saw (method, path with query, a header, the body) as JSON.

Binds 127.0.0.1:0, prints `PORT <n>`, serves until killed.
"""
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        seen = json.dumps({
            "method": self.command,
            "path": self.path,
            "x_user": self.headers.get("X-User"),
            "body": body,
        }).encode()
        self.send_response(207)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Served-By", "python-http")
        self.send_header("Content-Length", str(len(seen)))
        self.end_headers()
        self.wfile.write(seen)

    do_GET = do_POST = do_PUT = do_DELETE = answer

    def log_message(self, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
