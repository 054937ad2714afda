"""EXPORT MODEL: models trained in SQL written as ONNX-ML graphs that Python onnxruntime scores
exactly as prognos does (within 1e-5), with text features, NULLs and unseen categories; an
exported model imported back with CREATE MODEL ... FROM; and the errors."""

import numpy as np
import onnxruntime as ort
import psycopg
import pytest

ROWS = """CREATE TABLE export_rows AS SELECT customer_id,
    CASE WHEN customer_id % 11 = 0 THEN NULL
         WHEN customer_id % 13 = 0 THEN 'platinum' ELSE plan END AS plan,
    CASE WHEN customer_id % 7 = 0 THEN NULL ELSE tenure_months END AS tenure_months,
    monthly_charges, support_calls, churned
  FROM customers"""

FEATURES = ["plan", "tenure_months", "monthly_charges", "support_calls"]

MODELS = [
    # name, target, USING, options, kind
    ("ex_gbdt_binary", "churned", "gbdt", "num_trees = 40", "binary"),
    ("ex_forest_binary", "churned", "random_forest", "num_trees = 15", "binary"),
    ("ex_gbdt_multiclass", "support_calls", "gbdt", "num_trees = 20, task = 'classification'", "multiclass"),
    ("ex_gbdt_regression", "monthly_charges", "gbdt", "num_trees = 30", "regression"),
    ("ex_forest_regression", "monthly_charges", "random_forest", "num_trees = 10", "regression"),
    ("ex_logistic_binary", "churned", "logistic", "lambda = 1", "binary"),
    ("ex_logistic_multiclass", "support_calls", "logistic", "task = 'classification'", "multiclass"),
    ("ex_linear_regression", "monthly_charges", "linear", "lambda = 1", "regression"),
    ("ex_mlp_binary", "churned", "mlp", "hidden_layers = '16,8', epochs = 30", "binary"),
    ("ex_mlp_multiclass", "support_calls", "mlp", "epochs = 20, task = 'classification'", "multiclass"),
    ("ex_mlp_regression", "monthly_charges", "mlp", "hidden_layers = '8', epochs = 20", "regression"),
]


@pytest.fixture(scope="module")
def rows(server):
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(ROWS)
        return conn.execute(
            "SELECT plan, tenure_months, monthly_charges, support_calls FROM export_rows "
            "ORDER BY customer_id").fetchall()


def feeds(session, rows, features):
    out = {}
    for i in session.get_inputs():
        j = features.index(i.name)
        if i.type == "tensor(string)":
            # ONNX has no NULL string: a NULL is sent as '' (an unseen category, as in prognos).
            out[i.name] = np.array([r[j] or "" for r in rows], dtype=object).reshape(-1, 1)
        else:
            out[i.name] = np.array([np.nan if r[j] is None else float(r[j]) for r in rows],
                                   dtype=np.float32).reshape(-1, 1)
    return out


@pytest.mark.parametrize("name,target,using,options,kind", MODELS)
def test_export_scores_in_onnxruntime_as_in_prognos(server, rows, tmp_path, name, target, using, options, kind):
    features = [f for f in FEATURES if f != target]
    args = ", ".join(features)
    path = tmp_path / f"{name}.onnx"
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        # Rows with the unseen category 'platinum' are kept out of training.
        train = f"SELECT {args}, {target} FROM export_rows WHERE customer_id % 13 <> 0"
        conn.execute(f"CREATE MODEL {name} PREDICT {target} USING {using} WITH ({options}) AS {train}")
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute(f"EXPORT MODEL {name} TO '{path}'")
        assert any("as ONNX" in n for n in notices), notices
        if kind == "regression":
            ours = [r[0] for r in conn.execute(
                f"SELECT PREDICT('{name}', {args}) FROM export_rows ORDER BY customer_id")]
        else:
            ours = conn.execute(
                f"SELECT PREDICT('{name}', {args})::text, PREDICT_PROBA('{name}', {args}) "
                "FROM export_rows ORDER BY customer_id").fetchall()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    indices = [FEATURES.index(f) for f in features]
    picked = [[r[i] for i in indices] for r in rows]
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds(session, picked, features))))
    assert len(ours) == len(rows) == 1000
    if kind == "regression":
        got = outputs["variable"].ravel()
        for i, (a, b) in enumerate(zip(got, ours)):
            assert abs(a - b) <= 1e-5 * max(1.0, abs(b)), f"{name} row {i}: {a} vs {b}"
        return
    labels = [str(v) for v in outputs["label"]]
    proba = outputs["probabilities"]
    assert labels == [r[0] for r in ours], name
    for i, (row, (_, p)) in enumerate(zip(proba, ours)):
        if kind == "binary":
            assert abs(row[1] - p) <= 1e-5, f"{name} row {i}: {row[1]} vs {p}"
        else:
            assert max(abs(a - b) for a, b in zip(row, p)) <= 1e-5, f"{name} row {i}: {row} vs {p}"


def test_exported_kmeans_assigns_the_same_clusters(server, rows, tmp_path):
    path = tmp_path / "segments.onnx"
    args = ", ".join(FEATURES)
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE MODEL ex_segments USING kmeans WITH (k = 4) AS SELECT {args} "
                     "FROM export_rows WHERE customer_id % 13 <> 0")
        conn.execute(f"EXPORT MODEL ex_segments TO '{path}'")
        ours = [r[0] for r in conn.execute(
            f"SELECT PREDICT('ex_segments', {args}) FROM export_rows ORDER BY customer_id")]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (label,) = session.run(None, feeds(session, rows, FEATURES))
    assert len(set(ours)) == 4
    assert label.tolist() == ours


def test_an_exported_model_imports_back(server, rows, tmp_path):
    path = tmp_path / "round_trip.onnx"
    args = ", ".join(FEATURES)
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE MODEL rt PREDICT churned USING gbdt WITH (num_trees = 25) AS "
                     f"SELECT {args}, churned FROM export_rows")
        conn.execute(f"EXPORT MODEL rt VERSION 1 TO '{path}'")
        conn.execute(f"CREATE MODEL rt_back FROM '{path}' WITH (labels = 'false, true')")
        # NULL text cannot enter an ONNX string input: compare on rows without NULL text.
        pairs = conn.execute(
            f"SELECT PREDICT_PROBA('rt', {args}), PREDICT_PROBA('rt_back', {args}), "
            f"PREDICT('rt', {args})::text, PREDICT('rt_back', {args}) "
            "FROM export_rows WHERE plan IS NOT NULL ORDER BY customer_id").fetchall()
    assert len(pairs) > 900
    for a, b, la, lb in pairs:
        assert abs(a - b) <= 1e-5 and la == lb


def test_export_errors(server, rows, tmp_path):
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE MODEL ex_anomalies DETECT ANOMALIES AS "
                     "SELECT tenure_months, monthly_charges FROM export_rows")
        conn.execute("CREATE MODEL ex_dates PREDICT churned USING gbdt WITH (num_trees = 5) AS "
                     "SELECT DATE '2026-01-01' + CAST(customer_id AS int) AS d, churned FROM export_rows")
        conn.execute("CREATE MODEL ex_ok PREDICT churned USING gbdt WITH (num_trees = 5) AS "
                     "SELECT tenure_months, churned FROM export_rows")
        for sql, state, text in [
            (f"EXPORT MODEL ex_anomalies TO '{tmp_path / 'a.onnx'}'", "22023", "isolation_forest"),
            (f"EXPORT MODEL ex_dates TO '{tmp_path / 'd.onnx'}'", "22023", "date or timestamp"),
            (f"EXPORT MODEL nope TO '{tmp_path / 'n.onnx'}'", "42704", "does not exist"),
            (f"EXPORT MODEL ex_ok VERSION 7 TO '{tmp_path / 'v.onnx'}'", "42704", "no version 7"),
            (f"EXPORT MODEL ex_ok TO '{tmp_path / 'missing_dir' / 'x.onnx'}'", "58P01", "could not write"),
            ("EXPORT MODEL ex_ok TO nowhere", "42601", "quoted path"),
        ]:
            with pytest.raises(psycopg.Error) as err:
                conn.execute(sql)
            assert err.value.sqlstate == state and text in str(err.value), (sql, err.value.sqlstate, str(err.value))
        assert conn.execute("SELECT 1").fetchone() == (1,)
