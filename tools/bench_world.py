"""Benchmark the shapes world: multi-step trajectories (plan + layout + render every step) per minute.

    python tools/bench_world.py [--seconds 20] [--augment 0.3] [--world default]

Runs on one core (the world is numpy + PIL, single-threaded) over ShapesEval's train prompts, cycling
through them with a new seed each time, and prints one JSON line: trajectories, steps and images per
minute. The acceptance bar is 1,000 trajectories per minute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from pdgen.scene.graph import SceneGraph
from pdgen.world.config import WorldConfig
from pdgen.world.prompts import shapes_eval_prompts
from pdgen.world.rollout import rollout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to run")
    parser.add_argument("--augment", type=float, default=0.3, help="the planner's augmentation probability")
    parser.add_argument("--world", default="default", help="world preset: default, large, all")
    args = parser.parse_args()

    config = WorldConfig.from_name(args.world)
    rows = shapes_eval_prompts("train", config, per_tag=1000)
    graphs = [SceneGraph.from_geneval(r["include"], r.get("exclude", ())) for r in rows]
    rollout(graphs[0], 0, config)  # warm caches (inflect, PIL) outside the timing
    trajectories = steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        steps += len(rollout(graphs[trajectories % len(graphs)], trajectories, config, augment=args.augment))
        trajectories += 1
    minutes = (time.perf_counter() - start) / 60
    print(
        json.dumps(
            {
                "world": args.world,
                "size": config.size,
                "augment": args.augment,
                "prompts": len(graphs),
                "trajectories_per_minute": round(trajectories / minutes),
                "steps_per_trajectory": round(steps / trajectories, 2),
                "images_per_minute": round(steps / minutes),
                "cpu": platform.processor() or platform.machine(),
                "cpus_visible": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
