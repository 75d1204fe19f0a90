"""A dry run without people: simulated participants who take the study through the same HTTP endpoints as a
browser (consent, trial, pictures, answer) and answer every trial with a retriever's argmax."""

from __future__ import annotations

import io
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import httpx
import torch
import uvicorn
from PIL import Image

from egg_zoo_discritune.data_loaders.image_modes import to_rgb

Chooser = Callable[[str, list[Image.Image]], int]
logging.getLogger("httpx").setLevel(logging.WARNING)  # not one log line per request of every participant


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app, host: str = "127.0.0.1", port: Optional[int] = None) -> Iterator[str]:
    """Serves ``app`` with uvicorn in a thread; yields its base URL and stops it on exit."""
    port = port or free_port()
    # A participant's connection idles while the chooser runs; uvicorn's default 5 s keep-alive could close it
    # just as the next request goes out ("Server disconnected"), so it outlasts the client's 60 s timeout.
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_keep_alive=75))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise OSError(f"the study server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def retriever_chooser(retriever, preprocess) -> Chooser:
    """The retriever's pick: the picture whose features score highest with the caption's."""
    @torch.no_grad()
    def choose(caption: str, images: list[Image.Image]) -> int:
        pixels = torch.stack([preprocess(to_rgb(image)) for image in images])
        return int(retriever.score(retriever.encode_texts([caption]), retriever.encode_images(pixels)).argmax())
    return choose


def participate(base_url: str, choose: Chooser) -> Optional[dict]:
    """One simulated participant from consent to completion code; None when the study is full. Returns the
    answers given and the latency of every request."""
    latencies = []

    def timed(method: str, url: str, **kwargs) -> httpx.Response:
        start = time.perf_counter()
        response = client.request(method, url, **kwargs)
        latencies.append(time.perf_counter() - start)
        return response

    with httpx.Client(base_url=base_url, timeout=60) as client:
        started = timed("POST", "/start")
        if started.status_code == 410:
            return None
        if started.status_code != 303:
            raise OSError(f"POST /start answered {started.status_code}")
        token = started.headers["location"].rsplit("/", 1)[-1]
        answers = 0
        while True:
            trial = timed("GET", f"/p/{token}/trial.json").json()
            if trial["done"]:
                return {"token": token, "answers": answers, "completion_code": trial["completion_code"],
                        "latencies_s": latencies}
            shown = time.perf_counter()
            images = [Image.open(io.BytesIO(timed("GET", url).content)) for url in trial["images"]]
            choice = choose(trial["caption"], images)
            response = timed("POST", f"/p/{token}/answer", headers={"accept": "application/json"},
                             data={"position": trial["position"], "choice": choice,
                                   "response_ms": round(1000 * (time.perf_counter() - shown))})
            if response.status_code != 200:
                raise OSError(f"answer {trial['position']} of {token}: HTTP {response.status_code} {response.text}")
            answers += 1


def simulate(base_url: str, choose: Chooser, concurrency: int = 1, limit: Optional[int] = None) -> list[dict]:
    """Simulated participants, ``concurrency`` at a time, until the study is full (or ``limit`` of them)."""
    done: list[dict] = []
    with ThreadPoolExecutor(concurrency) as pool:
        while limit is None or len(done) < limit:
            batch = concurrency if limit is None else min(concurrency, limit - len(done))
            results = list(pool.map(lambda _: participate(base_url, choose), range(batch)))
            done += [r for r in results if r is not None]
            if None in results:
                break
    return done
