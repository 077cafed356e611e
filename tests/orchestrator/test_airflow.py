"""The generated Airflow DAG files (valid Python with the hand-over settings)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.orchestrator.conftest import Project


def test_airflow_dags_parse_and_hand_over_retries_to_elt(project: Project, tmp_path: Path) -> None:
    proc = project.elt("airflow", "--out", str(tmp_path / "dags"), ELT_JOBS="jaffle_shop,jaffle_app,transform")
    assert proc.returncode == 0, proc.stderr
    files = sorted(p.name for p in (tmp_path / "dags").glob("*.py"))
    assert files == ["elt_jaffle_app.py", "elt_jaffle_shop.py", "elt_transform.py"]
    for name in files:
        source = (tmp_path / "dags" / name).read_text()
        tree = ast.parse(source)  # valid Python
        compile(tree, name, "exec")
        calls = {kw.arg: kw.value for node in ast.walk(tree) if isinstance(node, ast.Call) for kw in node.keywords}
        assert ast.literal_eval(calls["max_active_runs"]) == 1
        assert ast.literal_eval(calls["retries"]) == 0 and ast.literal_eval(calls["catchup"]) is False
        job = name[len("elt_"):-3]
        assert ast.literal_eval(calls["bash_command"]) == f"elt run-job {job} --trigger airflow"
    app = (tmp_path / "dags" / "elt_jaffle_app.py").read_text()
    assert "schedule='*/15 * * * *'" in app
