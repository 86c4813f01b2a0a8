"""`chainfs loadtest run|calibrate`: the KV-cache comparison and the generator's calibration."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from chainfs.loadtest.generators import QAConfig


def register(sub: argparse._SubParsersAction) -> None:
    lt = sub.add_parser("loadtest", help="compare no cache, local caches and a shared chainfs cache")
    lsub = lt.add_subparsers(dest="loadtest_command", metavar="ACTION", required=True)

    run = lsub.add_parser("run", help="run the comparison end to end and write the report")
    run.add_argument("--scenarios", default="none,local,shared", help="comma-separated: none,local,shared")
    run.add_argument("--engines", type=int, default=2, help="engines per scenario")
    run.add_argument("--model", default="small", choices=["tiny", "small"], help="engine model preset")
    run.add_argument("--engine", choices=["numpy", "vllm"], default="numpy",
                     help="numpy: chainfs engine serve; vllm: vLLM OpenAI servers with ChainfsConnector")
    run.add_argument("--model-dir", help="vllm: the model directory (chainfs model build-tiny DIR)")
    run.add_argument("--workload", choices=["calibrated", "qa", "trace"], default=None,
                     help="default: trace when --trace is given, else calibrated")
    run.add_argument("--trace", help="Mooncake-format JSONL to replay")
    run.add_argument("--length-scale", type=int, default=8, help="divide every length by K")
    run.add_argument("--time-scale", type=float, default=0.0,
                     help="multiply arrival times by this (0: as fast as concurrency allows)")
    run.add_argument("--max-requests", type=int, default=None, help="replay only the first N requests")
    run.add_argument("--max-tokens", type=int, default=4, help="tokens generated per request")
    run.add_argument("--sessions", type=int, default=40, help="sessions of the calibrated generator")
    run.add_argument("--qa-users", type=int, default=QAConfig.users, help="qa workload: users")
    run.add_argument("--qa-rounds", type=int, default=QAConfig.rounds, help="qa workload: rounds per user")
    run.add_argument("--qa-system-tokens", type=int, default=QAConfig.system_prompt_tokens,
                     help="qa workload: tokens of the shared system prompt")
    run.add_argument("--concurrency", type=int, default=2, help="locust users (1: strict trace order)")
    run.add_argument("--duration", type=float, default=None, help="stop each scenario after this many seconds")
    run.add_argument("--capacity", type=int, default=None, help="cache capacity in bytes (default unlimited)")
    run.add_argument("--block-tokens", type=int, default=64, help="tokens per KV cache block")
    run.add_argument("--routing", choices=["round_robin", "sticky"], default="round_robin",
                     help="how requests pick an engine (sticky: a session stays on one)")
    run.add_argument("--no-fsync", action="store_true",
                     help="storage nodes skip fsync (faster; not crash-safe; for experiments)")
    run.add_argument("--json", dest="json_out", help="write the JSON report here too")
    run.add_argument("--report-dir", default="loadtest-report", help="where the report, plots and CSV go")
    run.set_defaults(func=cmd_run)

    lsub.add_parser("locust", add_help=False,
                    help="run locust on the load test's locustfile (`chainfs loadtest locust --help` lists its flags)")

    cal = lsub.add_parser("calibrate", help="print the session statistics of a conversation trace")
    cal.add_argument("trace", help="Mooncake-format JSONL (e.g. mooncake_conversation.jsonl)")
    cal.set_defaults(func=cmd_calibrate)


def cmd_run(args: argparse.Namespace) -> int:
    from chainfs.loadtest.report import build_report, print_table, write_outputs
    from chainfs.loadtest.runner import RunConfig, build_workload, engine_model, load_engine_stats, run_comparison

    console = Console()
    workload = args.workload or ("trace" if args.trace else "calibrated")
    cfg = RunConfig(
        scenarios=[s.strip() for s in args.scenarios.split(",") if s.strip()], engines=args.engines,
        model=args.model, workload=workload, trace=args.trace, length_scale=args.length_scale,
        time_scale=args.time_scale, max_requests=args.max_requests, max_tokens=args.max_tokens,
        sessions=args.sessions,
        qa=QAConfig(users=args.qa_users, rounds=args.qa_rounds, system_prompt_tokens=args.qa_system_tokens),
        concurrency=args.concurrency, duration=args.duration, capacity=args.capacity,
        block_tokens=args.block_tokens, routing=args.routing, fsync=not args.no_fsync,
        engine=args.engine, model_dir=Path(args.model_dir) if args.model_dir else None,
        report_dir=Path(args.report_dir),
    )
    requests = build_workload(cfg)
    results = run_comparison(cfg, requests, progress=lambda m: console.print(f"[bold]{m}[/]"))
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    report = build_report(results, requests, engine_model(cfg), cfg.block_tokens, config,
                          load_engine_stats(cfg.report_dir, cfg.scenarios))
    paths = write_outputs(report, results, cfg.report_dir, Path(args.json_out) if args.json_out else None)
    print_table(report, console)
    for p in paths:
        console.print(f"wrote {p}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from chainfs.loadtest.calibrate import calibrate

    print(json.dumps(calibrate(args.trace), indent=2))
    return 0
