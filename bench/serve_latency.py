"""One client's latency against `mt serve`: a reused connection against a new connection per call.

A client that keeps its connection (requests.Session, httpx.Client) sends each request as
a small write on an idle connection. Without TCP_NODELAY on the server's side, the server's
answer can wait for the client's delayed ACK (Nagle's algorithm), about 40-50 ms a call.
This script starts the server (the shipped de-en and en-de models, 127.0.0.1 only), then
sends the same short sentence `--calls` times one after another, first over reused
connections (`--per-connection` calls on each) and then over a new connection per call, and prints the median and the 90th
percentile of each.

    python bench/serve_latency.py                 # 200 calls each way
    python bench/serve_latency.py --calls 50      # a quick look
"""

from __future__ import annotations

import statistics
import time
from typing import Annotated

import httpx
import typer
from serve_load import Server  # bench/serve_load.py: mt serve in a subprocess on a free port

app = typer.Typer(add_completion=False, rich_markup_mode=None)
BODY = {"q": "Zwei Männer sitzen auf einer Bank.", "source": "de", "target": "en"}


def _client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, trust_env=False, timeout=60)  # no proxy: 127.0.0.1 only


def timed_calls(url: str, calls: int, per_connection: int) -> list[float]:
    """Milliseconds per POST /translate, `per_connection` calls on each connection (1: a new
    one each call). Whether the delayed ACK bites varies from connection to connection (the
    kernel's quick-ACK mode), so a reused connection is measured over several."""
    times = []
    for _ in range(0, calls, per_connection):
        with _client(url) as client:
            for _ in range(per_connection):
                started = time.perf_counter()
                client.post("/translate", json=BODY).raise_for_status()
                times.append((time.perf_counter() - started) * 1000)
    return times


@app.command()
def main(
    calls: Annotated[int, typer.Option(help="Calls per way of connecting.")] = 200,
    per_connection: Annotated[int, typer.Option(help="Calls on each reused connection.")] = 20,
    warmup: Annotated[int, typer.Option(help="Calls before measuring.")] = 10,
) -> None:
    server = Server({})
    try:
        url = f"http://127.0.0.1:{server.port}"
        timed_calls(url, warmup, warmup)
        print(f"{calls} sequential calls of one sentence, one client:")
        for reused, label in (
            (per_connection, f"reused ({per_connection} a connection)"),
            (1, "new connection per call"),
        ):
            times = timed_calls(url, calls, reused)
            p90 = statistics.quantiles(times, n=10)[-1]
            print(f"  {label:30s} median {statistics.median(times):6.1f} ms, p90 {p90:6.1f} ms")
    finally:
        server.stop()


if __name__ == "__main__":
    app()
