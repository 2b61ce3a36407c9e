"""An OTLP/HTTP logs receiver for the tests: decodes each request with the official
schema (the opentelemetry-proto package's generated classes) and writes every log
record it received as one JSON line, with its resource and the request's headers.

Usage: otlp_receiver.py PORT_FILE OUT_FILE [--port N] [--delay-ms N]
    PORT_FILE: the port it listens on is written there once it is ready.
    --delay-ms: each answer waits this long (a slow collector)."""

import argparse
import http.server
import json
import time

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2


def value(v):
    """An AnyValue as plain JSON."""
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "boolValue" in v:
        return v["boolValue"]
    if "doubleValue" in v:
        return v["doubleValue"]
    if "arrayValue" in v:
        return [value(x) for x in v["arrayValue"].get("values", [])]
    if "kvlistValue" in v:
        return {kv["key"]: value(kv.get("value", {})) for kv in v["kvlistValue"].get("values", [])}
    return None


def attrs(kvs):
    return {kv["key"]: value(kv.get("value", {})) for kv in kvs}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port_file")
    p.add_argument("out_file")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--delay-ms", type=int, default=0)
    a = p.parse_args()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            req = logs_service_pb2.ExportLogsServiceRequest()
            req.ParseFromString(body)
            with open(a.out_file, "a") as out:
                for rl in req.resource_logs:
                    resource = attrs(MessageToDict(rl.resource).get("attributes", []))
                    for sl in rl.scope_logs:
                        for rec in sl.log_records:
                            d = MessageToDict(rec)
                            out.write(json.dumps({
                                "resource": resource,
                                "scope": sl.scope.name,
                                "event_name": rec.event_name,
                                "severity_number": rec.severity_number,
                                "time_unix_nano": rec.time_unix_nano,
                                "attributes": attrs(d.get("attributes", [])),
                                "body": value(d.get("body", {})),
                                "content_type": self.headers.get("Content-Type"),
                                "authorization": self.headers.get("Authorization"),
                            }) + "\n")
            time.sleep(a.delay_ms / 1000)
            resp = logs_service_pb2.ExportLogsServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(resp)))
            self.end_headers()
            self.wfile.write(resp)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", a.port), Handler)
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.rename(a.port_file + ".tmp", a.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
