"""The FastAPI fan-out peer on uvicorn: the Python counterpart of
../node/fanout.js, speaking the same subset of courtside's protocol with the
same message shapes:

  WebSocket /v1/live: {"op":"subscribe","match":ID} -> {"type":"subscribed","match":ID}
  POST /v1/events (JSON event) -> broadcast {"type":"event","match":ID,"seq":N,"event":{...}}
    to every subscriber of that match.

The sequence number is the event's own, as in the Node peer, so the fan-out
client's gap and duplicate counts mean the same thing for both. No history,
no bounded queues, no authentication: the idiomatic minimal server, written
the way FastAPI's documentation broadcasts (await each subscriber's send in
turn), which is what courtside is compared against.

Usage: python fanout.py [port]
"""
import json
import sys

import uvicorn
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

app = FastAPI()
channels: dict[str, set[WebSocket]] = {}  # match id -> subscribers

# JSON.stringify leaves out fields that are undefined; this marks them so
# the messages have the Node peer's shape for any input.
MISSING = object()


def dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def present(**fields) -> dict:
    return {key: value for key, value in fields.items() if value is not MISSING}


def reject_constant(name: str):
    # JSON.parse refuses NaN and Infinity; Python's parser would accept them.
    raise ValueError(f"Unexpected token {name} in JSON")


@app.post("/v1/events")
async def publish(request: Request):
    try:
        event = json.loads(await request.body(), parse_constant=reject_constant)
    except ValueError as err:
        return JSONResponse({"error": {"code": "invalid_event", "message": str(err)}}, status_code=400)
    fields = event if isinstance(event, dict) else {}
    match = fields.get("match_id", MISSING)
    seq = fields.get("seq", MISSING)
    message = dumps(present(type="event", match=match, seq=seq, event=event))
    # A send returns at once unless that subscriber's socket buffer is full;
    # then the publish waits for it, where Node's ws.send would buffer without
    # bound. A snapshot, since a subscriber may leave during such a wait.
    subscribers = tuple(channels.get(match, ())) if isinstance(match, str) else ()
    for ws in subscribers:
        try:
            await ws.send_text(message)
        except (WebSocketDisconnect, RuntimeError):
            # Gone mid-broadcast: Node's ws.send ignores a closed socket too,
            # and the receive loop below removes it.
            pass
    return JSONResponse(present(status="applied", match=match, seq=seq))


@app.get("/healthz")
async def healthz():
    return {"status": "ok"}


@app.websocket("/v1/live")
async def live(ws: WebSocket):
    await ws.accept()
    mine: set[str] = set()
    try:
        while True:
            incoming = await ws.receive()
            if incoming["type"] == "websocket.disconnect":
                break
            data = incoming.get("text")
            if data is None:
                data = incoming.get("bytes")
            try:
                command = json.loads(data, parse_constant=reject_constant)
            except (TypeError, ValueError):
                continue
            if not isinstance(command, dict):
                continue
            match = command.get("match")
            if command.get("op") == "subscribe" and isinstance(match, str):
                channels.setdefault(match, set()).add(ws)
                mine.add(match)
                await ws.send_text(dumps({"type": "subscribed", "match": match}))
    except WebSocketDisconnect:
        pass
    finally:
        for match in mine:
            channels.get(match, set()).discard(ws)


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8001
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
