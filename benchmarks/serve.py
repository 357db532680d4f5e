"""Latency and throughput of ``hw_asr.tools.serve`` on this machine, PyTorch against its ONNX export.

    python benchmarks/serve.py -r <checkpoint or run folder> [--audio file] [--seconds 10] [--requests 20]
        [--clients 4] [--max-wall-s 60] [--threads N]

For each runtime a server is started on 127.0.0.1 (a free port, in this process), then over loopback:
- **latency**: ``--requests`` requests one after another with a ``--seconds`` long file (``--audio`` cut or
  repeated to that length; default: the bundled sample repeated), median and 90th percentile;
- **throughput**: ``--clients`` clients sending the same file at once, each ``--requests`` requests or until
  ``--max-wall-s`` has passed (a bounded loop), as requests per second.
The ONNX export is written next to the checkpoint (``.onnx``) unless it is there already.
"""

import argparse
import io
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from hw_asr.audio import load_audio  # noqa: E402
from hw_asr.checkpoint import find_checkpoint  # noqa: E402
from hw_asr.tools import serve  # noqa: E402

SAMPLE = REPO / "hw_asr" / "data" / "sample" / "audio" / "sample_00.flac"


def test_file(path, seconds, sample_rate=16000):
    """FLAC bytes of ``path``'s audio cut or repeated to ``seconds``."""
    audio = load_audio(path, sample_rate)
    n = int(seconds * sample_rate)
    audio = np.tile(audio, -(-n // len(audio)))[:n]
    buf = io.BytesIO()
    sf.write(buf, audio, sample_rate, format="FLAC")
    return buf.getvalue()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A uvicorn server for ``transcriber`` in a thread of this process, on a free loopback port; as a
    context manager it yields the server's base URL once it is serving."""

    def __init__(self, transcriber):
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(serve.create_app(transcriber), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise SystemExit("error: the server did not start within 30 s")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}/"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)


def post(client, url, data):
    start = time.perf_counter()
    r = client.post(url, files={"file": ("bench.flac", data, "audio/flac")}, timeout=300)
    r.raise_for_status()
    return time.perf_counter() - start


def measure(transcriber, data, requests, clients, max_wall_s):
    import httpx

    with Server(transcriber) as base, httpx.Client() as client:
        url = base + "transcribe"
        post(client, url, data)  # warm-up
        latencies = [post(client, url, data) for _ in range(requests)]
        stop = time.perf_counter() + max_wall_s

        def worker(_):
            done = 0
            with httpx.Client() as own:
                while done < requests and time.perf_counter() < stop:
                    post(own, url, data)
                    done += 1
            return done

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            total = sum(pool.map(worker, range(clients)))
        wall = time.perf_counter() - start
    return {
        "latency_median_s": statistics.median(latencies),
        "latency_p90_s": float(np.percentile(latencies, 90)),
        "concurrent_requests": total,
        "requests_per_s": total / wall,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-r", "--resume", required=True, help="checkpoint or run folder")
    parser.add_argument("--audio", default=str(SAMPLE), help="audio to cut or repeat to --seconds")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=20, help="sequential requests; also per client")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--max-wall-s", type=float, default=60.0, help="cap on the concurrent phase per runtime")
    parser.add_argument("--threads", type=int, default=None, help="torch / onnxruntime threads (default: all)")
    parser.add_argument("--runtimes", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx"])
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = find_checkpoint(args.resume, prefer_best=True)
    data = test_file(args.audio, args.seconds)
    rows = []
    for runtime in args.runtimes:
        source = checkpoint
        if runtime == "onnx":
            source = checkpoint.with_suffix(".onnx")
            if not source.is_file():
                from hw_asr.tools import export_onnx

                export_onnx.main(["-r", str(checkpoint), "-o", str(source)])
        transcriber = serve.load_transcriber(source, checkpoint, "argmax", threads=args.threads, max_seconds=3600)
        rows.append({"runtime": runtime, **measure(transcriber, data, args.requests, args.clients, args.max_wall_s)})
        print(rows[-1], flush=True)
    print(f"\n{checkpoint}, {args.seconds:g} s of audio per request, greedy decoding, {args.clients} clients:\n")
    print("| runtime | latency median (s) | latency p90 (s) | requests/s, concurrent | concurrent requests |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['runtime']} | {r['latency_median_s']:.3f} | {r['latency_p90_s']:.3f} "
            f"| {r['requests_per_s']:.2f} | {r['concurrent_requests']} |"
        )
    return rows


if __name__ == "__main__":
    main()
