"""The curator's workbench (`deparrot explore`): every decision with its evidence.

Imports nothing heavy at module level: the CLI lists this stage on machines without the
`explore` extra (a Databricks job cluster), which only fail when it is run.
"""

from __future__ import annotations

from jobs.config import Config
from jobs.errors import UserError
from jobs.stages import Stage


def run(cfg: Config, host: str = "127.0.0.1", port: int = 8765,
        config_path: str | None = None) -> None:
    try:
        from jobs.explore import app
    except ImportError as exc:
        raise UserError(f"deparrot explore needs the explore extra ({exc.name} is missing): "
                        "pip install 'deparrot[explore]'") from None
    app.run(cfg, host=host, port=port, config_path=config_path)


run.cli_arguments = {  # type: ignore[attr-defined]
    "--host": {"default": "127.0.0.1",
               "help": "address to listen on (default 127.0.0.1; any other host requires "
                       "the access token printed at start)"},
    "--port": {"type": int, "default": 8765, "help": "port (default 8765)"},
}
run.wants_config_path = True  # type: ignore[attr-defined]

STAGES = (Stage("explore", "the curator's workbench: browse, search, what-if and review "
                "every decision (a local web app, no Spark)", run, spark=False,
                reads=("metadata", "images", "scores", "clusters", "dedup", "rejects",
                       "subset"), writes=("reviews",)),)
