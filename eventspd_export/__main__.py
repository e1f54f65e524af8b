"""``python -m eventspd_export ...`` = ``eventspd-export ...`` (where the console script is not on
PATH, e.g. scripts/bench_gpu.sh); also what torchrun runs:
``torchrun --nproc-per-node 2 -m eventspd_export train ...``."""

from eventspd_export.cli.app import main

main(prog_name="eventspd-export")
