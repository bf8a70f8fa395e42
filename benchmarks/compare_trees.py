"""Training speed of two source trees of ddpm_ref side by side: runs bench_train.py on each tree in
turn, alternating A, B, A, B, ... so both see the same machine load, and prints medians and spread.

    git worktree add ../ddpm_ref-main main --detach          # the old code, for instance
    python benchmarks/compare_trees.py ../ddpm_ref-main . --net mlp --rounds 5
    python benchmarks/compare_trees.py ../ddpm_ref-main . --net unet --rounds 3 -- --repeats 5

Each side runs in its own process with PYTHONPATH set to its tree (and its own Numba cache
folder); this file's bench_train.py times both, so the harness is the same. Arguments after
``--`` go to bench_train.py. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().with_name("bench_train.py")


def run_side(tree: Path, net: str, extra: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), NUMBA_CACHE_DIR=str(tree / ".numba_cache"))
    cmd = [sys.executable, str(BENCH), "--net", net, "--json", *extra]
    out = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tree_a", type=Path, help="source tree A (e.g. the old code)")
    ap.add_argument("tree_b", type=Path, help="source tree B (e.g. the new code)")
    ap.add_argument("--net", choices=["mlp", "unet"], default="mlp")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (A then B)")
    args, extra = ap.parse_known_args(argv)
    extra = [e for e in extra if e != "--"]
    for tree in (args.tree_a, args.tree_b):
        if not (tree / "ddpm_ref" / "__init__.py").is_file():
            raise SystemExit(f"tree: {tree} holds no ddpm_ref/ package")
    runs = {"a": [], "b": []}
    cpu = {"a": [], "b": []}
    for r in range(args.rounds):
        for side, tree in (("a", args.tree_a), ("b", args.tree_b)):
            res = run_side(tree.resolve(), args.net, extra)
            runs[side].append(res["steps_per_s"])
            cpu[side].append(res["cpu_ms_per_step_median"])
            print(f"round {r} {side}: {res['steps_per_s']:.2f} steps/s, "
                  f"{res['cpu_ms_per_step_median']:.3f} CPU-ms/step", flush=True)  # fmt: skip
    summary = {"net": args.net, "rounds": args.rounds, "loadavg_1min": os.getloadavg()[0]}
    for side in ("a", "b"):
        v, c = runs[side], cpu[side]
        summary[side] = {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v,
                         "cpu_ms_median": statistics.median(c), "cpu_ms_runs": c}  # fmt: skip
    summary["b_over_a"] = summary["b"]["median"] / summary["a"]["median"]
    summary["cpu_b_over_a"] = summary["b"]["cpu_ms_median"] / summary["a"]["cpu_ms_median"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
