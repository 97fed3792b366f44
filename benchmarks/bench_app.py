"""A whole class drawing at once: latency of the web app's Draw answer under N concurrent users.

Starts `digitlab app` on 127.0.0.1 (a separate process, as a teacher would), then for each N
fires N requests at the same instant through `gradio_client` (one client per simulated learner,
made once and reused for every round; each request uploads a real drawing as the Sketchpad
does) and reports p50/p90/max latency, throughput, errors, the load average, and the CPU seconds
the server and the benchmark's own clients spent. The clients run on the same cores as the
server (a real class brings its own machines), so they are kept cheap: one shared TLS context
(see `cheap_client`). Every request has a deadline, and each round is bounded in count, so the
benchmark always ends.

"ours": the app as shipped (requests batched across users). "reference": the same app with
batching switched off (`max_batch=1`: one request at a time behind the models' lock, as
before), measured at the largest N only. ours_s / reference_s are the median latencies there.

    python benchmarks/bench_app.py [--data-dir DIR] [--users 1,10,40] [--rounds 3]
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from _common import emit, parser

LAUNCH = """
import sys
from digitlab import app, app_handlers as h
m = h.load_models(sys.argv[1] or None)
m.batcher = h.PredictionBatcher(m, max_batch=int(sys.argv[3]))
app.serve(m, port=int(sys.argv[2]))
"""


def cpu_line() -> str:
    import torch

    model = platform.processor() or ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        model = info.get("Model name", model).strip()
        flags = info.get("Flags", "")
        wanted = [
            f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags
        ]
    except (OSError, ValueError):
        wanted = []
    return (
        f"CPU: {model}, {os.cpu_count()} logical CPUs, torch capability "
        f"{torch.backends.cpu.get_cpu_capability()}, flags {' '.join(wanted) or '?'}"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(data_dir: str | None, max_batch: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, data_dir or "", str(port), str(max_batch)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"the app exited: {proc.stderr.read()[-2000:]}") from None
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the app did not start within 180 s")


def drawings(n: int, folder: Path) -> list[Path]:
    """n different digit-like drawings as the Sketchpad sends them: black ink on transparency."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        im = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
        d = ImageDraw.Draw(im)
        x0, y0 = rng.integers(60, 120, 2)
        if i % 2:  # a "1"
            d.line(
                [(x0 + 60, y0), (x0 + 50 + rng.integers(0, 20), y0 + 150)], fill="black", width=14
            )
        else:  # a "0"
            d.ellipse([x0, y0, x0 + 90, y0 + 140], outline="black", width=14)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        paths.append(folder / f"draw{i}.png")
        paths[-1].write_bytes(buf.getvalue())
    return paths


_TLS = None


def cheap_client(url: str):
    """A gradio_client.Client that does not build a TLS context for each HTTP call.

    gradio_client calls httpx.post/stream per request (upload, join the queue, read the event
    stream), and httpx builds a fresh TLS context, reading the CA bundle, for each: ~60% of the
    benchmark clients' CPU when profiled. The app is plain http on loopback, so no TLS is used;
    one prebuilt context (passed where httpx takes `verify`) removes that cost.
    """
    import ssl

    from gradio_client import Client

    global _TLS
    if _TLS is None:
        _TLS = ssl.create_default_context()
    return Client(url, verbose=False, download_files=False, ssl_verify=_TLS)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> float:
    return os.getloadavg()[0]


def fire(
    clients: list, users: int, rounds: int, files: list[Path], timeout: float, pid: int
) -> dict:
    """`rounds` bursts of `users` simultaneous Draw requests; latencies of every request."""
    from gradio_client import handle_file

    clients = clients[:users]
    server0, own0, load0 = process_cpu_s(pid), time.process_time(), load_average()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start_all = time.perf_counter()
    for r in range(rounds):
        barrier = threading.Barrier(users)

        def one(i: int, r: int = r, barrier: threading.Barrier = barrier) -> None:
            path = handle_file(str(files[(i + r) % len(files)]))
            value = {"background": None, "layers": [], "composite": path}
            barrier.wait()
            t0 = time.perf_counter()
            try:
                job = clients[i].submit(value, api_name="/classify")
                out = job.result(timeout=timeout)
                ok = "The CNN reads" in str(out[-1])
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    if not ok:
                        errors.append(f"unexpected answer {str(out[-1])[:80]}")
            except Exception as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:120])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(users)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout + 30)
    wall = time.perf_counter() - start_all
    server_cpu, client_cpu = process_cpu_s(pid) - server0, time.process_time() - own0
    lat = np.sort(np.array(latencies)) if latencies else np.array([np.nan])
    return {
        "users": users,
        "requests": users * rounds,
        "answered": len(latencies),
        "errors": len(errors),
        "error_examples": errors[:3],
        "p50_s": float(np.percentile(lat, 50)),
        "p90_s": float(np.percentile(lat, 90)),
        "max_s": float(lat.max()),
        "throughput_per_s": len(latencies) / wall,
        "load_before": load0,
        "load_after": load_average(),
        "server_cpu_ms_per_request": 1000 * server_cpu / (users * rounds),
        "client_cpu_ms_per_request": 1000 * client_cpu / (users * rounds),
    }


def measure(data_dir, max_batch, user_counts, rounds, files, timeout) -> list[dict]:
    proc, url = start_app(data_dir, max_batch)
    clients: list = []
    try:
        clients = [cheap_client(url) for _ in range(max([*user_counts, 2]))]
        fire(clients, 2, 1, files, timeout, proc.pid)  # warm-up: first CNN/kNN call
        return [
            fire(clients, n, rounds if n > 1 else 3 * rounds, files, timeout, proc.pid)
            for n in user_counts
        ]
    finally:
        for c in clients:
            with contextlib.suppress(Exception):
                c.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument(
        "--users", default="1,10,40", help="concurrent users per burst (default 1,10,40)"
    )
    p.add_argument("--rounds", type=int, default=3, help="bursts per user count (default 3)")
    p.add_argument("--timeout", type=float, default=60.0, help="deadline per request, seconds")
    p.add_argument("--no-reference", action="store_true", help="skip the unbatched app")
    args = p.parse_args()
    users = [int(u) for u in args.users.split(",")]
    print(cpu_line())
    with tempfile.TemporaryDirectory() as tmp:
        files = drawings(8, Path(tmp))
        ours = measure(args.data_dir, 64, users, args.rounds, files, args.timeout)
        ref = (
            None
            if args.no_reference
            else measure(args.data_dir, 1, users[-1:], args.rounds, files, args.timeout)
        )
    print(
        f"{'app':>10s} {'users':>5s} {'reqs':>5s} {'p50 s':>7s} {'p90 s':>7s} {'max s':>7s} "
        f"{'req/s':>6s} {'errors':>6s} {'load':>9s} {'srv ms':>6s} {'cli ms':>6s}"
    )
    for name, rows in (("batched", ours), ("one-by-one", ref or [])):
        for r in rows:
            print(
                f"{name:>10s} {r['users']:5d} {r['requests']:5d} {r['p50_s']:7.2f} "
                f"{r['p90_s']:7.2f} {r['max_s']:7.2f} {r['throughput_per_s']:6.1f} "
                f"{r['errors']:6d} {r['load_before']:4.1f}>{r['load_after']:4.1f} "
                f"{r['server_cpu_ms_per_request']:6.0f} {r['client_cpu_ms_per_request']:6.0f}"
            )
            for e in r["error_examples"]:
                print(f"           error: {e}")
    top, ref_top = ours[-1], (ref[-1] if ref else None)
    emit(
        {
            "benchmark": "app",
            "ours_s": top["p50_s"],
            "reference_s": ref_top["p50_s"] if ref_top else None,
            "ratio": (ref_top["p50_s"] / top["p50_s"]) if ref_top else None,
            "users": top["users"],
            "p90_s": top["p90_s"],
            "max_s": top["max_s"],
            "errors": sum(r["errors"] for r in ours),
            "per_users": {
                str(r["users"]): {k: v for k, v in r.items() if k != "error_examples"} for r in ours
            },
            "reference_max_s": ref_top["max_s"] if ref_top else None,
        }
    )


if __name__ == "__main__":
    main()
