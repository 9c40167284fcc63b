#!/bin/bash
# Grades the task: runs the agent's start-worker.sh, then reward 1 when every check in
# test_outputs.py passes, else 0.
cd /workspace
rm -f worker.pid
timeout 30 bash /workspace/start-worker.sh > /tmp/start-worker.log 2>&1
sleep 0.5
if python3 -I -m pytest -q -p no:cacheprovider -c /dev/null --rootdir=/tests --confcutdir=/tests /tests/test_outputs.py; then
  echo 1 > /logs/verifier/reward.txt
else
  echo 0 > /logs/verifier/reward.txt
fi
