#!/bin/bash
# Grades the task: reward 1 when every check in test_outputs.py passes, else 0. pytest runs isolated
# (-I: no working directory, user site or PYTHON* variables; no configuration or conftest.py but
# those in /tests), so nothing the agent left in /workspace stands in for the test runner.
cd /workspace
if python3 -I -m pytest -q -p no:cacheprovider -c /dev/null --rootdir=/tests --confcutdir=/tests /tests/test_outputs.py; then
  echo 1 > /logs/verifier/reward.txt
else
  echo 0 > /logs/verifier/reward.txt
fi
