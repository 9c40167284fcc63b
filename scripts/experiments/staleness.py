"""The staleness experiment: arms x seeds of SDPO on stale rollouts, evaluated on held-out tasks.

usage: python scripts/experiments/staleness.py -c configs/experiments/staleness.yaml [key=value ...]
       (--report-only: rewrite the report from the records in work_dir)

See docs/results/README.md for what it measures and agentsd/experiments/ for how.
"""

import sys

from agentsd.experiments.staleness import main

if __name__ == "__main__":
    sys.exit(main())
