"""The CLI from the stage registry, and how it speaks to people about bad input."""

import re
from pathlib import Path

import pytest
import yaml

from jobs import cli
from jobs.stages import STAGE_MODULES, all_stages, get_stage, pipeline_stages, producer_of

ROOT = Path(__file__).resolve().parents[2]


def test_unknown_key_exits_2_and_names_it(capsys):
    assert cli.main(["ingest", "--set", "ingest.famliy=x"]) == 2
    err = capsys.readouterr().err
    assert "ingest.famliy" in err and len(err.strip().splitlines()) == 1


def test_unreadable_config_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("storage: [unclosed\n")
    assert cli.main(["ingest", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot read config file" in err and "bad.yaml" in err
    assert cli.main(["ingest", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_settings_checks_become_config_errors(capsys):
    assert cli.main(["score", "--set", "score.recognize=sometimes"]) == 2
    assert "recognize must be none, texted or all" in capsys.readouterr().err
    assert cli.main(["score", "--set", "score.spotter=deepsolo"]) == 2
    assert "import path" in capsys.readouterr().err
    assert cli.main(["download", "--set", "download.resize.resize_mode=stretch"]) == 2
    assert "download.resize.resize_mode must be one of" in capsys.readouterr().err


def test_flag_shortcuts_become_config():
    stage, cfg, _ = cli.parse(["ingest", "--config", str(ROOT / "conf/local.yaml"),
                               "--input", "/data/x", "--family", "datacomp"])
    assert stage.name == "ingest"
    assert (cfg.ingest.input, cfg.ingest.family) == ("/data/x", "datacomp")
    assert cfg.spark.master == "local[2]" and cfg.storage.root == "data/lake"


def test_nested_executor_settings_from_yaml_and_set():
    _, cfg, _ = cli.parse(["download", "--config", str(ROOT / "conf/demo.yaml"),
                           "--set", "download.fetch.timeout_s=3",
                           "--set", "score.spotter_options.det_limit_side_len=736"])
    assert cfg.download.fetch.allowed_networks == ("127.0.0.1/32",)
    assert cfg.download.fetch.timeout_s == 3.0
    assert cfg.download.resize.resize_mode.value == "keep_ratio_largest"
    assert cfg.score.spotter_options == {"det_limit_side_len": 736}
    assert cfg.score.settings().spotter_options == {"det_limit_side_len": 736}


def test_registry_drives_parser_and_pipeline():
    names = [s.name for s in all_stages()]
    assert len(names) == len(set(names))
    assert [s.name for s in pipeline_stages()] == [
        "ingest", "download", "score", "cluster-train", "cluster-assign", "dedup", "publish"]
    parser = cli.build_parser(all_stages())
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(names)
    for stage in all_stages():
        assert callable(stage.run) and stage.help
    assert get_stage("run").run.__module__ == "jobs.pipeline"
    assert len(STAGE_MODULES) == len(set(STAGE_MODULES))


def test_submit_script_runs_any_stage():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(ROOT / "jobs/submit.py"), "ingest", "--help"],
                         capture_output=True, text=True, cwd="/", check=True).stdout
    assert "--input" in out and "LAION-style parquet" in out


def _bundle() -> dict:
    return yaml.safe_load((ROOT / "databricks.yml").read_text())


def _substitute(value, variables):
    if hasattr(value, "path") and hasattr(value, "value"):  # a bundles Variable reference
        value = value.value
    if isinstance(value, str):
        value = value.replace("${workspace.file_path}", str(ROOT))
        return re.sub(r"\$\{var\.(\w+)\}", lambda m: str(variables[m[1]]), value)
    if isinstance(value, list):
        return [_substitute(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, variables) for k, v in value.items()}
    return value


def test_bundle_jobs_load_as_typed_resources_and_match_the_registry():
    jobs_mod = pytest.importorskip("databricks.bundles.jobs")
    bundle = _bundle()
    variables = {k: v["default"] for k, v in bundle["variables"].items()}
    stages = {s.name: s for s in all_stages()}
    for job_name, job_dict in bundle["resources"]["jobs"].items():
        job = jobs_mod.Job.from_dict(job_dict)  # the bundle's own typed schema
        clusters = {c.job_cluster_key for c in job.job_clusters}
        keys = {t.task_key for t in job.tasks}
        for task in job.tasks:
            wheel = task.python_wheel_task
            assert (wheel.package_name, wheel.entry_point) == ("deparrot", "deparrot")
            assert task.job_cluster_key in clusters
            assert all(d.task_key in keys for d in task.depends_on or [])
            argv = _substitute(list(wheel.parameters), variables)
            stage = stages[argv[0]]
            assert task.job_cluster_key == ("gpu" if stage.gpu else "cpu"), task.task_key
            parsed, cfg, _ = cli.parse(argv)
            assert parsed is stage
            assert cfg.spark.master == "" and cfg.storage.root == ""  # the runtime's session
            assert cfg.storage.catalog == variables["catalog"]
            _assert_on_shared_storage(argv, cfg, variables["volume"])
            _assert_libraries_fit(task, stage.gpu)
        if job_name == "deparrot_pipeline":
            ran = [_substitute(t.python_wheel_task.parameters, variables)[0] for t in job.tasks]
            assert ran == [s.name for s in pipeline_stages()] + ["analyze", "report"]


def test_each_task_waits_for_the_tasks_that_write_what_its_stage_reads():
    """The stages declare the tables they read and write; in every bundle job a task
    that reads a table the job writes depends (transitively) on the task writing it."""
    pytest.importorskip("databricks.bundles.jobs")
    bundle = _bundle()
    variables = {k: v["default"] for k, v in bundle["variables"].items()}
    stages = {s.name: s for s in all_stages()}
    assert stages["score"].reads == ("metadata", "images")
    assert producer_of("images") == "download" and producer_of("rejects") == "ingest"
    checked = 0
    for job in bundle["resources"]["jobs"].values():
        stage_of = {t["task_key"]: stages[_substitute(
            t["python_wheel_task"]["parameters"], variables)[0]] for t in job["tasks"]}
        needs = {t["task_key"]: [d["task_key"] for d in t.get("depends_on", [])]
                 for t in job["tasks"]}

        written = {table for st in stage_of.values() for table in st.writes}
        for key, stage in stage_of.items():
            before = {table for k in _upstream(needs, key) for table in stage_of[k].writes}
            missing = (set(stage.reads) & written) - before - set(stage.writes)
            assert not missing, (key, missing)
            checked += len(set(stage.reads) & written)
    assert checked > 10
    for stage in all_stages():  # every table read is written by some stage
        assert all(producer_of(t) for t in stage.reads), stage.name


def _upstream(needs: dict[str, list[str]], key: str) -> set[str]:
    out: set[str] = set()
    for dep in needs[key]:
        out |= {dep} | _upstream(needs, dep)
    return out


def _assert_on_shared_storage(argv: list[str], cfg, volume: str) -> None:
    """Every path a task is given, and every file a stage writes, is on shared storage:
    the volume, or the bundle's workspace files (its config)."""
    assert volume.startswith("/Volumes/")
    for value in argv:
        path = value.split("=", 1)[1] if "=" in value else value
        if path.startswith("/") or "://" in path:
            assert path.startswith(("/Volumes/", str(ROOT))), value
    assert cfg.storage.files_root() == volume
    files = [cfg.cluster.artifacts, cfg.analyze.export_dir, cfg.report.out, cfg.export.out,
             cfg.train.logs]
    files += [f for f in (cfg.score.aesthetic_weights, cfg.cluster.published_pca,
                          cfg.cluster.published_centroids) if f]  # where a task sets them
    for where in files:
        assert cfg.shared(where).startswith(volume + "/"), where


CPU_ONLY = ("faiss-cpu", "onnxruntime")
GPU_ONLY = ("faiss-gpu-cu12", "onnxruntime-gpu")


def _assert_libraries_fit(task, gpu: bool) -> None:
    names = {re.split(r"[<>=!~ ]", lib.pypi.package)[0] for lib in task.libraries or []
             if lib.pypi is not None}
    wanted, unwanted = (GPU_ONLY, CPU_ONLY) if gpu else (CPU_ONLY, GPU_ONLY)
    assert set(wanted) <= names and not names & set(unwanted), (task.task_key, names)
    assert any(lib.whl for lib in task.libraries), task.task_key


def test_rapidocr_does_not_pull_in_a_cpu_onnxruntime():
    """The GPU cluster's onnxruntime-gpu is the only onnxruntime: rapidocr's own
    requirements (as installed) name no onnxruntime build."""
    from importlib.metadata import requires

    deps = [re.split(r"[<>=!~ ;\[]", r)[0].lower() for r in requires("rapidocr") or []
            if "extra ==" not in r]
    assert not [d for d in deps if d.startswith("onnxruntime")], deps
