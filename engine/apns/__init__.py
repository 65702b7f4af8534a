"""The engine's APNs client: provider tokens, TLS streams, sans-IO HTTP/2, connections, pool."""
