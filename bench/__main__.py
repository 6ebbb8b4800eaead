"""Run every benchmark: `make bench`."""

from bench import cold_start

cold_start.main()
