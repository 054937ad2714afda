"""dbt-postgres against the real server: `dbt debug`, `dbt run` of a table and a view model
(twice: the second run replaces both, renaming inside a transaction as dbt does), and
`dbt docs generate`, whose catalog query must describe the models and the source."""

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

DBT = str(Path(sys.executable).parent / "dbt")

PROJECT = """
name: prognos_demo
version: "1.0"
profile: prognos
models:
  prognos_demo:
    +materialized: table
"""

PROFILES = """
prognos:
  target: dev
  outputs:
    dev:
      type: postgres
      host: {host}
      port: {port}
      user: prognos
      password: ""
      dbname: prognos
      schema: public
      threads: 1
"""

SOURCES = """
version: 2
sources:
  - name: demo
    schema: public
    tables:
      - name: customers
"""

TABLE_MODEL = """
select plan, count(*) as customers,
       avg(case when churned then 1.0 else 0.0 end) as churn_rate
from {{ source('demo', 'customers') }}
group by plan
"""

VIEW_MODEL = """
{{ config(materialized='view') }}
select plan, customers from {{ ref('churn_by_plan') }} where customers > 0
"""


@pytest.fixture(scope="module")
def project(server, tmp_path_factory):
    root = tmp_path_factory.mktemp("dbt")
    (root / "models").mkdir()
    (root / "dbt_project.yml").write_text(PROJECT)
    (root / "profiles.yml").write_text(PROFILES.format(host=server.pg_host, port=server.pg_port))
    (root / "models" / "sources.yml").write_text(SOURCES)
    (root / "models" / "churn_by_plan.sql").write_text(TABLE_MODEL)
    (root / "models" / "plans_view.sql").write_text(VIEW_MODEL)
    return root


def dbt(project, *args):
    env = dict(os.environ, DBT_SEND_ANONYMOUS_USAGE_STATS="false", DBT_VERSION_CHECK="false")
    out = subprocess.run([DBT, *args, "--profiles-dir", str(project), "--project-dir", str(project)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_dbt_debug_run_and_docs(server, project):
    assert "All checks passed" in dbt(project, "debug")
    for _ in range(2):
        out = dbt(project, "run")
        assert "PASS=2" in out, out
    with psycopg.connect(server.dsn) as conn:
        plans = conn.execute("SELECT plan, customers FROM plans_view ORDER BY plan").fetchall()
        total = conn.execute("SELECT count(*) FROM customers").fetchone()[0]
        leftovers = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_name LIKE '%dbt%'"
        ).fetchall()
    assert sum(n for _, n in plans) == total and len(plans) == 3
    assert leftovers == [], "dbt's temporary and backup relations are gone"
    dbt(project, "docs", "generate")
    catalog = json.loads((project / "target" / "catalog.json").read_text())
    assert catalog["errors"] is None
    table = catalog["nodes"]["model.prognos_demo.churn_by_plan"]
    assert table["metadata"]["type"] == "BASE TABLE"
    assert {c: v["type"] for c, v in table["columns"].items()} == {
        "plan": "text", "customers": "bigint", "churn_rate": "double precision"}
    assert catalog["nodes"]["model.prognos_demo.plans_view"]["metadata"]["type"] == "VIEW"
    assert "source.prognos_demo.demo.customers" in catalog["sources"]
