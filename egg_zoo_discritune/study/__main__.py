"""``python -m egg_zoo_discritune.study``: the study commands."""

from egg_zoo_discritune.study.cli import cli

cli()
