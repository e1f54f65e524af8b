"""``python -m eventspd_export ...`` = ``eventspd-export ...``; also what torchrun runs:
``torchrun --nproc-per-node 2 -m eventspd_export train ...``."""

from eventspd_export.cli.app import main

main(prog_name="eventspd-export")
