import re
from pathlib import Path

import yaml

from jobs.cli import COMMANDS, main, parse

ROOT = Path(__file__).resolve().parents[2]


def test_unknown_key_exits_2_and_names_it(capsys):
    assert main(["ingest", "--set", "ingest.famliy=x"]) == 2
    assert "ingest.famliy" in capsys.readouterr().err


def test_flag_shortcuts_become_config():
    command, cfg = parse(["ingest", "--config", str(ROOT / "conf/local.yaml"),
                          "--input", "/data/x", "--family", "datacomp"])
    assert command == "ingest"
    assert (cfg.ingest.input, cfg.ingest.family) == ("/data/x", "datacomp")
    assert cfg.spark.master == "local[2]" and cfg.storage.root == "data/lake"


def test_every_bundle_task_is_a_valid_deparrot_command():
    bundle = yaml.safe_load((ROOT / "databricks.yml").read_text())
    tasks = bundle["resources"]["jobs"]["deparrot_pipeline"]["tasks"]
    assert {t["python_wheel_task"]["entry_point"] for t in tasks} == {"deparrot"}
    variables = {k: v["default"] for k, v in bundle["variables"].items()}
    for task in tasks:
        argv = []
        for arg in task["python_wheel_task"]["parameters"]:
            arg = arg.replace("${workspace.file_path}", str(ROOT))
            argv.append(re.sub(r"\$\{var\.(\w+)\}", lambda m: str(variables[m[1]]), arg))
        assert argv[0] in COMMANDS
        _, cfg = parse(argv)
        assert cfg.spark.master == "" and cfg.storage.root == ""  # the runtime's session
        assert cfg.storage.catalog == variables["catalog"]


def test_every_command_resolves_to_a_function():
    import importlib

    from jobs.cli import PLAIN_JOBS, SPARK_JOBS

    assert set(COMMANDS) == set(SPARK_JOBS) | set(PLAIN_JOBS)
    for module, name in (*SPARK_JOBS.values(), *PLAIN_JOBS.values()):
        assert callable(getattr(importlib.import_module(module), name))
