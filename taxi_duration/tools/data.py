"""`make data`: download TLC months into a folder, with the downloader ingest uses, so the
pipeline can read them from there (`-P source=data`) without the network.

    python -m taxi_duration.tools.data --taxi green --dest data 2021-01..2021-03

Months: one (2021-01), a list (2021-01,2021-03) or a range (2021-01..2021-03); the default is
the pipeline's default train, validation and test months. A month already in the folder is
kept while TLC's copy is the one it was downloaded from (its identity is recorded beside it,
`<file>.source.json`); a download goes to a temp file renamed once complete, so an interrupted
download leaves no partial month behind.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from taxi_duration.core.contracts import DEFAULT_MONTHS, TLC_URL, tlc_file_name
from taxi_duration.core.errors import EXIT_USER_ERROR, PipelineError
from taxi_duration.core.params import check_taxi, parse_month_spec
from taxi_duration.data.tlc import fetch_into, fetch_month, is_url, month_location

DEFAULT_SPEC = f"{DEFAULT_MONTHS['train']}..{DEFAULT_MONTHS['test']}"


@click.command(help=__doc__)
@click.option("--taxi", default="green", show_default=True)
@click.option("--dest", default="data", show_default=True, help="Folder to fill.")
@click.option("--source", default=TLC_URL, show_default=True, help="TLC's URL base.")
@click.argument("months", nargs=-1)
def main(taxi: str, dest: str, source: str, months: tuple[str, ...]) -> None:
    try:
        check_taxi(taxi)
        wanted = parse_month_spec(",".join(months) or DEFAULT_SPEC)
        folder = Path(dest).expanduser()
        for month in wanted:
            path = (
                fetch_into(
                    month_location(source, taxi, str(month)),
                    folder / tlc_file_name(taxi, str(month)),
                )
                if is_url(source)
                else fetch_month(source, taxi, str(month), folder)
            )
            print(f"data: {path} ({path.stat().st_size / 1e6:.1f} MB)", flush=True)
    except PipelineError as exc:  # one line, as the steps print theirs
        print(f"data: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    print(
        f"data: {len(wanted)} month(s) in {folder}; run the pipeline on them with "
        f'make run ARGS="-P source={folder.resolve()}"'
    )


if __name__ == "__main__":
    main()
