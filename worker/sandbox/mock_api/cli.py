"""``routeq mock-api``: argument wiring and the blocking serve loop."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from worker import eventloop
from worker.sandbox.mock_api.faults import DEFAULT_SLOW_MS, FaultPlan

if TYPE_CHECKING:
    from worker.sandbox.mock_api.config import MockConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787, help="port to bind; 0 picks a free one")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    parser.add_argument("--config", type=Path, help='JSON file: {"models": {ID: {latency_ms, ...}}}')
    parser.add_argument("--latency-ms", type=float, default=None, help="time to first token (all models)")
    parser.add_argument("--ms-per-output-token", type=float, default=None, help="generation time per token")
    parser.add_argument(
        "--faults",
        default="",
        help="fault probabilities, e.g. '429=0.03,529=0.03,timeout=0.01,haiku:529=0.5,slow=0.05'",
    )
    parser.add_argument("--slow-ms", type=float, default=DEFAULT_SLOW_MS, help="latency spike of 'slow'")
    parser.add_argument("--seed", type=int, default=None, help="seed for fault draws (reproducible runs)")
    parser.add_argument("--api-key", default=None, help="accept only this key (default: any non-empty)")
    parser.add_argument(
        "--replay", type=Path, default=None, help='JSONL of {"prompt", "answers": {tier or model: text}}'
    )
    parser.add_argument(
        "--batch-latency-s", type=float, default=None, help="Message Batches: seconds from create to ended"
    )
    parser.add_argument(
        "--batch-create-delay-s", type=float, default=0.0, help="Message Batches: create answers this late"
    )
    parser.add_argument("--hang-s", type=float, default=600.0, help="longest hang of a 'timeout' fault")


def config_from_args(args: argparse.Namespace) -> MockConfig:
    # The server side is imported here, not with add_arguments: every routeq command builds this parser.
    from worker.sandbox.mock_api.config import MockConfig, load_config_file
    from worker.sandbox.mock_api.replay import load_replay

    cfg = load_config_file(args.config) if args.config else MockConfig()
    if args.latency_ms is not None:
        cfg.latency_ms = args.latency_ms
    if args.ms_per_output_token is not None:
        cfg.ms_per_output_token = args.ms_per_output_token
    if args.faults:
        cfg.faults = FaultPlan.parse(args.faults, args.slow_ms)
    if args.seed is not None:
        cfg.seed = args.seed
    cfg.api_key = args.api_key
    cfg.hang_s = args.hang_s
    if args.replay is not None:
        cfg.replay = load_replay(args.replay)
    cfg.batch_create_delay_s = args.batch_create_delay_s
    if args.batch_latency_s is not None:
        cfg.batch_latency_s = args.batch_latency_s
    return cfg


async def _serve(args: argparse.Namespace) -> None:
    from worker.sandbox.mock_api.server import start_server

    server = await start_server(config_from_args(args), args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.port_file:
        tmp = args.port_file.with_name(args.port_file.name + ".tmp")
        tmp.write_text(str(server.port))
        tmp.replace(args.port_file)  # atomic: a polling parent never reads a half-written port
    print(f"mock-api listening on {server.url}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()


def run(args: argparse.Namespace) -> int:
    try:
        eventloop.run(_serve(args))
    except (ValueError, OSError) as e:
        print(f"mock-api: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mock-api", description="Local stand-in for the Messages API")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
