"""Fault soak: ``python -m benchmarks.soak_faults [--minutes M] [--trials N] [--seed S]``.

The chaos trials of ``tests/corelib/test_chaos.py`` (:mod:`corelib.testing._chaos`), back to
back with fresh seeds, for a long run: each trial starts workers on a strict in-memory broker,
sends a seeded mix of WorkChains, parents of remote children, plain processes, poison steps and
poison payloads, with pause/play/kill traffic, while it crashes and stops workers and opens
dying consumers; then it checks that no task was lost, no reply duplicated and no process
ended twice, no worker lost to a payload or a step, and no checkpointed step run again.

Trials vary with their seed as the CI trials do: memory or SQLite persister, the workers'
backend mix, prefetch 0 or 1, ``max_redeliveries`` 20 or 2. Prints the first seed, a line per
trial (with the problems of a failed one and the seed to re-run), a summary, and the goal lines.
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import time
from collections import Counter

from corelib.testing._chaos import ChaosConfig, ChaosSummary, TrialReport, run_trial

# the same variation over seeds as the CI trials (tests/corelib/test_chaos.py)
_BACKENDS = [("asyncio", "trio"), ("trio", "asyncio"), ("asyncio",), ("trio",)]


def trial_config(seed: int, timeout: float) -> ChaosConfig:
    return ChaosConfig(
        seed=seed,
        persister="sqlite" if seed % 2 else "memory",
        backends=_BACKENDS[(seed // 2) % 4],
        prefetch=(0, 0, 1)[seed % 3],
        max_redeliveries=2 if seed % 5 == 0 else 20,
        tasks=60,
        faults=10,
        step_delay=0.01,
        timeout=timeout,
    )


def _unexpected_kind(text: str) -> str:
    # "<label> <pid> {inputs}: <what> (<detail>)" -> "<label>: <what>"
    label = text.split(" ", 1)[0]
    what = text.split("}: ", 1)[-1] if "}: " in text else text.split(": ", 1)[-1]
    what = re.split(r" \(|, not ", what, maxsplit=1)[0]
    detail = re.search(r"\((\w+Error)", text)
    return f"{label}: {what}" + (
        f" ({detail.group(1)})" if detail and detail.group(1) not in what else ""
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="run trials this long")
    parser.add_argument("--trials", type=int, default=None, help="stop after this many trials")
    parser.add_argument("--seed", type=int, default=None, help="the first seed (random if omitted)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per trial")
    parser.add_argument("--verbose", action="store_true", help="keep corelib's and broker's logs")
    args = parser.parse_args()
    if not args.verbose:
        # poison steps and payloads log an error each, by design
        logging.disable(logging.CRITICAL)
    first = random.randrange(1 << 30) if args.seed is None else args.seed
    print(f"fault soak: {args.minutes:g} minutes, first seed {first}", flush=True)
    started = time.monotonic()
    deadline = started + args.minutes * 60
    reports: list[TrialReport] = []
    seed = first
    while time.monotonic() < deadline and (args.trials is None or len(reports) < args.trials):
        config = trial_config(seed, args.timeout)
        report = run_trial(config)
        reports.append(report)
        variant = f"{config.persister} {'+'.join(config.backends)} p{config.prefetch} r{config.max_redeliveries}"
        print(f"trial {len(reports):4d} {variant:<32} {report.line()}", flush=True)
        if not report.ok:
            for problem in report.problems():
                print(f"    {problem[:400]}", flush=True)
            print(f"    re-run: run_trial({config!r})", flush=True)
        seed += 1
    wall = time.monotonic() - started
    summary = ChaosSummary.of(reports)
    unexpected = Counter(_unexpected_kind(u) for r in reports for u in r.unexpected)
    duplicated = summary.duplicated_replies + summary.ended_twice
    rows = [
        ("trials", f"{summary.trials} (seeds {first}..{seed - 1}), {wall:.0f} s"),
        ("trials with problems", f"{len(summary.failed_seeds)}: {list(summary.failed_seeds)[:20]}"),
        ("faults injected", f"{sum(summary.faults.values())}"),
        *[(f"  {kind}", str(n)) for kind, n in summary.faults.items()],
        *[(f"  ({kind})", str(n)) for kind, n in summary.fault_effects.items()],
        ("senders (tasks + RPCs)", f"{summary.sent}"),
        ("tasks", f"{summary.tasks}"),
        ("answered", f"{summary.answered}"),
        ("outcomes", ", ".join(f"{k} {v}" for k, v in summary.outcomes.items())),
        ("lost", f"{summary.lost}"),
        (
            "duplicated replies",
            f"{duplicated} (replies dropped as already answered {summary.duplicated_replies},"
            f" processes ended twice {summary.ended_twice})",
        ),
        ("workers lost", f"{summary.workers_lost}"),
        (
            "step violations",
            f"{summary.step_violations} (re-runs before a checkpoint {summary.step_reruns})",
        ),
        ("dead letters", f"{summary.dead_letters}"),
        ("unexpected outcomes", f"{summary.unexpected}"),
        *[(f"  {kind}", str(n)) for kind, n in unexpected.most_common()],
        ("incidents", f"{summary.incidents}"),
    ]
    width = max(len(k) for k, _ in rows) + 2
    for key, value in rows:
        print(f"{key:<{width}}{value}")
    goals = [
        ("lost", summary.lost),
        ("duplicated replies", duplicated),
        ("workers lost", summary.workers_lost),
        ("step violations", summary.step_violations),
    ]
    for name, measured in goals:
        print(f"goal {name}: {'PASS' if measured == 0 else 'FAIL'} {measured} (0)")
    raise SystemExit(0 if all(m == 0 for _n, m in goals) else 1)


if __name__ == "__main__":
    main()
