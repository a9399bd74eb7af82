#!/usr/bin/env python3
"""Helpers for benches/compare.sh (python3 stdlib only).

Subcommands (all print to stdout):

  freeports K                 K distinct free TCP ports on 127.0.0.1 (asked from the kernel)
  tree PID                    PID and all its live descendants, one per line
  snap PID                    "cpu_ticks hwm_kib rss_kib nprocs user_ticks system_ticks" summed over
                              PID's process tree (cpu = utime+stime from /proc/P/stat, all threads,
                              live processes)
  rusage FILE CMD...          run CMD, forwarding SIGTERM/SIGINT/SIGHUP to it, and write its CPU
                              time "user_s system_s" (getrusage of the children) to FILE; exits
                              with CMD's status
  h2load OUT LOG              parse one h2load run: its stdout (OUT) and --log-file (LOG);
                              prints key=value lines
  handshake DIR               parse the batches DIR/batch-*.out/.log of the handshake scenario
  nghttp DIR                  parse the page loads DIR/load-*.out of the push scenario
  report RAW PROXIES SCEN BASE   markdown tables (medians over runs) from the raw TSV; SCEN are
                              the recorded scenario keys (ROUND/SCEN, or idle)
  summary RAW PROXIES SCEN BASE  one table: req/s, p99 and CPU per request of every proxy and
                              BASE's ratios to the others, one row per ROUND/SCEN key
"""

import glob
import json
import os
import re
import resource
import signal
import socket
import subprocess
import statistics
import sys

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- /proc

def _children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        # comm may contain spaces/parens: split after the last ')'
        rest = s[s.rfind(")") + 2:].split()
        ppid = int(rest[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pid):
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if not os.path.exists(f"/proc/{p}"):
            continue
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def snap(pid):
    user = system = hwm = rss = n = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rfind(")") + 2:].split()
        # fields 14,15 (utime, stime) -> rest index 11, 12
        user += int(rest[11])
        system += int(rest[12])
        hwm += _status_kib(p, "VmHWM")
        rss += _status_kib(p, "VmRSS")
        n += 1
    return user + system, hwm, rss, n, user, system


def cmd_rusage(path, argv):
    """The client's own CPU time: the client shares its core with the origin, so what it costs per
    request bounds the proxy's req/s as much as the proxy's own cost does."""
    # Not zero at start here (python's own start-up counts in it): measured as a difference.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = subprocess.Popen(argv)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: child.send_signal(s))
    rc = child.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(path, "w") as f:
        f.write(f"{after.ru_utime - before.ru_utime} {after.ru_stime - before.ru_stime}\n")
    return rc if rc >= 0 else 128 - rc


# ---------------------------------------------------------------- h2load

_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _dur_ms(tok):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s)", tok)
    if not m:
        raise ValueError(tok)
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_h2load_out(text):
    r = {}
    m = re.search(r"finished in ([0-9.]+)(us|ms|s), ([0-9.]+) req/s", text)
    if m:
        r["elapsed_s"] = float(m.group(1)) * _UNIT[m.group(2)] / 1000.0
        r["h2load_rps"] = float(m.group(3))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    if m:
        (r["total"], r["started"], r["done"], r["succeeded"], r["failed"],
         r["errored"], r["timeout"]) = map(int, m.groups())
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        r["s2xx"], r["s3xx"], r["s4xx"], r["s5xx"] = map(int, m.groups())
    m = re.search(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers.*?, .*?\((\d+)\) data", text)
    if m:
        r["bytes_total"], r["bytes_headers"], r["bytes_data"] = map(int, m.groups())
    for key, label in (("req", "time for request"), ("connect", "time for connect"),
                       ("ttfb", "time to 1st byte")):
        m = re.search(label + r":\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", text)
        if m:
            try:
                r[key + "_min_ms"], r[key + "_max_ms"], r[key + "_mean_ms"], r[key + "_sd_ms"] = (
                    _dur_ms(t) for t in m.groups())
            except ValueError:
                pass
    return r


def read_log(path):
    """h2load --log-file rows: start_us, status, duration_us."""
    rows = []
    with open(path) as f:
        for line in f:
            p = line.split("\t")
            if len(p) < 3:
                continue
            rows.append((int(p[0]), int(p[1]), int(p[2])))
    return rows


def pct(sorted_vals, q):
    """Nearest-rank percentile (q in 0..100) of an already sorted list."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, int(-(-q * len(sorted_vals) // 100)) - 1))
    return sorted_vals[k]


def cmd_h2load(out, log):
    with open(out) as f:
        r = parse_h2load_out(f.read())
    rows = read_log(log)
    lat = sorted(d for (_, st, d) in rows if st != -1)
    r["logged"] = len(rows)
    r["p50_ms"] = pct(lat, 50) / 1000.0
    r["p99_ms"] = pct(lat, 99) / 1000.0
    if r.get("succeeded"):
        r["data_bytes_per_req"] = r.get("bytes_data", 0) / r["succeeded"]
    emit(r)


def cmd_handshake(d):
    """Batches of C fresh connections, one request each.

    Per connection latency = end of its response - start of its batch, where the batch
    start is estimated as (earliest request start - minimum connect time): h2load opens all
    clients of a batch at once and sends the request as soon as the TLS handshake is done.
    So it covers TCP connect + TLS handshake + request + response, including the time a
    connection waited while the proxy handshook the others of its batch.
    """
    elapsed = 0.0
    agg = {"total": 0, "succeeded": 0, "failed": 0, "errored": 0, "timeout": 0, "s2xx": 0}
    lat = []
    connect_means = []
    for out in sorted(glob.glob(os.path.join(d, "batch-*.out"))):
        with open(out) as f:
            r = parse_h2load_out(f.read())
        elapsed += r.get("elapsed_s", 0.0)
        for k in agg:
            agg[k] += r.get(k, 0)
        log = out[:-4] + ".log"
        rows = read_log(log) if os.path.exists(log) else []
        ok = [(s, dur) for (s, st, dur) in rows if st != -1]
        if ok and "connect_min_ms" in r:
            t0 = min(s for s, _ in ok) - r["connect_min_ms"] * 1000.0
            lat.extend((s + dur - t0) for s, dur in ok)
            connect_means.append(r["connect_mean_ms"])
    lat.sort()
    agg["elapsed_s"] = elapsed
    agg["h2load_rps"] = agg["succeeded"] / elapsed if elapsed > 0 else float("nan")
    agg["p50_ms"] = pct(lat, 50) / 1000.0
    agg["p99_ms"] = pct(lat, 99) / 1000.0
    agg["connect_mean_ms"] = statistics.fmean(connect_means) if connect_means else float("nan")
    emit(agg)


# ---------------------------------------------------------------- nghttp (push)

_NG_ROW = re.compile(r"^\s*(\d+)\s+\+([0-9.]+)(us|ms|s)\s+(\*?)\s*\+([0-9.]+)(us|ms|s)\s+"
                     r"([0-9.]+)(us|ms|s)\s+(\d+)\s+(\S+)\s+(\S+)\s*$")


def _size(tok):
    m = re.fullmatch(r"([0-9.]+)([KMG]?)", tok)
    mult = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}[m.group(2)]
    return float(m.group(1)) * mult


def parse_nghttp(text):
    """nghttp -ns output: one row per stream; pushed streams carry a '*'."""
    streams = []
    for line in text.splitlines():
        m = _NG_ROW.match(line)
        if m:
            streams.append({
                "end_ms": float(m.group(2)) * _UNIT[m.group(3)],
                "pushed": m.group(4) == "*",
                "status": int(m.group(9)),
                "size": _size(m.group(10)),
                "path": m.group(11),
            })
    return streams


def cmd_nghttp(d):
    pages = []
    pushes = []
    sizes = []
    ok = failed = 0
    for out in sorted(glob.glob(os.path.join(d, "load-*.out"))):
        with open(out) as f:
            s = parse_nghttp(f.read())
        if not s or any(x["status"] >= 400 for x in s if not x["pushed"]):
            failed += 1
            continue
        ok += 1
        pages.append(max(x["end_ms"] for x in s))
        pushes.append(sum(1 for x in s if x["pushed"] and x["status"] == 200))
        sizes.append(sum(x["size"] for x in s))
    pages.sort()
    emit({
        "succeeded": ok,
        "failed": failed,
        "p50_ms": pct(pages, 50),
        "p99_ms": pct(pages, 99),
        "pushes_per_page": statistics.fmean(pushes) if pushes else float("nan"),
        "bytes_per_page": statistics.fmean(sizes) if sizes else float("nan"),
    })


# ---------------------------------------------------------------- report

def emit(d):
    for k, v in d.items():
        print(f"{k}={v}")


def load_raw(path):
    data = {}  # (scenario, proxy, key) -> [values over runs]
    with open(path) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) != 5:
                continue
            run, scen, proxy, key, val = p
            try:
                v = float(val)
            except ValueError:
                continue
            data.setdefault((scen, proxy, key), []).append(v)
    return data


def med(data, scen, proxy, key):
    vals = [v for v in data.get((scen, proxy, key), []) if v == v]  # drop NaN
    return statistics.median(vals) if vals else None


def fmt(v, nd=1):
    if v is None:
        return "–"
    if abs(v) >= 1000 and nd <= 1:
        return f"{v:,.0f}"
    return f"{v:.{nd}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}×"


SCEN_TITLE = {
    "asset": "(a) small asset, /small.txt (100 B) — the cost of proxying",
    "page": "(b) page with 5 preload Links, /index.html (h2load disables push: no pushes sent)",
    "handshake": "(c) one request per new TLS connection — handshake cost",
    "push": "(d) page loads with push accepted (nghttp, one new connection per page load)",
}


def cmd_report(raw, proxies, scens, base):
    data = load_raw(raw)
    proxies = proxies.split()
    scens = scens.split()
    runs = set()
    with open(raw) as f:
        for line in f:
            runs.add(line.split("\t", 1)[0])
    others = [p for p in proxies if p != base]
    out = []
    for s in scens:
        kind = s.split("/")[-1]
        if kind == "idle":
            continue
        if not any((s, p, "rps") in data or (s, p, "p50_ms") in data for p in proxies):
            continue
        out.append(f"#### {SCEN_TITLE.get(kind, kind)}\n")
        if kind == "push":
            cols = [("p50 page ms", "p50_ms", 2, False),
                    ("p99 page ms", "p99_ms", 2, False),
                    ("pushes/page", "pushes_per_page", 1, True),
                    ("KiB/page", "kib_per_page", 1, True),
                    ("CPU µs/page", "cpu_us_per_req", 0, False),
                    ("peak RSS MiB", "peak_rss_mib", 1, False),
                    ("origin conns", "origin_conns", 0, False),
                    ("failed", "failed", 0, False)]
        else:
            rate = "conn/s" if kind == "handshake" else "req/s"
            cols = [(rate, "rps", 1, True), ("p50 ms", "p50_ms", 2, False),
                    ("p99 ms", "p99_ms", 2, False),
                    ("CPU µs/req", "cpu_us_per_req", 1, False),
                    ("peak RSS MiB", "peak_rss_mib", 1, False),
                    ("origin conns", "origin_conns", 0, False),
                    ("failed", "failed", 0, False)]
            if kind == "page":  # shows whether pushed bodies reached h2load (they do not)
                cols.insert(5, ("body B/req", "data_bytes_per_req", 0, False))
            if kind != "handshake":  # the other core: what the proxy's output costs there
                cols.insert(4, ("h2load CPU µs/req", "client_cpu_us_per_req", 1, False))
                cols.insert(5, ("origin CPU µs/req", "origin_cpu_us_per_req", 1, False))
        out.append("| proxy | " + " | ".join(c[0] for c in cols) + " |")
        out.append("|---|" + "---:|" * len(cols))
        for p in proxies:
            out.append(f"| {p} | " + " | ".join(
                fmt(med(data, s, p, c[1]), c[2]) for c in cols) + " |")
        if base in proxies:
            for o in others:
                out.append(f"| **{base}/{o}** | " + " | ".join(
                    (ratio(med(data, s, base, c[1]), med(data, s, o, c[1]))
                     if c[1] not in ("failed", "data_bytes_per_req", "pushes_per_page",
                                     "kib_per_page", "origin_conns") else "") for c in cols) + " |")
        out.append("")
    if "idle" in scens and any(("idle", p, "bytes_per_conn") in data for p in proxies):
        out.append("#### Memory per idle TLS HTTP/2 connection\n")
        out.append("| proxy | connections held | RSS before MiB | RSS after MiB | bytes/conn | KiB/conn |")
        out.append("|---|---:|---:|---:|---:|---:|")
        for p in proxies:
            bpc = med(data, "idle", p, "bytes_per_conn")
            out.append(f"| {p} | {fmt(med(data, 'idle', p, 'alive'), 0)} | "
                       f"{fmt(med(data, 'idle', p, 'rss_before_mib'), 1)} | "
                       f"{fmt(med(data, 'idle', p, 'rss_after_mib'), 1)} | "
                       f"{fmt(bpc, 0)} | {fmt(bpc / 1024 if bpc is not None else None, 1)} |")
        if base in proxies:
            for o in others:
                out.append(f"| **{base}/{o}** | | | | "
                           f"{ratio(med(data, 'idle', base, 'bytes_per_conn'), med(data, 'idle', o, 'bytes_per_conn'))} | |")
        out.append("")
    print("\n".join(out))


def cmd_summary(raw, proxies, keys, base):
    """One row per ROUND/SCEN: each proxy's median req/s, p99 and CPU per request, and BASE's
    ratios to the others (push: per page load, no rate)."""
    data = load_raw(raw)
    proxies = proxies.split()
    others = [p for p in proxies if p != base] if base in proxies else []
    names = " · ".join(proxies)
    rat = " · ".join(f"/{o}" for o in others)
    cols = [("req/s", "rps", 1), ("p99 ms", "p99_ms", 2), ("CPU µs/req", "cpu_us_per_req", 1)]
    head = ["round", "scenario"]
    for label, _, _ in cols:
        head.append(f"{label}: {names}")
        if others:
            head.append(f"{base}{rat}")
    out = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for k in keys.split():
        if "/" not in k or not any((k, p, "succeeded") in data for p in proxies):
            continue
        rnd, scen = k.split("/", 1)
        row = [rnd, scen]
        for _, key, nd in cols:
            row.append(" · ".join(fmt(med(data, k, p, key), nd) for p in proxies))
            if others:
                row.append(" · ".join(ratio(med(data, k, base, key), med(data, k, o, key))
                                      for o in others))
        out.append("| " + " | ".join(row) + " |")
    print("\n".join(out) + "\n")


# ---------------------------------------------------------------- main

def main(argv):
    if not argv:
        print(__doc__)
        return 2
    cmd = argv[0]
    if cmd == "freeports":
        k = int(argv[1])
        socks, ports = [], []
        for _ in range(k):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
        for s in socks:
            s.close()
        print(" ".join(map(str, ports)))
    elif cmd == "tree":
        for p in tree(int(argv[1])):
            print(p)
    elif cmd == "snap":
        print(*snap(int(argv[1])))
    elif cmd == "rusage":
        return cmd_rusage(argv[1], argv[2:])
    elif cmd == "h2load":
        cmd_h2load(argv[1], argv[2])
    elif cmd == "handshake":
        cmd_handshake(argv[1])
    elif cmd == "nghttp":
        cmd_nghttp(argv[1])
    elif cmd == "report":
        cmd_report(*argv[1:5])
    elif cmd == "summary":
        cmd_summary(*argv[1:5])
    elif cmd == "json":
        print(json.dumps(load_raw(argv[1])))
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
