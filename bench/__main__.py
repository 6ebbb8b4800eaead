"""Run every benchmark: `make bench`. The gateway one runs on free ports, then cold start on the defaults."""

import sys

from bench import cold_start, gateway, keys

status = gateway.main([]) or keys.main([])
cold_start.main()
sys.exit(status)
