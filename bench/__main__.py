"""Run every benchmark: `make bench`. The gateway one runs on free ports, then cold start on the defaults.

The peer one (Cirrus against LiteLLM's own proxy) runs when its venv is there: `make bench-peer`
installs it (and runs only that one).
"""

import sys

from bench import cold_start, gateway, keys, peer, surfaces

status = gateway.main([]) or keys.main([]) or surfaces.main([])
if peer.PROXY_BIN.exists():
    status = peer.main([]) or status
else:
    print(f"bench.peer skipped: {peer.PROXY_BIN} is missing (`make bench-peer` installs it)", file=sys.stderr)
cold_start.main()
sys.exit(status)
