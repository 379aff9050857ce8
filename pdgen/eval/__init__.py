"""Evaluation: GenEval's rules engine (`geneval`), its on-disk layout (`samples`), ShapesEval on the
shapes world (`shapes`) and a torchmetrics `Metric` for validation (`metric`)."""
