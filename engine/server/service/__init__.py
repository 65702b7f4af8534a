"""Live Activities service: the use cases behind the HTTP API and the embedded Python API.

`open_service(engine, store)` gives a `Service` with `.live` (start / update / end / stream /
end_stream) and `.devices` (register / unregister / report_token / list).
"""

from engine.server.service.live import LiveActivities, LiveConfig
from engine.server.service.service import Service, ServiceConfig, open_service

__all__ = ["LiveActivities", "LiveConfig", "Service", "ServiceConfig", "open_service"]
