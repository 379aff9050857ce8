"""Scene graphs: what a prompt asks for (`SceneGraph`), how prompts are read (`TemplateParser`) and how a
scene is built step by step (`plan` -> `StepGoal`s)."""
