"""`lockstep simulator`: run the fake APNs with simulated iPhones from the command line.

    lockstep simulator --port 2197 --control-port 8790 --devices 3 --apns-dir ./apns-out --seed 7 \
        [--environment sandbox|production] [--other-environment-port N] \
        [--faults plan.toml | --faults "latency=uniform:1:20,burst=ServiceUnavailable:0.01:5"] \
        [--accept-all] [--h2c] [--record-pushes pushes.jsonl]

It prints its APNs URLs (one per environment it serves), where its CA certificate, client
certificates, signing key (.p8) and control API are, then serves until Ctrl-C, which sends GOAWAY
to every connection, drains them (bounded) and exits cleanly.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import trio

from simulator.apns import SimulatorConfig
from simulator.certs import ensure_certificates, server_ssl_context
from simulator.fastserve import SinkStats, serve_fast_sink
from simulator.faults import FaultPlan
from simulator.profile import ENVIRONMENTS, AllowPrompt, DeviceProfile, parse_profile
from simulator.runner import Simulator, SimulatorOptions


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `simulator` subcommand to the `lockstep` parser."""
    p = sub.add_parser(
        "simulator",
        help="run the fake APNs with simulated iPhones",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=2197, help="APNs port (default 2197, as APNs)")
    p.add_argument("--control-port", type=int, default=8790, help="control API port (default 8790)")
    p.add_argument(
        "--environment",
        choices=ENVIRONMENTS,
        default="sandbox",
        help="APNs environment of the --port listener and of the devices (default sandbox)",
    )
    p.add_argument(
        "--other-environment-port",
        type=int,
        metavar="N",
        help="also serve the other environment on port N (0 picks a free port)",
    )
    p.add_argument("--devices", type=int, default=3, help="simulated iPhones to create (default 3)")
    p.add_argument("--apns-dir", type=Path, help="write each accepted push as a .apns file here")
    p.add_argument(
        "--record-pushes",
        type=Path,
        metavar="FILE",
        help="write each accepted push to FILE as a JSON line (lockstep replay --pushes FILE)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=Path("lockstep-sim"),
        help="where the CA, certificates, signing key and the devices (kept across restarts) live"
        " (default ./lockstep-sim)",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start with new phones: ignore the devices saved in --state-dir (replaced on save)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for tokens and faults (default 0)")
    p.add_argument("--faults", help="fault plan: a TOML file, or an inline spec (see docs)")
    p.add_argument(
        "--accept-all",
        action="store_true",
        help="benchmark mode: validate nothing, answer 200 from pre-built frames",
    )
    p.add_argument("--h2c", action="store_true", help="plaintext HTTP/2 instead of TLS")
    defaults = SimulatorConfig()
    p.add_argument("--bundle-id", default=defaults.bundle_id, help="app bundle id (the topic base)")
    p.add_argument("--team-id", default=defaults.team_id, help="team id of the signing key")
    p.add_argument("--key-id", default=defaults.key_id, help="key id of the signing key")
    p.add_argument(
        "--max-streams",
        type=int,
        default=1000,
        help="MAX_CONCURRENT_STREAMS after the first valid token (default 1000)",
    )
    p.add_argument(
        "--drop-to-one",
        action="store_true",
        help="drop MAX_CONCURRENT_STREAMS to 1 after a rejection, as APNs was seen to",
    )
    p.add_argument("--max-active", type=int, default=5, help="active activities per device (5)")
    _profile_arguments(p)
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=defaults.idle_timeout,
        metavar="SECONDS",
        help="GOAWAY IdleTimeout after this long without a frame from the client; 0 never "
        "(default 7200)",
    )
    p.add_argument(
        "--disable-key-id",
        action="append",
        default=[],
        metavar="KID",
        help="the account has disabled this signing key: its tokens get 403 Forbidden (repeatable)",
    )
    p.add_argument("--report-url", help="POST each new Live Activity update token here")
    p.add_argument("--report-key", help="bearer credential for --report-url")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(handler=main)


def _profile_arguments(p: argparse.ArgumentParser) -> None:
    """Flags for the profile of every device the simulator creates (simulator/profile.py)."""
    g = p.add_argument_group("device profile (the README lists every default and its source)")
    g.add_argument(
        "--profile", metavar="JSON", help="every field at once, e.g. '{\"low_power\": true}'"
    )
    g.add_argument(
        "--frequent-updates",
        action="store_true",
        help="apps declare NSSupportsLiveActivitiesFrequentUpdates (a larger hourly budget)",
    )
    g.add_argument("--low-power", action="store_true", help="Low Power Mode: priority 5 waits long")
    g.add_argument(
        "--allow-prompt",
        choices=[a.value for a in AllowPrompt],
        help="how the user answers the Allow prompt after a push-to-start (default auto)",
    )
    g.add_argument(
        "--no-budgets", action="store_true", help="an idealised phone: no budget, no delay"
    )
    g.add_argument(
        "--token-rate-limit",
        type=int,
        default=SimulatorConfig().token_rate_limit,
        metavar="N",
        help="pushes to one token per 10 s before APNs answers 429 (0: no limit; default 100)",
    )


def profile_from_args(args: argparse.Namespace) -> DeviceProfile:
    """The device profile the flags describe (`--profile` first, then the single flags)."""
    profile = parse_profile(args.profile.encode()) if args.profile else DeviceProfile()
    changes: dict[str, object] = {}
    if args.frequent_updates:
        changes["frequent_updates"] = True
    if args.low_power:
        changes["low_power"] = True
    if args.allow_prompt:
        changes["allow_prompt"] = AllowPrompt(args.allow_prompt)
    if args.no_budgets:
        changes["budgets"] = False
    return msgspec.structs.replace(profile, **changes) if changes else profile


def describe_profile(profile: DeviceProfile) -> str:
    """One banner line: the rules a device of this profile applies."""
    if not profile.budgets:
        return f"no budgets (idealised), Allow {profile.allow_prompt}, {profile.environment}"
    return (
        f"{profile.hourly_updates} priority-10 updates/h, {profile.push_to_start_budget} "
        f"push-to-starts/h, priority 5 after {profile.priority5_delay:g} s, "
        f"Allow {profile.allow_prompt}, {profile.environment}"
    )


def options_from_args(args: argparse.Namespace) -> SimulatorOptions:
    """Translate parsed arguments into `SimulatorOptions` (raises ValueError on bad values)."""
    if args.token_rate_limit < 0:
        raise ValueError(f"--token-rate-limit is out of range: {args.token_rate_limit}")
    for name in ("devices", "max_streams", "max_active"):
        if getattr(args, name) < (0 if name == "devices" else 1):
            raise ValueError(f"--{name.replace('_', '-')} is out of range: {getattr(args, name)}")
    if not args.idle_timeout >= 0:  # also refuses NaN
        raise ValueError(f"--idle-timeout is out of range: {args.idle_timeout}")
    plan = _load_plan(args.faults, args.seed) if args.faults else None
    config = SimulatorConfig(
        bundle_id=args.bundle_id,
        team_id=args.team_id,
        key_id=args.key_id,
        warm_max_streams=args.max_streams,
        drop_to_one_after_rejection=args.drop_to_one,
        max_active_activities=args.max_active,
        seed=args.seed,
        token_rate_limit=args.token_rate_limit or None,
        idle_timeout=args.idle_timeout or None,
        disabled_key_ids=frozenset(args.disable_key_id),
    )
    return SimulatorOptions(
        host=args.host,
        port=args.port,
        control_port=args.control_port,
        devices=args.devices,
        state_dir=args.state_dir,
        apns_dir=args.apns_dir,
        record_pushes=args.record_pushes,
        tls=not args.h2c,
        plan=plan,
        report_url=args.report_url,
        report_key=args.report_key,
        config=config,
        profile=profile_from_args(args),
        fresh=args.fresh,
        environment=args.environment,
        other_environment_port=args.other_environment_port,
    )


def _load_plan(spec: str, seed: int) -> FaultPlan:
    path = Path(spec)
    plan = (
        FaultPlan.from_toml(path)
        if path.suffix == ".toml" or path.exists()
        else FaultPlan.from_flags(spec)
    )
    if "seed" not in spec and path.suffix != ".toml":
        plan = msgspec.structs.replace(plan, seed=seed)
    return plan


def main(args: argparse.Namespace) -> int:
    """Run the simulator until Ctrl-C."""
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        options = options_from_args(args)
        if args.accept_all:
            return _run_accept_all(options)
        simulator = Simulator.build(options)
    except (ValueError, OSError) as exc:  # StateError (a damaged device file) included
        print(f"lockstep simulator: {exc}", file=sys.stderr)
        return 2
    try:
        trio.run(_run, simulator)
    except OSError as exc:
        print(f"lockstep simulator: {exc}", file=sys.stderr)
        return 1
    return 0


async def _run(simulator: Simulator) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(simulator.run)
            _print_banner(simulator.info(), simulator)
            async for _ in signals:
                print("draining: GOAWAY sent to every connection ...", flush=True)
                drained = await simulator.stop()
                print("drained" if drained else "drain deadline reached; closing", flush=True)
                break
            nursery.cancel_scope.cancel()


def _print_banner(info: dict[str, Any], simulator: Simulator) -> None:
    print("Lockstep simulator (fake APNs + simulated iPhones)")
    for environment, url in info["apns_urls"].items():
        if url:
            print(f"  {'APNs ' + environment:<22} {url}")
    for label, key in (
        ("CA certificate", "ca_certificate"),
        ("signing key (.p8)", "signing_key"),
        ("key id", "key_id"),
        ("team id", "team_id"),
        ("topic", "topic"),
        ("control API", "control_url"),
        (".apns files", "apns_dir"),
        ("pushes recorded to", "record_pushes"),
        ("token reports to", "token_report_url"),
        ("devices kept in", "state_file"),
    ):
        if info.get(key):
            print(f"  {label:<22} {info[key]}")
    if info.get("control_url"):
        print(f"  {'lock screens page':<22} {info['control_url']}/  (in a browser)")
    for environment, path in info["client_certificates"].items():
        print(f"  {'client cert ' + environment:<22} {path}  (certificate and key, PEM)")
    profile = simulator.apns.registry.default_profile  # the environment is the listener's
    print(f"  {'device profile':<22} {describe_profile(profile)}")
    for device in simulator.apns.registry.snapshot(simulator.apns.wall_clock()):
        print(f"  device {device['name']:<11} push-to-start token {device['push_to_start_token']}")
    print("Ctrl-C drains and exits.", flush=True)


def _run_accept_all(options: SimulatorOptions) -> int:
    """Benchmark mode: answer everything 200 from pre-built frames; report rate and CPU on exit."""
    certs = ensure_certificates(options.state_dir) if options.tls else None
    # Validates nothing, so it asks for no client certificate either.
    ssl_context = server_ssl_context(certs, client_certificates=False) if certs else None
    stats = SinkStats()

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(
                    partial(
                        serve_fast_sink,
                        options.host,
                        options.port,
                        ssl_context=ssl_context,
                        stats=stats,
                        max_concurrent_streams=options.config.warm_max_streams,
                    )
                )
                scheme = "https" if certs else "http"
                print("Lockstep simulator, accept-all benchmark mode (validates nothing)")
                print(f"  APNs               {scheme}://{options.host}:{port}")
                if certs:
                    print(f"  CA certificate     {certs.ca.resolve()}")
                print("Ctrl-C stops and prints requests/s and CPU time.", flush=True)
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()

    try:
        trio.run(run)
    except OSError as exc:
        print(f"lockstep simulator: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(stats.report(), indent=2))
    return 0
