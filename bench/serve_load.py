"""`make bench-serve`: `mt serve` under load, with and without cross-request batching.

The server runs in its own process with the two shipped models loaded
(de-en and en-de) and listens on 127.0.0.1 only. For each mode it measures
the cold start (process start to the first translation answered) and then,
for 1, 8 and 32 concurrent clients (threads, each with one keep-alive
connection), a fixed number of requests of one Multi30k test2016 sentence
each: sentences/s, latency percentiles, errors, the mean batch the worker
translated, and whether every answer equals `mt translate --beam 5`'s line
for that sentence (run once, as the reference). The server's peak RSS is
read from /proc at the end of each mode. Writes JSON and prints a Markdown table.

    python bench/serve_load.py                    # 2,000 requests per level (several minutes on 2 cores)
    python bench/serve_load.py --requests 200     # a quick look
    python bench/serve_load.py --no-quantize --modes on --clients 1,32   # fp32, batching only
"""

from __future__ import annotations

import http.client
import itertools
import json
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from benchmark import machine  # bench/benchmark.py: the same machine record

app = typer.Typer(add_completion=False, rich_markup_mode=None)
HOST = "127.0.0.1"  # the benchmark never reaches beyond this machine
STARTUP_SECONDS = 300
DEFAULT_SOURCE = Path("data/multi30k/test_2016_flickr.de.gz")


def reference_translations(
    model: str, sentences: list[str], beam: int, quantize: bool | None
) -> tuple[list[str], float]:
    """`mt translate --beam N [--quantize | --no-quantize] < file`'s lines, and the seconds it took."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mt", "translate", "--model", model, "--beam", str(beam)]
        + ([] if quantize is None else ["--quantize" if quantize else "--no-quantize"]),
        input="".join(s + "\n" for s in sentences),
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stdout.splitlines()
    if len(lines) != len(sentences):
        raise SystemExit(f"error: mt translate gave {len(lines)} lines for {len(sentences)} sentences")
    return lines, time.perf_counter() - started


class Server:
    """`mt.server.serve` in a subprocess on a free port of 127.0.0.1."""

    def __init__(self, options: dict):
        code = "import json, sys; from mt.server import serve; serve(**json.loads(sys.argv[1]))"
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, json.dumps({"host": HOST, "port": 0, **options})],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._announced = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._announced.wait(STARTUP_SECONDS):
            self.stop()
            raise SystemExit("error: the server did not start:\n" + "\n".join(self.lines))
        self.port = int(next(line for line in self.lines if line.startswith("serving ")).rsplit(":", 1)[1].split()[0])

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("serving "):
                self._announced.set()

    def request(
        self, connection: http.client.HTTPConnection, method: str, path: str, body: dict | None = None
    ) -> tuple[int, Any]:
        payload = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=payload, headers={"Content-Type": "application/json"} if payload else {})
        response = connection.getresponse()
        return response.status, json.loads(response.read())

    def health(self) -> dict:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=60)
        try:
            return self.request(connection, "GET", "/health")[1]
        finally:
            connection.close()

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def first_answer(server: Server, sentence: str) -> float:
    """Seconds from the server's process start to its first translation (connections are refused until it has loaded its models)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection(HOST, server.port, timeout=STARTUP_SECONDS)
        try:
            status, _ = server.request(
                connection, "POST", "/translate", {"q": sentence, "source": "de", "target": "en"}
            )
            if status == 200:
                return time.perf_counter() - server.started
        except OSError:
            time.sleep(0.01)
        finally:
            connection.close()
    raise SystemExit("error: the server never answered")


def load(server: Server, sentences: list[str], expected: list[str], clients: int, requests: int, beam: int) -> dict:
    """`requests` requests from `clients` threads; request i sends sentence i mod len(sentences)."""
    numbers = itertools.count()  # next() on a count is atomic in CPython: each number goes to one thread
    latencies: list[float] = []
    errors, mismatches = [0], [0]
    lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection(HOST, server.port, timeout=120)
        while (i := next(numbers)) < requests:
            index = i % len(sentences)
            body = {"q": sentences[index], "source": "de", "target": "en", "beam": beam}
            started = time.perf_counter()
            try:
                status, answer = server.request(connection, "POST", "/translate", body)
            except (OSError, http.client.HTTPException, ValueError):
                status, answer = 0, None
                connection.close()
                connection = http.client.HTTPConnection(HOST, server.port, timeout=120)
            elapsed = time.perf_counter() - started
            with lock:
                if status != 200:
                    errors[0] += 1
                    continue
                latencies.append(elapsed)
                mismatches[0] += answer["translatedText"] != expected[index]
        connection.close()

    before = server.health()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    after = server.health()
    percentiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    batches = after["batches"] - before["batches"]
    return {
        "clients": clients,
        "requests": requests,
        "seconds": seconds,
        "sentences_per_second": len(latencies) / seconds,
        "latency_ms_p50": 1000 * percentiles[49],
        "latency_ms_p95": 1000 * percentiles[94],
        "latency_ms_p99": 1000 * percentiles[98],
        "errors": errors[0],
        "mismatches": mismatches[0],
        "batches": batches,
        "mean_batch": (after["requests"] - before["requests"]) / max(1, batches),
    }


def table(results: dict) -> str:
    rows = [
        "| batching | clients | sentences/s | p50 ms | p95 ms | p99 ms | errors | differ from `mt translate` | mean batch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in results["modes"]:
        for r in mode["levels"]:
            rows.append(
                f"| {mode['name']} | {r['clients']} | {r['sentences_per_second']:.1f} | {r['latency_ms_p50']:.0f} | {r['latency_ms_p95']:.0f} | "
                f"{r['latency_ms_p99']:.0f} | {r['errors']} | {r['mismatches']} / {r['requests'] - r['errors']} | {r['mean_batch']:.1f} |"
            )
    rows.append("")
    for mode in results["modes"]:
        rows.append(
            f"batching {mode['name']}: cold start to first answer {mode['cold_start_seconds']:.2f} s, "
            f"server peak RSS {mode['peak_rss_mb']:.0f} MB (two models)"
        )
    rows.append(
        f"reference: `mt translate --beam {results['beam']}` of {results['sentences']} sentences "
        f"in one process: {results['reference_seconds']:.1f} s"
    )
    return "\n".join(rows)


@app.command()
def main(
    source: Annotated[Path, typer.Option(help="German sentences, one per line (.gz allowed).")] = DEFAULT_SOURCE,
    model: Annotated[
        str, typer.Option(help="The de->en model the reference and the server use.")
    ] = "checkpoints/de-en",
    other_model: Annotated[str, typer.Option(help="The second model the server loads.")] = "checkpoints/en-de",
    requests: Annotated[int, typer.Option(help="Requests per concurrency level.")] = 2000,
    clients: Annotated[str, typer.Option(help="Concurrency levels, comma-separated.")] = "1,8,32",
    beam: Annotated[int, typer.Option(help="Beam size of every request and of the reference.")] = 5,
    batch_wait_ms: Annotated[float, typer.Option(help="The server's wait for batch mates.")] = 5.0,
    quantize: Annotated[
        bool | None,
        typer.Option(
            "--quantize/--no-quantize",
            help="int8 or fp32 in the server and the reference. [default: mt's, int8 on x86 CPUs]",
            show_default=False,
        ),
    ] = None,
    modes: Annotated[str, typer.Option(help="Batching on, off or both: on,off.")] = "on,off",
    output: Annotated[Path, typer.Option(help="Where to write the JSON results.")] = Path("runs/bench/serve_load.json"),
):
    """Load-test `mt serve` with and without cross-request batching; print a Markdown table."""
    import torch

    from mt.files import read_lines
    from mt.quantize import int8_by_default

    levels = [int(level) for level in clients.split(",")]
    if requests < 1 or not all(1 <= level <= 256 for level in levels):
        raise SystemExit("error: --requests must be >= 1 and each client level between 1 and 256")
    if not set(modes.split(",")) <= {"on", "off"}:
        raise SystemExit("error: --modes takes on, off or on,off")
    sentences = read_lines(source)
    expected, reference_seconds = reference_translations(model, sentences, beam, quantize)
    results: dict[str, Any] = {
        "machine": machine(),
        "sentences": len(sentences),
        "beam": beam,
        "batch_wait_ms": batch_wait_ms,
        "quantize": int8_by_default(torch.device("cpu")) if quantize is None else quantize,
        "reference_seconds": reference_seconds,
        "modes": [],
    }
    for name in modes.split(","):
        batching = name == "on"
        options = {"models": [model, other_model], "batch_wait_ms": batch_wait_ms, "batching": batching}
        server = Server({**options, "quantize": quantize})
        try:
            mode = {"name": name, "cold_start_seconds": first_answer(server, sentences[0]), "levels": []}
            for level in levels:
                mode["levels"].append(load(server, sentences, expected, level, requests, beam))
                print(
                    f"batching {name}, {level} clients: {mode['levels'][-1]['sentences_per_second']:.1f} sentences/s",
                    file=sys.stderr,
                )
            mode["peak_rss_mb"] = server.peak_rss_mb()
        finally:
            server.stop()
        results["modes"].append(mode)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    machine_record = results["machine"]
    print(
        f"{machine_record['cpu']}, {machine_record['cores']} cores, torch {machine_record['torch']}, {machine_record['date']}"
    )
    print(table(results))
    print(f"results: {output}")


if __name__ == "__main__":
    app()
