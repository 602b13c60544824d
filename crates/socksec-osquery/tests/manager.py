"""osqueryd's side of the extension protocol, for the test: an extension manager made from
osquery's own Thrift interface definition (the generated code the `osquery` Python package
ships), on a Unix socket, as osqueryd serves it.

Reads a JSON object on standard input:
  {"socket": PATH, "extension": [ARGV...], "contexts": [CONTEXT-or-null, ...]}
starts the extension with ARGV, waits for it to register, calls it as osqueryd does (ping,
the table's "columns" and "generate" with each context), asks it to shut down, and prints one
JSON object with what it saw: the registration, the answers and the extension's exit code.
"""

import json
import os
import subprocess
import sys
import threading
import time

from osquery.extensions import Extension, ExtensionManager
from osquery.extensions.ttypes import ExtensionResponse, ExtensionStatus
from thrift.protocol import TBinaryProtocol
from thrift.server import TServer
from thrift.transport import TSocket, TTransport

TABLE = "socket_protection"


class Manager(ExtensionManager.Iface):
    """The extension manager osqueryd runs: registrations, pings, deregistrations."""

    def __init__(self):
        self.registered = {}
        self.deregistered = []
        self.pings = 0
        self.lock = threading.Lock()
        self.ready = threading.Event()

    def ping(self):
        with self.lock:
            self.pings += 1
        return ExtensionStatus(code=0, message="OK")

    def call(self, registry, item, request):
        return ExtensionResponse(ExtensionStatus(code=1, message="the manager has no plugins"), [])

    def shutdown(self):
        pass

    def extensions(self):
        return {uuid: info for uuid, (info, _) in self.registered.items()}

    def options(self):
        return {}

    def registerExtension(self, info, registry):
        with self.lock:
            uuid = len(self.registered) + 1
            self.registered[uuid] = (info, registry)
        self.ready.set()
        return ExtensionStatus(code=0, message="OK", uuid=uuid)

    def deregisterExtension(self, uuid):
        self.deregistered.append(uuid)
        return ExtensionStatus(code=0, message="OK")

    def query(self, sql):
        return ExtensionResponse(ExtensionStatus(code=1, message="no SQL engine here"), [])

    def getQueryColumns(self, sql):
        return self.query(sql)


def serve(path, handler):
    server = TServer.TThreadedServer(
        ExtensionManager.Processor(handler),
        TSocket.TServerSocket(unix_socket=path),
        TTransport.TBufferedTransportFactory(),
        TBinaryProtocol.TBinaryProtocolFactory(),
        daemon=True,
    )
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()


def connect(path, deadline):
    """A client of the extension's own socket, as osqueryd opens it."""
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    while True:
        try:
            transport = TTransport.TBufferedTransport(TSocket.TSocket(unix_socket=path))
            transport.open()
            return Extension.Client(TBinaryProtocol.TBinaryProtocol(transport))
        except TTransport.TTransportException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def answer(response):
    return {
        "code": response.status.code,
        "message": response.status.message,
        "rows": response.response,
    }


def main():
    spec = json.load(sys.stdin)
    path = spec["socket"]
    manager = Manager()
    serve(path, manager)
    extension = subprocess.Popen(spec["extension"], stdin=subprocess.DEVNULL, stdout=sys.stderr)
    out = {}
    try:
        if not manager.ready.wait(30):
            raise SystemExit("the extension did not register within 30 s")
        (uuid, (info, registry)), = manager.registered.items()
        out["info"] = {"name": info.name, "version": info.version}
        out["registry"] = registry
        client = connect("%s.%d" % (path, uuid), time.monotonic() + 10)
        out["ping"] = client.ping().code
        out["columns"] = answer(client.call("table", TABLE, {"action": "columns"}))
        out["generate"] = []
        for context in spec["contexts"]:
            request = {"action": "generate"}
            if context is not None:
                request["context"] = json.dumps(context)
            out["generate"].append(answer(client.call("table", TABLE, request)))
        try:
            client.call("table", "no_such_table", {"action": "generate"})
            out["unknown_table"] = "answered"
        except Exception as e:  # osqueryd sees a Thrift application error
            out["unknown_table"] = type(e).__name__
        out["ping_after_error"] = client.ping().code
        # osqueryd's stop: the extension's shutdown call, then it exits by itself.
        client.shutdown()
        out["exit"] = extension.wait(15)
        out["deregistered"] = manager.deregistered
        out["pings"] = manager.pings
    finally:
        if extension.poll() is None:
            extension.kill()
            extension.wait()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
