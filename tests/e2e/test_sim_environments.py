"""Both APNs environments and certificate auth over real TLS on 127.0.0.1 (apns.md §1, §9).

A simulator with a sandbox listener and a production one, reached with the test HTTP/2 client over
`ssl` + trio: token auth on each endpoint (a token of the other environment is `BadDeviceToken`),
client certificates from the simulator's CA (warm from the first SETTINGS, no `authorization`
needed, `BadCertificateEnvironment`, `BadCertificate`, Live Activities still wanting a token), and
a certificate from another CA refused at the handshake.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from engine.apns.auth import ProviderToken
from simulator.apns import SimulatorConfig
from simulator.certs import ensure_certificates
from simulator.clientcert import client_pem, issue_client_certificate
from simulator.runner import Endpoints, Simulator
from simulator.validation import TokenKind
from tests.helpers.h2client import H2TestClient, Response
from tests.helpers.httpget import request_json
from tests.helpers.simkit import start_body
from tests.helpers.tlskit import two_environments

pytestmark = pytest.mark.e2e

BUNDLE = SimulatorConfig().bundle_id
LIVE_TOPIC = BUNDLE + ".push-type.liveactivity"
ALERT_BODY = json.dumps({"aps": {"alert": {"title": "Hello", "body": "from the backend"}}}).encode()


def running(
    tmp_path: Path, **config: Any
) -> AbstractAsyncContextManager[tuple[Simulator, Endpoints]]:
    """A simulator with a sandbox listener and a production one, and the control API."""
    return two_environments(tmp_path, seed=5, control_port=0, **config)


async def _open(sim: Simulator, port: int, cert: Path | None = None) -> H2TestClient:
    """An HTTP/2 client over TLS trusting the simulator's CA, presenting `cert` if given."""
    assert sim.certs is not None
    ctx = ssl.create_default_context(cafile=str(sim.certs.ca))
    ctx.set_alpn_protocols(["h2"])
    if cert is not None:
        ctx.load_cert_chain(str(cert))
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, ctx, server_hostname="localhost")
    await stream.do_handshake()
    client = H2TestClient(stream)
    await client.start()
    await client.pump()  # the server's SETTINGS
    return client


def _alert_headers(
    client: H2TestClient, token: str, jwt: str | None = None
) -> list[tuple[str, str]]:
    headers = client.headers(token, jwt, BUNDLE)
    return [(k, "alert" if k == "apns-push-type" else v) for k, v in headers]


def _jwt(sim: Simulator) -> str:
    return ProviderToken.issue(sim.key, int(time.time())).value


def _tokens(sim: Simulator, device: str) -> tuple[str, str]:
    """(push-to-start token, app token) of a simulated device."""
    d = sim.apns.registry.devices[device]
    return d.push_to_start_token, d.app_tokens[TokenKind.DEVICE]


def _outcome(r: Response) -> tuple[int | None, str | None]:
    return r.status, r.reason


async def test_token_auth_on_each_environment(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running(tmp_path) as (sim, ends):
            assert ends.other_apns_port is not None
            sandbox_pts, _ = _tokens(sim, "iphone-1")
            production_pts, _ = _tokens(sim, "prod-phone")
            jwt = _jwt(sim)
            sandbox = await _open(sim, ends.apns_port)
            production = await _open(sim, ends.other_apns_port)
            for client, token, expected in (
                (sandbox, sandbox_pts, (200, None)),
                (production, sandbox_pts, (400, "BadDeviceToken")),
                (production, production_pts, (200, None)),
                (sandbox, production_pts, (400, "BadDeviceToken")),
            ):
                r = await client.request(
                    client.headers(token, jwt, LIVE_TOPIC), start_body(ts=int(time.time()))
                )
                assert _outcome(r) == expected, (token, expected)
            assert sim.apns.counters.rejected == {"BadDeviceToken": 2}

            status, info = await request_json("GET", f"http://127.0.0.1:{ends.control_port}/info")
            assert status == 200 and info["environment"] == "sandbox"
            assert info["apns_urls"] == {
                "sandbox": f"https://127.0.0.1:{ends.apns_port}",
                "production": f"https://127.0.0.1:{ends.other_apns_port}",
            }
            assert info["apns_url"] == info["apns_urls"]["sandbox"]
            assert info["client_certificates"] == {
                env: str(path.resolve()) for env, path in sim.client_certificates.items()
            }
            assert set(info["client_certificates"]) == {"sandbox", "production"}


async def test_certificate_auth(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running(tmp_path, warm_max_streams=1000) as (sim, ends):
            assert ends.other_apns_port is not None
            certs = sim.client_certificates
            pts, app = _tokens(sim, "iphone-1")
            _, prod_app = _tokens(sim, "prod-phone")

            client = await _open(sim, ends.apns_port, certs["sandbox"])
            assert client.max_streams == 1000  # warm from the start (apns.md §9, observed)
            r = await client.request(_alert_headers(client, app), ALERT_BODY)
            assert _outcome(r) == (200, None)  # no authorization header needed
            # A Live Activity push wants token auth even over a certificate (apns.md §9).
            live = client.headers(pts, None, LIVE_TOPIC)
            r = await client.request(live, start_body(ts=int(time.time())))
            assert _outcome(r) == (403, "MissingProviderToken")
            live = client.headers(pts, _jwt(sim), LIVE_TOPIC)
            r = await client.request(live, start_body(ts=int(time.time())))
            assert _outcome(r) == (200, None)
            # A topic the certificate does not cover.
            r = await client.request(
                [(k, "com.example.other" if k == "apns-topic" else v) for k, v in
                 _alert_headers(client, app)],
                ALERT_BODY,
            )  # fmt: skip
            assert _outcome(r) == (400, "TopicDisallowed")

            wrong = await _open(sim, ends.apns_port, certs["production"])
            r = await wrong.request(_alert_headers(wrong, app), ALERT_BODY)
            assert _outcome(r) == (403, "BadCertificateEnvironment")

            production = await _open(sim, ends.other_apns_port, certs["production"])
            r = await production.request(_alert_headers(production, prod_app), ALERT_BODY)
            assert _outcome(r) == (200, None)
            accepted = [p for p in sim.apns.log if p.status == 200]
            assert [p.device for p in accepted] == ["iphone-1", "iphone-1", "prod-phone"]


def _ca(sim: Simulator) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    assert sim.certs is not None
    cert = x509.load_pem_x509_certificate(sim.certs.ca.read_bytes())
    key = serialization.load_pem_private_key(sim.certs.ca_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


@pytest.mark.parametrize(
    "bundle", [None, "com.example.someone-else"], ids=["no bundle", "foreign bundle"]
)
async def test_a_certificate_for_no_app_of_this_account_is_bad(
    tmp_path: Path, bundle: str | None
) -> None:
    with trio.fail_after(30):
        async with running(tmp_path) as (sim, ends):
            ca_cert, ca_key = _ca(sim)
            cert, key = issue_client_certificate(
                ca_cert,
                ca_key,
                bundle_id=bundle,
                environments=["sandbox"],
                now=dt.datetime.now(dt.UTC),
            )
            path = tmp_path / "odd.pem"
            path.write_bytes(client_pem(cert, key))
            client = await _open(sim, ends.apns_port, path)
            _, app = _tokens(sim, "iphone-1")
            r = await client.request(_alert_headers(client, app), ALERT_BODY)
            assert _outcome(r) == (403, "BadCertificate")


async def test_a_certificate_from_another_ca_is_refused_at_the_handshake(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running(tmp_path) as (sim, ends):
            stranger = ensure_certificates(tmp_path / "stranger")  # a CA the simulator never saw
            ca_cert = x509.load_pem_x509_certificate(stranger.ca.read_bytes())
            ca_key = serialization.load_pem_private_key(stranger.ca_key.read_bytes(), None)
            assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
            cert, key = issue_client_certificate(
                ca_cert, ca_key, bundle_id=BUNDLE, environments=["sandbox"],
                now=dt.datetime.now(dt.UTC),
            )  # fmt: skip
            path = tmp_path / "stranger.pem"
            path.write_bytes(client_pem(cert, key))
            with pytest.raises(trio.BrokenResourceError):
                # TLS 1.3 finishes the client's side first; the refusal arrives on the first read.
                client = await _open(sim, ends.apns_port, path)
                await client.request(_alert_headers(client, "00"), ALERT_BODY)
            assert sim.apns.counters.connections == 0
