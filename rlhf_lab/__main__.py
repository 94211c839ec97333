"""`python -m rlhf_lab ...` is the `rlhf-lab` command (handy under `accelerate launch -m rlhf_lab`)."""

import sys

from rlhf_lab.cli.main import main

sys.exit(main())
