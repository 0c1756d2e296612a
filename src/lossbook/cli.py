"""The `lossbook` command: list chapters, run one at a preset or over a grid, build the book."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from lossbook import book, cache, presets


def cmd_list(args: argparse.Namespace) -> int:
    print(f"{'chapter':28} {'presets':18} {'book record':34} {'duration':>9}")
    for chapter in book.chapters():
        module = presets.chapter_module(chapter)
        meta = book.recorded_metadata(book.record_path(chapter)) or {}
        reasons = book.staleness(chapter)
        state = "current" if not reasons else "stale (" + "; ".join(reasons) + ")"
        duration = f"{meta['duration_s']:.0f} s" if "duration_s" in meta else "–"
        print(f"{chapter:28} {','.join(module.PRESETS):18} {state:34} {duration:>9}")
        for preset in module.PRESETS:
            for path in sorted((book.build_dir() / preset).glob(f"{chapter}*.ipynb")):
                if path.name.endswith(".failed.ipynb"):
                    print(f"  {preset:6} {path.name:40} FAILED (the notebook holds the error)")
                    continue
                meta = book.recorded_metadata(path) or {}
                if "unreadable" in meta:
                    print(f"  {preset:6} {path.name:40} UNREADABLE ({meta['unreadable']})")
                    continue
                print(f"  {preset:6} {path.name:40} {meta.get('executed_at', '?'):26} "
                      f"{meta.get('duration_s', 0):.0f} s")
    if args.verbose:
        for chapter in book.chapters():
            print(f"\n{chapter} parameters per preset:\n{presets.describe(chapter)}")
    return 0


def parse_params(pairs: list[str]) -> dict:
    params = {}
    for pair in pairs:
        if "=" not in pair:
            raise presets.ConfigError(f"parameters are written key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        params[key.strip()] = presets.parse_cli_value(value)
    return params


def cmd_run(args: argparse.Namespace) -> int:
    if args.record and args.preset != book.BOOK_PRESET:
        raise presets.ConfigError("--record writes the published record: use --preset book")
    if args.record and (args.param or args.output or args.prepare_only):
        raise presets.ConfigError("--record writes the published record, the book preset with "
                                  "default parameters, executed: it takes no -p, -o or "
                                  "--prepare-only")
    params = parse_params(args.param)
    if args.executor:  # the notebook's kernel inherits it
        os.environ["LOSSBOOK_EXECUTOR"] = cache.check_executor(args.executor)
    if args.record:
        path = book.execute(args.chapter, args.preset, params,
                            output=book.record_path(args.chapter),
                            results=book.claims_record_path(args.chapter), record=True)
    else:
        path = book.execute(args.chapter, args.preset, params,
                            output=args.output, prepare_only=args.prepare_only)
    print(f"[lossbook] wrote {path}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from lossbook import grid

    summary = grid.run(args.chapter, args.preset, grid.parse_grid(args.grid),
                       parse_params(args.param), executor=args.executor, jobs=args.jobs,
                       out=args.output, force=args.force)
    out = args.output or book.build_dir() / args.preset / "sweeps" / args.chapter
    print(f"[lossbook] wrote {out}/summary.md and summary.json")
    failed = [p["name"] for p in summary["points"] if p["error"]]
    if failed:
        print(f"lossbook: {len(failed)} point(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def cmd_build(args: argparse.Namespace) -> int:
    try:
        book.build(force=args.force, execute=not args.no_execute, strict=args.strict)
    except book.BuildError as err:
        print(f"lossbook: error: {err}", file=sys.stderr)
        return 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    print(book.write_status_page())
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    path = book.audit(args.chapter, args.seeds, args.preset)
    print(book.audit_report(path))
    print(f"[lossbook] wrote {path}")
    return 0


def interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lossbook", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="chapters, presets, last runs and their durations")
    p.add_argument("-v", "--verbose", action="store_true", help="also every preset's parameters")
    p.set_defaults(fn=cmd_list)
    p = sub.add_parser("run", help="execute one chapter (jupytext → papermill)")
    p.add_argument("chapter")
    p.add_argument("--preset", default="book")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a notebook parameter (seed, device) or a config field (see list -v)")
    p.add_argument("-o", "--output", help="output notebook (default build/<preset>/...)")
    p.add_argument("--prepare-only", action="store_true",
                   help="inject parameters without executing (for nbval)")
    p.add_argument("--record", action="store_true",
                   help="write the published record book/<chapter>.ipynb (book preset)")
    p.add_argument("--executor", choices=cache.EXECUTORS,
                   help="where the chapter's runs go (default $LOSSBOOK_EXECUTOR or local)")
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("sweep", help="execute one chapter at every point of a parameter grid")
    p.add_argument("chapter")
    p.add_argument("--preset", default="book")
    p.add_argument("-g", "--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a grid axis: a notebook parameter or config field and its values")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter fixed across the grid")
    p.add_argument("--executor", choices=cache.EXECUTORS,
                   help="local processes or Ray tasks (default $LOSSBOOK_EXECUTOR or local)")
    p.add_argument("-j", "--jobs", type=int,
                   help="points at a time (local; default 2) or CPUs of a Ray started here")
    p.add_argument("-o", "--output", type=Path,
                   help="folder of the notebooks and summary (default build/<preset>/sweeps/<ch>)")
    p.add_argument("--force", action="store_true", help="re-execute points already done")
    p.set_defaults(fn=cmd_sweep)
    p = sub.add_parser("build", help="execute stale chapters at `book`, then build the HTML")
    p.add_argument("--force", action="store_true", help="re-execute every chapter")
    p.add_argument("--no-execute", action="store_true", help="render the committed records")
    p.add_argument("--strict", action="store_true", help="warnings are errors (-W -n)")
    p.set_defaults(fn=cmd_build)
    p = sub.add_parser("status", help="rewrite book/status.md from the committed records")
    p.set_defaults(fn=cmd_status)
    p = sub.add_parser("audit", help="re-execute a chapter with fresh seed-sets; per claim, "
                       "the fraction giving the book's verdict (book/audit/<chapter>.json)")
    p.add_argument("chapter")
    p.add_argument("--seeds", type=int, default=3, help="number of fresh seed-sets (default 3)")
    p.add_argument("--preset", default="book",
                   help="book (compares with the record) or another preset (compares with a "
                        "seed-0 run, writes under build/audit/)")
    p.set_defaults(fn=cmd_audit)
    args = parser.parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:  # clean up (kernel, workers) as Ctrl-C does
        previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        return args.fn(args)
    except presets.ConfigError as err:
        print(f"lossbook: error: {err}", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
