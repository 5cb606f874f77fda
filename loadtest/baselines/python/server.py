"""The FastAPI peer on uvicorn, as the argument writes it.

`/slow` awaits asyncio.sleep(0.2); `/compute` runs the sum of square roots
on a ProcessPoolExecutor(max_workers=4) via run_in_executor; `/bad` is the
anti-pattern (time.sleep in an async route); `/compute-blocking` runs the
loop in the async handler. The original's typos fixed (`i ** 0.5`,
`get_event_loop`, `run_in_executor`, `20_000_000`), nothing weakened.

Usage: python server.py [port]
"""
import asyncio
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import uvicorn
from fastapi import FastAPI

app = FastAPI()
executor = None


def expensive_computation(n: int) -> float:
    total = 0.0
    for i in range(n):
        total += i ** 0.5
    return total


async def simulate_slow_io():
    await asyncio.sleep(0.2)


@app.on_event("startup")
async def start_pool():
    global executor
    executor = ProcessPoolExecutor(max_workers=4)


@app.get("/slow")
async def slow():
    await simulate_slow_io()
    return {"status": "ok", "t": int(time.time() * 1000)}


@app.get("/compute")
async def compute(n: int = 20_000_000):
    loop = asyncio.get_event_loop()
    result = await loop.run_in_executor(executor, expensive_computation, n)
    return {"result": result}


@app.get("/compute-blocking")
async def compute_blocking(n: int = 20_000_000):
    return {"result": expensive_computation(n)}


@app.get("/bad")
async def bad():
    # Blocks the event loop; requests pile up.
    time.sleep(0.2)
    return {"status": "ok"}


@app.get("/healthz")
async def healthz():
    return {"status": "ok"}


@app.get("/")
async def root():
    return "hello"


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
