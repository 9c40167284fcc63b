#!/bin/bash
# Grades the task: starts the agent's serve.sh, then reward 1 when every check in test_outputs.py
# passes, else 0.
cd /workspace
nohup bash /workspace/serve.sh > /tmp/serve.log 2>&1 &
if python3 -I -m pytest -q -p no:cacheprovider -c /dev/null --rootdir=/tests --confcutdir=/tests /tests/test_outputs.py; then
  echo 1 > /logs/verifier/reward.txt
else
  echo 0 > /logs/verifier/reward.txt
fi
