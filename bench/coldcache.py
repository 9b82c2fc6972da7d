"""What this host charges for work that runs after a sleep: `python -m bench.coldcache [--gaps-ms 0,0.5,2,10,100]
[--count 300] [--repeat 3]`.

A consumer at a steady 100 pushes/s sleeps ~10 ms between pushes; in a burst it never sleeps. Its CPU
per push at 100/s has measured 4-6 times its CPU per push in a burst (docs/scaling.md), and so has the
one-thread floor's (bench/floor.py), which does nothing but the protocol. This bench measures the
same effect without a consumer, a broker or a database, so that it can be put down to the host and
not to a design: one thread times (CLOCK_THREAD_CPUTIME_ID, its own CPU only) the same work, done
once per gap, the thread sleeping (`time.sleep`) between two rounds:

  work     json.loads of a push_req-sized body, then one HTTP/2 request (HEADERS + DATA) built with
           h2, the way pusher's transport builds it (header validation off, no Huffman): the first
           half of a push's protocol work, with no I/O
  send     one send() of 200 bytes on a loopback TCP socket to a process blocked in recv(): what a
           write that wakes another process costs the writer (a request to the provider, an ack to
           the broker, a row to the database)

For each gap: the median over --repeat rounds of the mean CPU per operation, and how many times the
back-to-back (gap 0) figure that is. Where a gap multiplies the same work several times over, a
push costs what it costs at 100/s whatever the code's design, and the <= 1 ms of CPU per push at
100/s of issue 12 asks for a per-push cost, hot, of a fraction of that.
Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time

import h2.config
import h2.connection

BODY = json.dumps({
    "Event-Category": "notification", "Event-Name": "push_req", "App-Name": "kamailio", "App-Version": "5.5",
    "Msg-ID": "m" * 32, "Call-ID": "c" * 40, "Token-ID": "ab" * 32, "Token-Type": "apns",
    "Token-App": "com.example.voip", "Alert-Key": "IC_SIL", "Alert-Params": ["+15551234567"],
    "Payload": {"aps": {"alert": "incoming call"}, "call-id": "c" * 40, "caller-id-number": "+15551234567"},
})


class Work:
    """json.loads + one h2 request per call, on a connection whose streams are dropped as it goes."""

    def __init__(self) -> None:
        config = h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=False, normalize_inbound_headers=False,
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.initiate_connection()
        self.h2.data_to_send()
        self.stream_id = 1

    def __call__(self) -> None:
        fields = json.loads(BODY)
        headers = [
            (b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"api.push.apple.com"),
            (b":path", b"/3/device/" + fields["Token-ID"].encode()), (b"apns-topic", b"com.example.voip.voip"),
            (b"apns-push-type", b"voip"), (b"apns-priority", b"10"), (b"apns-expiration", b"0"),
        ]
        body = json.dumps(fields["Payload"], separators=(",", ":")).encode()
        self.h2.send_headers(self.stream_id, headers)
        self.h2.send_data(self.stream_id, body, end_stream=True)
        self.h2.data_to_send()
        # Nobody answers: forget the stream and give the window back, so the connection never fills.
        self.h2.streams.clear()
        self.h2.outbound_flow_control_window = 65535
        self.stream_id += 2


def thread_cpu() -> float:
    return time.clock_gettime(time.CLOCK_THREAD_CPUTIME_ID)


def per_call(operation: object, gap_s: float, count: int) -> float:
    assert callable(operation)
    total = 0.0
    for _ in range(count):
        if gap_s:
            time.sleep(gap_s)
        start = thread_cpu()
        operation()
        total += thread_cpu() - start
    return total / count


def peer_socket() -> tuple[socket.socket, int]:
    """A loopback TCP connection to a child process that reads until EOF."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    pid = os.fork()
    if pid == 0:  # the peer: blocked in recv() between two sends
        connection, _ = server.accept()
        while connection.recv(65536):
            pass
        os._exit(0)
    client = socket.create_connection(server.getsockname())
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    server.close()
    return client, pid


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gaps-ms", default="0,0.5,2,10,100", help="comma-separated sleeps between two operations")
    parser.add_argument("--count", type=int, default=300, help="operations per gap and round")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (every gap, in turn, per round)")
    args = parser.parse_args(argv)
    try:
        gaps = [float(g) / 1000 for g in args.gaps_ms.split(",") if g.strip()]
    except ValueError:
        parser.error("--gaps-ms: comma-separated numbers of milliseconds, e.g. 0,10")
    if not gaps or min(gaps) < 0 or args.count < 1 or args.repeat < 1:
        parser.error("--gaps-ms needs at least one gap >= 0; --count and --repeat at least 1")

    work = Work()
    client, pid = peer_socket()
    payload = b"x" * 200
    results: dict[float, tuple[list[float], list[float]]] = {gap: ([], []) for gap in gaps}
    try:
        for _ in range(args.repeat):
            for gap in gaps:
                results[gap][0].append(per_call(work, gap, args.count))
                results[gap][1].append(per_call(lambda: client.send(payload), gap, args.count))
    finally:
        client.close()
        os.waitpid(pid, 0)

    hot_work = statistics.median(results[gaps[0]][0])
    hot_send = statistics.median(results[gaps[0]][1])
    print(f"CPU of one thread per operation, median of {args.repeat} rounds of {args.count}; "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{'gap ms':>7}  {'work us':>8}  {'x first':>7}  {'send us':>8}  {'x first':>7}")
    for gap in gaps:
        work_us = statistics.median(results[gap][0]) * 1e6
        send_us = statistics.median(results[gap][1]) * 1e6
        print(f"{gap * 1000:7.1f}  {work_us:8.1f}  {work_us / (hot_work * 1e6):7.1f}  "
              f"{send_us:8.1f}  {send_us / (hot_send * 1e6):7.1f}")
    print("work: json.loads of a push_req + one HTTP/2 request built with h2 (no I/O); send: 200 bytes to a "
          "process blocked in recv() on loopback TCP. 'x first' is against the first gap's figure.")


if __name__ == "__main__":
    main()
