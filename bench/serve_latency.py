"""One client's latency against `mt serve`: a reused connection against a new connection per call.

A client that keeps its connection (requests.Session, httpx.Client) sends each request as
a small write on an idle connection. Without TCP_NODELAY on the server's side, the server's
answer can wait for the client's delayed ACK (Nagle's algorithm), about 40-50 ms a call.
This script starts the server (the shipped de-en and en-de models, 127.0.0.1 only), then
sends the same short sentence `--calls` times one after another, first over one reused
connection and then over a new connection per call, and prints the median and the 90th
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


def timed_calls(url: str, calls: int, reuse: bool) -> list[float]:
    """Milliseconds per POST /translate, over one connection (`reuse`) or a new one each call."""
    times = []
    with httpx.Client(base_url=url, trust_env=False, timeout=60) as shared:
        for _ in range(calls):
            started = time.perf_counter()
            if reuse:
                response = shared.post("/translate", json=BODY)
            else:
                with httpx.Client(base_url=url, trust_env=False, timeout=60) as fresh:
                    response = fresh.post("/translate", json=BODY)
            times.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    return times


@app.command()
def main(
    calls: Annotated[int, typer.Option(help="Calls per way of connecting.")] = 200,
    warmup: Annotated[int, typer.Option(help="Calls before measuring.")] = 10,
) -> None:
    server = Server({})
    try:
        url = f"http://127.0.0.1:{server.port}"
        timed_calls(url, warmup, reuse=True)
        print(f"{calls} sequential calls of one sentence, one client:")
        for reuse, label in ((True, "reused connection"), (False, "new connection per call")):
            times = timed_calls(url, calls, reuse)
            p90 = statistics.quantiles(times, n=10)[-1]
            print(f"  {label:24s} median {statistics.median(times):6.1f} ms, p90 {p90:6.1f} ms")
    finally:
        server.stop()


if __name__ == "__main__":
    app()
