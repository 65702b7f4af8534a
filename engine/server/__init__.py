"""The Lockstep server, built on the engine: the HTTP API of the ActivitySmith contract.

    contract/  the HTTP contract's request and response models (msgspec), content rules, errors
    http/      the HTTP front: ASGI app, routes, OpenAPI, Prometheus metrics, the HTTP server
    service/   the Live Activities use cases, devices, and the outbox that feeds the engine
    store/     durable rows: the Store protocol and its SQLite implementation
    settings.py, serve.py, record.py   lockstep.toml, the running server, traffic recording
    keys.py    named API keys with a scope: hashes, the key file, the key ring

The server imports the engine (`engine.open_engine`); the engine never imports the server.
"""
