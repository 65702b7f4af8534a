"""The HTTP front: the ASGI app of the API, its OpenAPI document, Prometheus metrics, the server.

Wiring: a `PromMetrics` is the engine's listener; `create_app(service, api_keys=...,
device_keys=..., metrics=metrics, openapi=build_openapi())` builds the ASGI app over any
`ApiService` (the typed seam, `http.seam`; the real one is `engine.server.service.Service`);
`await nursery.start(serve_http, app, host, port)` serves it and reports the bound port.

Inside, dependencies run one way: `app` -> `routes` (the route table) -> `endpoint` (its
vocabulary) -> `seam` (the service protocol); `openapi` reads the same table.
"""

from engine.server.http.app import ApiApp, create_app
from engine.server.http.openapi import build_openapi
from engine.server.http.prom import PromMetrics
from engine.server.http.seam import ApiService
from engine.server.http.server import serve_http

__all__ = ["ApiApp", "ApiService", "PromMetrics", "build_openapi", "create_app", "serve_http"]
