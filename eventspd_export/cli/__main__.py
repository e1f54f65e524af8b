"""``python -m eventspd_export.cli ...`` = ``eventspd-export ...`` (where the console script is not
on PATH, e.g. scripts/bench_gpu.sh on a machine where the package is installed with --no-deps)."""

from eventspd_export.cli.app import main

main(prog_name="eventspd-export")
