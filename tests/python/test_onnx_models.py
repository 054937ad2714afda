"""Imported ONNX models in SQL: every fixture of onnx_fixtures.py (scikit-learn pipelines with
one matrix input or one input per column, LightGBM, XGBoost, an LSTM and an attention block over
sequences) is imported with CREATE MODEL ... FROM, scored with PREDICT / PREDICT_PROBA over
psycopg, and must answer what Python onnxruntime answers on the same rows (within 1e-5).
Then: the relation form, EVALUATE, a restart (versions load lazily from the artifact
container), bad files and arguments (each with its SQLSTATE, the server staying up), the size
limit, and a server without the ONNX Runtime library."""

import json
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

import onnx_fixtures
from conftest import Server

NAMES = [
    "logistic_pipeline",
    "gbdt_multiclass_zipmap",
    "forest_regression",
    "mlp_classifier",
    "onehot_forest_pipeline",
    "lightgbm_classifier",
    "xgboost_regressor",
    "lstm_regressor",
    "attention_classifier",
    "encoder_embedding",
    "fixed_batch_regressor",
]


@pytest.fixture(scope="module")
def fixtures():
    out = Path(tempfile.mkdtemp(prefix="prognos-onnx-"))
    onnx_fixtures.generate(out)
    yield out
    shutil.rmtree(out, ignore_errors=True)


def spec(fixtures, name):
    return json.loads((fixtures / f"{name}.json").read_text())


def literal(value, sql_type):
    if sql_type == "text":
        return "'" + str(value).replace("'", "''") + "'"
    if sql_type == "real[]":
        return "ARRAY[" + ", ".join(repr(float(v)) for v in value) + "]"
    return repr(float(value))


def load_rows(conn, table, sql):
    columns = ", ".join(f"{c} {t}" for c, t in sql["columns"])
    conn.execute(f"CREATE TABLE {table} (id int, {columns})")
    rows = ", ".join(
        "(" + ", ".join([str(i)] + [literal(v, t) for v, (_, t) in zip(row, sql["columns"])]) + ")"
        for i, row in enumerate(sql["rows"])
    )
    conn.execute(f"INSERT INTO {table} VALUES {rows}")


def import_sql(name, path, options=None):
    with_clause = ""
    if options:
        with_clause = " WITH (" + ", ".join(f"{k} = '{v}'" for k, v in options.items()) + ")"
    return f"CREATE MODEL {name} FROM '{path}'{with_clause}"


def label_key(label):
    """prognos orders labels as numbers when they all are (as ZipMap keys come)."""
    try:
        return (0, int(label), "")
    except ValueError:
        return (1, 0, label)


def expected_classes(s):
    """(labels in prognos's order, per-row probabilities in that order, per-row labels)."""
    sql, expected = s["sql"], s["expected"]
    proba = expected[sql["proba"]]
    if "maps" in proba:
        labels = sorted((k for k, _ in proba["maps"][0]), key=label_key)
        matrix = [[dict(row)[label] for label in labels] for row in proba["maps"]]
    else:
        k = proba["shape"][1]
        matrix = [proba["data"][r * k:(r + 1) * k] for r in range(proba["shape"][0])]
        given = sql.get("options", {}).get("labels")
        labels = [x.strip() for x in given.split(",")] if given else [str(c) for c in range(k)]
    if "label" in sql:
        predicted = [str(v) for v in expected[sql["label"]]["data"]]
    else:
        predicted = [labels[max(range(len(row)), key=row.__getitem__)] for row in matrix]
    return labels, matrix, predicted


def close(a, b):
    return abs(a - b) <= 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_fixture_scores_in_sql_as_onnxruntime_does(server, fixtures, name):
    s = spec(fixtures, name)
    sql = s["sql"]
    args = ", ".join(c for c, _ in sql["columns"])
    table = f"rows_{name}"
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute(import_sql(name, fixtures / f"{name}.onnx", sql.get("options")))
        assert any(f'model "{name}" version 1: onnx' in n for n in notices), notices
        load_rows(conn, table, sql)
        described = dict(conn.execute(f"DESCRIBE MODEL {name}").fetchall())
        assert described["algorithm"] == "onnx"
        assert "input" in described and "output" in described, described
        if "vector" in sql:
            want = s["expected"][sql["vector"]]
            d = want["shape"][1]
            got = [r[0] for r in conn.execute(f"SELECT PREDICT('{name}', {args}) FROM {table} ORDER BY id")]
            assert len(got) == 64 and all(len(v) == d for v in got)
            for i, v in enumerate(got):
                w = want["data"][i * d:(i + 1) * d]
                assert all(close(a, b) for a, b in zip(v, w)), f"{name} row {i}: {v} vs {w}"
            assert dict(conn.execute(f"DESCRIBE MODEL {name}").fetchall())["task"] == "embedding"
            relation = conn.execute(
                f"SELECT predicted_embedding FROM PREDICT('{name}', TABLE {table}) ORDER BY id"
            ).fetchall()
            assert [r[0] for r in relation] == got
            return
        if "value" in sql:
            want = s["expected"][sql["value"]]["data"]
            got = [r[0] for r in conn.execute(f"SELECT PREDICT('{name}', {args}) FROM {table} ORDER BY id")]
            assert len(got) == len(want) == 64
            for i, (g, w) in enumerate(zip(got, want)):
                assert close(g, w), f"{name} row {i}: {g} vs {w}"
            relation = conn.execute(
                f"SELECT predicted_value FROM PREDICT('{name}', TABLE {table}) ORDER BY id"
            ).fetchall()
            assert [r[0] for r in relation] == got
            return
        labels, matrix, predicted = expected_classes(s)
        rows = conn.execute(
            f"SELECT PREDICT('{name}', {args})::text, PREDICT_PROBA('{name}', {args}) "
            f"FROM {table} ORDER BY id"
        ).fetchall()
        assert len(rows) == 64
        assert [r[0] for r in rows] == predicted, name
        for i, ((_, p), want) in enumerate(zip(rows, matrix)):
            if len(labels) == 2:
                assert close(p, want[1]), f"{name} row {i}: {p} vs {want[1]}"
            else:
                assert len(p) == len(want)
                assert all(close(a, b) for a, b in zip(p, want)), f"{name} row {i}: {p} vs {want}"
        relation = conn.execute(
            f"SELECT predicted_label::text FROM PREDICT('{name}', TABLE {table}) ORDER BY id"
        ).fetchall()
        assert [r[0] for r in relation] == predicted


def test_evaluate_scores_an_imported_classifier(server, fixtures):
    s = spec(fixtures, "lightgbm_classifier")
    _, _, predicted = expected_classes(s)
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(import_sql("lgbm_eval", fixtures / "lightgbm_classifier.onnx"))
        load_rows(conn, "eval_rows", s["sql"])
        # The model's own labels as the truth: accuracy 1.
        conn.execute("CREATE TABLE eval_truth AS SELECT r.*, "
                     "PREDICT('lgbm_eval', f0, f1, f2, f3) AS label FROM eval_rows r")
        metrics = dict(conn.execute("SELECT metric, value FROM EVALUATE('lgbm_eval', TABLE eval_truth)").fetchall())
    assert metrics["accuracy"] == 1.0, metrics
    assert len(predicted) == 64


def test_imported_models_survive_a_restart(fixtures):
    server = Server(demo=False)
    try:
        query = "SELECT PREDICT_PROBA('gz', 0.1, 0.2, 0.3, 0.4), PREDICT('xg', 0.1, 0.2, 0.3, 0.4)"
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute(import_sql("gz", fixtures / "gbdt_multiclass_zipmap.onnx"))
            # A source that disappears after the import: the registry keeps its own copy.
            copy = fixtures / "xg_copy.onnx"
            shutil.copy(fixtures / "xgboost_regressor.onnx", copy)
            conn.execute(import_sql("xg", copy))
            copy.unlink()
            before = conn.execute(query).fetchone()
        server.stop()
        server.start()
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            assert conn.execute(query).fetchone() == before
            versions = conn.execute(
                "SELECT name, algorithm FROM system.models ORDER BY name").fetchall()
            assert versions == [("gz", "onnx"), ("xg", "onnx")]
            # A second version of the same name, then DROP MODEL removes every version.
            conn.execute(f"CREATE OR REPLACE MODEL gz FROM '{fixtures / 'mlp_classifier.onnx'}'")
            assert dict(conn.execute("DESCRIBE MODEL gz").fetchall())["version"] == "2"
            conn.execute("DROP MODEL gz")
        assert not (Path(server.data_dir) / "models" / "gz").exists()
    finally:
        server.close()


def external_data_graph(folder, location):
    """A small regression graph (x[N, 4] @ W[4, 8] -> relu -> @ V[8, 1]) saved with its
    weights in the external-data file `location` (relative to the graph); returns the graph's
    path and onnxruntime's answers on ROWS."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.normal(size=(4, 8)).astype(np.float32), "W")
    v = numpy_helper.from_array(rng.normal(size=(8, 1)).astype(np.float32), "V")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]),
         helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "V"], ["value"])],
        "external_weights",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["N", 1])],
        initializer=[w, v],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (folder / location).parent.mkdir(parents=True, exist_ok=True)
    path = folder / "net.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)
    x = np.array(EXTERNAL_ROWS, dtype=np.float32)
    want = ort.InferenceSession(str(path)).run(None, {"x": x})[0][:, 0]
    return path, [float(a) for a in want]


EXTERNAL_ROWS = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0], [-0.3, 0.8, 0.0, 1.5]]
EXTERNAL_QUERY = ("SELECT PREDICT('ext', a, b, c, d) FROM (VALUES "
                  + ", ".join(f"({a}, {b}, {c}, {d}, {i})" for i, (a, b, c, d) in enumerate(EXTERNAL_ROWS))
                  + ") AS t(a, b, c, d, i) ORDER BY i")


def test_external_data_files_are_copied_into_the_version(tmp_path):
    """A graph whose weights live in an external-data file (in a subfolder) imports with that
    file copied beside it: it scores as onnxruntime does after the source is gone and after
    a restart; a location outside the graph's folder and a missing file are refused."""
    source = tmp_path / "src"
    path, want = external_data_graph(source, "weights/params.bin")
    assert (source / "weights" / "params.bin").is_file()
    server = Server(demo=False)
    try:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute(import_sql("ext", path))
            shutil.rmtree(source)
            got = [r[0] for r in conn.execute(EXTERNAL_QUERY).fetchall()]
            assert all(close(a, b) for a, b in zip(got, want, strict=True)), (got, want)
        version = Path(server.data_dir) / "models" / "ext" / "v0001"
        assert (version / "weights" / "params.bin").is_file()
        server.stop()
        server.start()
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            again = [r[0] for r in conn.execute(EXTERNAL_QUERY).fetchall()]
            assert again == got
            # Tensor data named outside the graph's folder: refused before anything reads it.
            outside, _ = external_data_graph(tmp_path / "escape", "params.bin")
            graph = onnx_load_raw(outside)
            for t in graph.graph.initializer:
                for entry in t.external_data:
                    if entry.key == "location":
                        entry.value = "../secret.bin"
            (tmp_path / "secret.bin").write_bytes((tmp_path / "escape" / "params.bin").read_bytes())
            outside.write_bytes(graph.SerializeToString())
            state, message = sqlstate_of(conn, import_sql("escape", outside))
            assert state == "22023" and "leaves the graph's directory" in message, message
            # The weights file missing.
            missing, _ = external_data_graph(tmp_path / "missing", "gone.bin")
            (tmp_path / "missing" / "gone.bin").unlink()
            state, message = sqlstate_of(conn, import_sql("missing", missing))
            assert state == "58P01" and "gone.bin" in message, message
            assert conn.execute(EXTERNAL_QUERY).fetchall() == [(v,) for v in got]
    finally:
        server.close()


def onnx_load_raw(path):
    """The ModelProto at `path` without loading its external data."""
    import onnx

    return onnx.load_model(str(path), load_external_data=False)


def test_device_option_falls_back_to_the_cpu_and_is_counted(server, fixtures):
    """Without a CUDA build and library, `device = 'cuda'` runs on the CPU with one NOTICE;
    DESCRIBE MODEL shows both devices and /metrics counts the rows per device."""
    import urllib.request

    def cpu_rows():
        text = urllib.request.urlopen(f"http://{server.http}/metrics").read().decode()
        line = next(x for x in text.splitlines()
                    if x.startswith('prognos_inference_rows_total{device="cpu"}'))
        return int(float(line.split()[-1]))

    with psycopg.connect(server.dsn, autocommit=True) as conn:
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute(import_sql("on_gpu", fixtures / "mlp_classifier.onnx", {"device": "cuda:0"}))
        assert any("cuda:0" in n and "runs on the CPU" in n for n in notices), notices
        described = dict(conn.execute("DESCRIBE MODEL on_gpu").fetchall())
        assert (described["device"], described["effective_device"]) == ("cuda:0", "cpu"), described
        listed = conn.execute(
            "SELECT device, effective_device FROM system.models WHERE name = 'on_gpu'").fetchone()
        assert listed == ("cuda:0", "cpu"), listed
        before = cpu_rows()
        conn.execute("SELECT PREDICT('on_gpu', x, x, x, x) FROM "
                     "(SELECT CAST(value AS real) / 100 AS x FROM generate_series(1, 500))").fetchall()
        assert cpu_rows() - before == 500
        state, message = sqlstate_of(
            conn, import_sql("tpu", fixtures / "mlp_classifier.onnx", {"device": "tpu"}))
        assert state == "22023" and "device" in message, message


def metrics_text(server):
    import urllib.request

    return urllib.request.urlopen(f"http://{server.http}/metrics").read().decode()


def test_gpu_memory_and_utilisation_are_in_metrics_when_the_machine_has_gpus(server, tmp_path):
    """/metrics reports each GPU's memory and utilisation from nvidia-smi, which ships with
    the NVIDIA driver: a machine without it has no GPU series; with it (here a stand-in on
    the server's PATH printing what nvidia-smi prints for two GPUs) one series per GPU."""
    import os

    assert "prognos_gpu_memory_used_bytes{" not in metrics_text(server)
    fake = tmp_path / "bin"
    fake.mkdir()
    smi = fake / "nvidia-smi"
    smi.write_text("#!/bin/sh\n"
                   "case \"$*\" in *--query-gpu=index,memory.used,memory.total,utilization.gpu*) ;;"
                   " *) exit 2;; esac\n"
                   "echo '0, 2048, 81559, 37'\necho '1, 0, 81559, 0'\n")
    smi.chmod(0o755)
    with_gpus = Server(demo=False, env={"PATH": f"{fake}:{os.environ['PATH']}"})
    try:
        text = metrics_text(with_gpus)
        series = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                  for line in text.splitlines() if line.startswith("prognos_gpu_")}
        assert series == {
            'prognos_gpu_memory_used_bytes{gpu="0"}': 2048 * 1024 * 1024,
            'prognos_gpu_memory_used_bytes{gpu="1"}': 0,
            'prognos_gpu_memory_total_bytes{gpu="0"}': 81559 * 1024 * 1024,
            'prognos_gpu_memory_total_bytes{gpu="1"}': 81559 * 1024 * 1024,
            'prognos_gpu_utilization_ratio{gpu="0"}': 0.37,
            'prognos_gpu_utilization_ratio{gpu="1"}': 0.0,
        }, series
    finally:
        with_gpus.close()


def test_session_device_setting_is_checked_and_scores_on_the_device_it_gets(server, fixtures):
    """`SET prognos.device` overrides each model's device for the session: checked when set
    (22023), a NOTICE when the CUDA device it names is not here, answers unchanged on the
    CPU it falls back to, and RESET goes back to each model's own device."""
    import urllib.request

    def cpu_rows():
        text = urllib.request.urlopen(f"http://{server.http}/metrics").read().decode()
        line = next(x for x in text.splitlines()
                    if x.startswith('prognos_inference_rows_total{device="cpu"}'))
        return int(float(line.split()[-1]))

    query = ("SELECT PREDICT_PROBA('per_session', x, x, x, x) FROM "
             "(SELECT CAST(value AS real) / 100 AS x FROM generate_series(1, 300)) ORDER BY x")
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute(import_sql("per_session", fixtures / "mlp_classifier.onnx"))
        assert conn.execute("SHOW prognos.device").fetchone() == ("",)
        own = conn.execute(query).fetchall()
        conn.execute("SET prognos.device = 'cuda:1'")
        assert any("cuda:1" in n and "models run on the CPU" in n for n in notices), notices
        assert conn.execute("SHOW prognos.device").fetchone() == ("cuda:1",)
        before = cpu_rows()
        assert conn.execute(query).fetchall() == own
        assert cpu_rows() - before == 300
        state, message = sqlstate_of(conn, "SET prognos.device = 'tpu'")
        assert state == "22023" and "prognos.device" in message, message
        assert conn.execute("SHOW prognos.device").fetchone() == ("cuda:1",)
        conn.execute("SET prognos.device = 'cpu'")
        assert conn.execute(query).fetchall() == own
        conn.execute("RESET prognos.device")
        assert conn.execute("SHOW prognos.device").fetchone() == ("",)
        assert conn.execute(query).fetchall() == own
        conn.execute("SET prognos.device = 'cpu'")
        conn.execute("RESET ALL")
        assert conn.execute("SHOW prognos.device").fetchone() == ("",)
        conn.execute("SET prognos.device = 'cpu'")
        conn.execute("SET prognos.device = ''")
        assert conn.execute("SHOW prognos.device").fetchone() == ("",)
    # Another session never sees this one's setting.
    with psycopg.connect(server.dsn, autocommit=True) as other:
        assert other.execute("SHOW prognos.device").fetchone() == ("",)


def sqlstate_of(conn, sql):
    with pytest.raises(psycopg.Error) as err:
        conn.execute(sql)
    return err.value.sqlstate, str(err.value)


def odd_graphs(tmp_path):
    """A graph that fails at run time for most batch sizes (a Reshape to rows of 3 values
    of a [N, 4] input), and one that asks for an opset no runtime has."""
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    shape = numpy_helper.from_array(np.array([-1, 3], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"]),
         helper.make_node("ReduceSum", ["y"], ["value"], keepdims=1)],
        "breaks_at_run_time",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["M", 1])],
        initializer=[shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 8
    fails = tmp_path / "fails_at_run_time.onnx"
    fails.write_bytes(model.SerializeToString())
    model.opset_import[0].version = 99
    future = tmp_path / "future_opset.onnx"
    future.write_bytes(model.SerializeToString())
    return fails, future


def test_bad_files_and_arguments_are_clear_errors(server, fixtures, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf")
    truncated = tmp_path / "truncated.onnx"
    whole = (fixtures / "lightgbm_classifier.onnx").read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    lr = fixtures / "logistic_pipeline.onnx"
    fails, future = odd_graphs(tmp_path)
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        cases = [
            (import_sql("bad0", future), "22023", "ONNX Runtime"),
            (import_sql("bad1", garbage), "22023", "ONNX Runtime"),
            (import_sql("bad2", truncated), "22023", "ONNX Runtime"),
            (import_sql("bad3", tmp_path / "missing.onnx"), "58P01", "could not read model file"),
            (import_sql("bad4", tmp_path), "58P01", "not a regular file"),
            (import_sql("bad5", lr, {"colour": "red"}), "22023", "unknown option"),
            (import_sql("bad6", lr, {"task": "ranking"}), "22023", "not supported"),
            (import_sql("bad7", lr, {"outputs": "nope"}), "22023", "no output"),
            (import_sql("bad8", lr, {"inputs": "a, b"}), "22023", "takes 4"),
            (import_sql("bad9", fixtures / "attention_classifier.onnx"), "22023", "task = 'classification'"),
            ("CREATE MODEL bad10 FROM 42", "42601", "quoted path"),
        ]
        for sql, state, text in cases:
            got, message = sqlstate_of(conn, sql)
            assert got == state and text in message, (sql, got, message)
        conn.execute(import_sql("lr", lr))
        conn.execute(import_sql("seq", fixtures / "lstm_regressor.onnx"))
        conn.execute(import_sql("fails", fails))
        # Three rows of four values reshape to four rows of three: not one answer per row.
        # One row of four values does not reshape to rows of three at all.
        rows3 = "(VALUES (1.0, 2.0, 3.0, 4.0), (1.0, 2.0, 3.0, 4.0), (1.0, 2.0, 3.0, 4.0)) AS t(a, b, c, d)"
        cases = [
            ("SELECT PREDICT('lr', 1, 2)", "22023", "takes 4 argument(s)"),
            ("SELECT PREDICT('lr', 'a', 1, 2, 3)", "42804", "f0"),
            ("SELECT PREDICT('seq', 1.0)", "42804", "list of numbers"),
            ("SELECT PREDICT('seq', ARRAY[1.0, 2.0])", "22023", "takes 18"),
            ("SELECT PREDICT('seq', CAST(NULL AS real[]))", "22023", "NULL"),
            ("SELECT PREDICT('fails', 1.0, 2.0, 3.0, 4.0)", "22000", "ONNX Runtime"),
            (f"SELECT PREDICT('fails', a, b, c, d) FROM {rows3}", "22000", "not one answer per row"),
            ("SELECT * FROM EXPLAIN_PREDICT('lr', (SELECT 1.0 AS f0, 1.0 AS f1, 1.0 AS f2, 1.0 AS f3))",
             "22023", "imported"),
        ]
        for sql, state, text in cases:
            got, message = sqlstate_of(conn, sql)
            assert got == state and text in message, (sql, got, message)
        # NULL in a float input is NaN, as in onnxruntime: the model still answers.
        (label,) = conn.execute("SELECT PREDICT('lr', NULL, 1.0, 2.0, 3.0)").fetchone()
        assert label in (0, 1)
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert server.alive()


def test_size_limit_and_a_server_without_the_runtime(fixtures):
    limited = Server(demo=False, env={"PROGNOS__MODELS__MAX_IMPORT_MB": "0"})
    try:
        with psycopg.connect(limited.dsn, autocommit=True) as conn:
            state, message = sqlstate_of(conn, import_sql("big", fixtures / "mlp_classifier.onnx"))
            assert state == "54000" and "max_import_mb" in message, message
    finally:
        limited.close()

    server = Server(demo=True)
    try:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute(import_sql("lr", fixtures / "logistic_pipeline.onnx"))
        # The same data dir on a server without the library: the model is listed and
        # described, scoring it says what to install, and everything else works.
        server.stop()
        server.env["ORT_DYLIB_PATH"] = ""
        server.start()
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            assert dict(conn.execute("DESCRIBE MODEL lr").fetchall())["algorithm"] == "onnx"
            state, message = sqlstate_of(conn, "SELECT PREDICT('lr', 1, 2, 3, 4)")
            assert state == "58P01" and "pip install onnxruntime" in message, message
            state, message = sqlstate_of(conn, import_sql("mlp", fixtures / "mlp_classifier.onnx"))
            assert state == "58P01" and "ORT_DYLIB_PATH" in message, message
            conn.execute(
                "CREATE MODEL native PREDICT churned USING logistic AS "
                "SELECT tenure_months, monthly_charges, churned FROM customers")
            (n,) = conn.execute(
                "SELECT count(*) FROM customers WHERE PREDICT('native', tenure_months, "
                "monthly_charges) IS NOT NULL").fetchone()
            assert n == 1000
        assert server.alive()
    finally:
        server.close()


def test_versions_written_before_the_container_still_load():
    """A registry whose version is a lone `<model>/v0001.json` (the layout before artifact
    containers) loads and scores as before."""
    server = Server(demo=True)
    try:
        probe = "SELECT sum(PREDICT_PROBA('old', tenure_months, monthly_charges)) FROM customers"
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute("CREATE MODEL old PREDICT churned USING logistic AS "
                         "SELECT tenure_months, monthly_charges, churned FROM customers")
            before = conn.execute(probe).fetchone()
        server.stop()
        models = Path(server.data_dir) / "models"
        (models / "old" / "v0001" / "artifact.json").rename(models / "old" / "v0001.json")
        (models / "old" / "v0001").rmdir()
        registry = json.loads((models / "registry.json").read_text())
        registry["models"]["old"]["versions"][0]["artifact"] = "old/v0001.json"
        (models / "registry.json").write_text(json.dumps(registry))
        server.start()
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            assert conn.execute(probe).fetchone() == before
    finally:
        server.close()
