#!/bin/bash
set -euo pipefail
cd /workspace
cat > serve.sh <<'SH'
#!/bin/bash
cd /workspace
exec python3 -m http.server 8080 --bind 127.0.0.1 --directory site
SH
