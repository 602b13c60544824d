# A process that holds, on 127.0.0.1, a TCP-MD5 connection (both ends keyed) and a plain one,
# with their listeners; prints {"pid", "md5": [ends], "plain": [ends]} and keeps them until
# its standard input closes. Shared by the host tests that compare answers across front-ends.
import json, os, socket, struct, sys
def key(s, peer):
    addr = struct.pack("=HH4s", socket.AF_INET, 0, socket.inet_aton(peer)).ljust(128, b"\0")
    k = b"socksec-test-key"
    s.setsockopt(socket.IPPROTO_TCP, 14, addr + struct.pack("=BBHi", 0, 0, len(k), 0) + k.ljust(80, b"\0"))
lm = socket.socket(); lm.bind(("127.0.0.1", 0)); key(lm, "127.0.0.1"); lm.listen()
cm = socket.socket(); key(cm, "127.0.0.1"); cm.connect(lm.getsockname()); am, _ = lm.accept()
lp = socket.socket(); lp.bind(("127.0.0.1", 0)); lp.listen()
cp = socket.socket(); cp.connect(lp.getsockname()); ap, _ = lp.accept()
end = lambda s: {"fd": s.fileno(), "local": "%s:%d" % s.getsockname(), "peer": "%s:%d" % s.getpeername()}
print(json.dumps({"pid": os.getpid(), "md5": [end(cm), end(am)], "plain": [end(cp), end(ap)]}), flush=True)
sys.stdin.read()
