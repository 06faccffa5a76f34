"""The baseline: a bare Starlette endpoint that only reads the body and answers 200.

It also stands in for the tracking API (`/track/lead`, `/track/sale`) in the benchmarks.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def webhook(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[
    Route("/webhooks/{source}", webhook, methods=["POST"]),
    Route("/track/{kind}", webhook, methods=["POST"]),
])
