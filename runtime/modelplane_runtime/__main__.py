"""`python -m modelplane_runtime`: the same as `modelplane-runtime`."""

from .cli import runtime_main

raise SystemExit(runtime_main())
