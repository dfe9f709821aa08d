"""``python -m solver.runner plan.json``: one rank of a plan under torchrun.

    torchrun --standalone --nproc-per-node 2 -m solver.runner plan.json --verify --report r.json

Exit codes: 0 done (and verified, with --verify); 1 a rank failed or --verify found a
difference; 2 the plan was refused (schema, world size, fingerprint, dtype, memory), by every
rank; 130 interrupted, run alone (under torchrun a rank dies of SIGINT silently:
solver/runner/__main__.py). The options are ``cachepart run``'s (solver/cli/run.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ..core.errors import CachepartError
from ..core.files import check_output_path
from .args import Parser
from .exit_codes import ExitCode, exit_for
from .run import add_run_options, run_options

__all__ = ["PROG", "main", "parser"]

PROG = "cachepart runner"


def parser() -> Parser:
    p = Parser(prog="python -m solver.runner", description=(
        "Run a cachepart plan with torch.distributed.pipelining: one pipeline stage per rank, "
        "micro-batches forward-only (GPipe). Launch with torchrun, one process per stage."))
    add_run_options(p)
    return p


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        _say(f"{PROG}: interrupted")
        return ExitCode.INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    from ..plan import load_plan
    from ..runner.report import format_report
    from ..runner.validate import check_torch_device, prepare_run
    from ..runner.worker import Outcome, run_worker, single_process_env
    from .app import describe

    p = parser()
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed in one line
        return int(exc.code or 0)
    if "WORLD_SIZE" not in os.environ:
        single_process_env()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    # every rank runs the same checks and refuses alike; one line per node is enough
    speaks = local_rank == 0
    try:
        options = run_options(args)
        if options.report is not None and rank == 0:  # the writer; elsewhere it need not exist
            check_output_path(options.report, "report")
        if options.save_output is not None and rank == world - 1:  # the last stage writes it
            check_output_path(options.save_output, "save_output")
        plan = load_plan(options.plan)
        setup = prepare_run(plan, world, microbatches=options.microbatches, dtype=options.dtype,
                            input_shape=options.input_shape, input_dtype=options.input_dtype,
                            checkpoint=options.checkpoint, input_ids=options.input_ids,
                            generate=options.generate)
        check_torch_device(options.torch_device)
    except CachepartError as exc:
        if speaks:
            _say(f"{PROG}: {describe(exc, p)}")
        return exit_for(exc)[0]
    result = run_worker(options, setup, rank, world, local_rank)
    for note in result.notes:
        print(note, flush=True)
    if result.report is not None:
        print(format_report(result.report), flush=True)
        if options.report:
            result.report.save(options.report)
            print(f"report written to {options.report}", flush=True)
    for error in result.errors:
        _say(f"{PROG}: error: {error}")
    return {Outcome.DONE: ExitCode.OK, Outcome.FAILED: ExitCode.FAILED,
            Outcome.REFUSED: ExitCode.BAD_INPUT}[result.outcome]
