"""The embedded shapes world: layout, rendering, detection, prompt sets and step-by-step rollouts.

See docs/world.md. Entry points: `WorldConfig`, `rollout` (prompt + seed -> [(StepGoal, state, image)]),
`render`, `WorldDetector`, `shapes_eval_prompts`.
"""
