"""`python -m labkit.serving serve --model smollm2-135m` / `... loadgen --clients 8`."""

import sys

from labkit.serving.cli import main

sys.exit(main())
