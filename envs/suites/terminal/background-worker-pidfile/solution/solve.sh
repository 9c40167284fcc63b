#!/bin/bash
set -euo pipefail
cd /workspace
cat > start-worker.sh <<'SH'
#!/bin/bash
cd /workspace
nohup python3 worker.py > /dev/null 2>&1 &
echo $! > worker.pid
SH
