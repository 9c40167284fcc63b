"""Learning experiments: arms x seeds of training runs on one model, measured on a held-out suite.

`staleness` is the runner (`scripts/experiments/staleness.py`), `arm` one arm's worker process,
`measure` what is measured on stored trajectories, `report` the written report.
"""
