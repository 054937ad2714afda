"""Generate the ONNX fixtures the tests score, with Python onnxruntime's outputs.

Usage: python onnx_fixtures.py OUT_DIR

For each fixture NAME it writes NAME.onnx, and NAME.json with the graph's feeds (every input
tensor: name, element type, shape, elements), the names of its outputs and what onnxruntime
answers on the feeds (every output, in the graph's order), and, under "sql", how the same rows
look as a table (column names and SQL types, one row per fed row) and which outputs answer
PREDICT / PREDICT_PROBA. Nothing is downloaded: the models are trained here on synthetic data
with fixed seeds and converted with skl2onnx / onnxmltools, or built node by node with the
`onnx` package's helper (the LSTM and the attention block; versions pinned in
requirements.txt).
"""

import json
import sys
from pathlib import Path

import lightgbm
import numpy as np
import onnx
import onnxruntime as ort
import xgboost
from onnx import TensorProto, helper, numpy_helper
from onnxmltools import convert_lightgbm, convert_xgboost
from onnxmltools.convert.common.data_types import FloatTensorType as MlFloat
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

ROWS = 64


def data(seed, n=400, k=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k)).astype(np.float32)
    y_class = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] + rng.normal(scale=0.5, size=n) > 0).astype(np.int64)
    y_multi = np.digitize(x[:, 0] + x[:, 3], [-0.7, 0.7]).astype(np.int64)
    y_value = (3 * x[:, 0] - 2 * x[:, 1] + x[:, 2] * x[:, 3]).astype(np.float32)
    return x, y_class, y_multi, y_value


def tensor_json(arr):
    arr = np.asarray(arr)
    kind = "string" if arr.dtype.kind in "OUS" else str(arr.dtype)
    data = [str(e) for e in arr.ravel()] if kind == "string" else arr.ravel().tolist()
    return {"dtype": kind, "shape": list(arr.shape), "data": data}


def outputs_json(values):
    out = []
    for v in values:
        if isinstance(v, list):  # ZipMap: one {label: probability} per row
            out.append({"maps": [[[str(k), float(p)] for k, p in sorted(row.items())] for row in v]})
        else:
            out.append(tensor_json(v))
    return out


def record(out_dir, name, onx, feeds, sql):
    """Write the graph, score `feeds` with onnxruntime, write the expectations."""
    path = out_dir / f"{name}.onnx"
    path.write_bytes(onx.SerializeToString())
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    values = sess.run(None, feeds)
    (out_dir / f"{name}.json").write_text(json.dumps({
        "feeds": [dict(name=k, **tensor_json(v)) for k, v in feeds.items()],
        "outputs": [o.name for o in sess.get_outputs()],
        "expected": outputs_json(values),
        "sql": sql,
    }))


def matrix_sql(x, **answer):
    """A [N, k] float matrix as a table of columns f0..f{k-1} (the names prognos gives them)."""
    return {
        "columns": [[f"f{j}", "real"] for j in range(x.shape[1])],
        "rows": x.tolist(),
        **answer,
    }


def sklearn_matrix(out_dir, name, model, x, zipmap, **answer):
    options = {id(model): {"zipmap": zipmap}} if zipmap is not None else None
    onx = to_onnx(model, x[:1], options=options, target_opset=17)
    rows = x[:ROWS]
    record(out_dir, name, onx, {onx.graph.input[0].name: rows}, matrix_sql(rows, **answer))


def onehot_pipeline(out_dir):
    """Text and number columns, one graph input each: one-hot + scaling + a forest."""
    rng = np.random.default_rng(11)
    n = 300
    plans = np.array(["basic", "plus", "pro"])[rng.integers(0, 3, size=n)]
    tenure = rng.uniform(1, 60, size=n).astype(np.float32)
    charges = rng.uniform(10, 120, size=n).astype(np.float32)
    churn = ((plans == "basic") & (tenure < 20)) | (charges > 100)
    y = np.where(churn, "churn", "stay")
    import pandas as pd

    frame = pd.DataFrame({"plan": plans, "tenure": tenure, "charges": charges})
    model = Pipeline([
        ("prep", ColumnTransformer([
            ("onehot", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
            ("scale", StandardScaler(), ["tenure", "charges"]),
        ])),
        ("forest", RandomForestClassifier(n_estimators=15, max_depth=5, random_state=0)),
    ]).fit(frame, y)
    onx = to_onnx(model, initial_types=[
        ("plan", StringTensorType([None, 1])),
        ("tenure", FloatTensorType([None, 1])),
        ("charges", FloatTensorType([None, 1])),
    ], target_opset=17)
    feeds = {
        "plan": plans[:ROWS].reshape(-1, 1).astype(object),
        "tenure": tenure[:ROWS].reshape(-1, 1),
        "charges": charges[:ROWS].reshape(-1, 1),
    }
    sql = {
        "columns": [["plan", "text"], ["tenure", "real"], ["charges", "real"]],
        "rows": [[str(p), float(t), float(c)] for p, t, c in zip(plans[:ROWS], tenure[:ROWS], charges[:ROWS])],
        "label": 0, "proba": 1,
    }
    record(out_dir, "onehot_forest_pipeline", onx, feeds, sql)


def lightgbm_classifier(out_dir, x, y):
    model = lightgbm.LGBMClassifier(n_estimators=40, num_leaves=15, random_state=0, verbose=-1).fit(x, y)
    onx = convert_lightgbm(model, initial_types=[("input", MlFloat([None, x.shape[1]]))],
                           zipmap=False, target_opset=15)
    rows = x[:ROWS]
    record(out_dir, "lightgbm_classifier", onx, {"input": rows}, matrix_sql(rows, label=0, proba=1))


def xgboost_regressor(out_dir, x, y):
    model = xgboost.XGBRegressor(n_estimators=40, max_depth=4, random_state=0).fit(x, y)
    onx = convert_xgboost(model, initial_types=[("input", MlFloat([None, x.shape[1]]))], target_opset=15)
    rows = x[:ROWS]
    record(out_dir, "xgboost_regressor", onx, {"input": rows}, matrix_sql(rows, value=0))


def sequence_sql(seq, **answer):
    """[N, T, k] sequences as one list column holding each row's T·k values, time-major."""
    return {
        "columns": [["x", "real[]"]],
        "rows": [[row.ravel().tolist()] for row in seq],
        **answer,
    }


def lstm_regressor(out_dir):
    """An LSTM over [N, T, k] sequences and a linear head: one value per row."""
    rng = np.random.default_rng(5)
    t, k, hidden = 6, 3, 8
    w = rng.normal(scale=0.4, size=(1, 4 * hidden, k)).astype(np.float32)
    r = rng.normal(scale=0.4, size=(1, 4 * hidden, hidden)).astype(np.float32)
    b = rng.normal(scale=0.1, size=(1, 8 * hidden)).astype(np.float32)
    head = rng.normal(scale=0.5, size=(hidden, 1)).astype(np.float32)
    bias = np.array([0.25], dtype=np.float32)
    nodes = [
        # ONNX Runtime runs LSTM time-major only: [N, T, k] → [T, N, k], as PyTorch exports do.
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node("LSTM", ["xt", "W", "R", "B"], ["y", "y_h"], hidden_size=hidden),
        helper.make_node("Reshape", ["y_h", "flat"], ["h"]),
        helper.make_node("MatMul", ["h", "head"], ["z"]),
        helper.make_node("Add", ["z", "bias"], ["value"]),
    ]
    graph = helper.make_graph(
        nodes, "lstm_regressor",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", t, k])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["N", 1])],
        initializer=[
            numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R"),
            numpy_helper.from_array(b, "B"), numpy_helper.from_array(head, "head"),
            numpy_helper.from_array(bias, "bias"),
            numpy_helper.from_array(np.array([-1, hidden], dtype=np.int64), "flat"),
        ],
    )
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onx.ir_version = 8
    onnx.checker.check_model(onx)
    seq = rng.normal(size=(ROWS, t, k)).astype(np.float32)
    record(out_dir, "lstm_regressor", onx, {"x": seq}, sequence_sql(seq, value=0))


def attention_classifier(out_dir):
    """A self-attention block (Q, K, V projections, scaled dot-product softmax, mean over time)
    and a softmax head over two classes: probabilities only, no label output."""
    rng = np.random.default_rng(9)
    t, d = 5, 4
    weights = {n: rng.normal(scale=0.5, size=(d, d)).astype(np.float32) for n in ("Wq", "Wk", "Wv")}
    out = rng.normal(scale=0.8, size=(d, 2)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "Wq"], ["q"]),
        helper.make_node("MatMul", ["x", "Wk"], ["k"]),
        helper.make_node("MatMul", ["x", "Wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Div", ["scores", "scale"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["attn"], axis=-1),
        helper.make_node("MatMul", ["attn", "v"], ["ctx"]),
        helper.make_node("ReduceMean", ["ctx", "time_axis"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", "Wo"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "attention_classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", t, d])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(v, n) for n, v in weights.items()] + [
            numpy_helper.from_array(out, "Wo"),
            numpy_helper.from_array(np.array(np.sqrt(d), dtype=np.float32), "scale"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "time_axis"),
        ],
    )
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onx.ir_version = 8
    onnx.checker.check_model(onx)
    seq = rng.normal(size=(ROWS, t, d)).astype(np.float32)
    record(out_dir, "attention_classifier", onx, {"x": seq},
           sequence_sql(seq, proba=0, options={"task": "classification", "labels": "calm,alert"}))


def encoder_embedding(out_dir, x):
    """An encoder: [N, 4] rows to [N, 8] vectors (a dense layer and tanh)."""
    rng = np.random.default_rng(13)
    w = rng.normal(scale=0.6, size=(x.shape[1], 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["h"]),
         helper.make_node("Tanh", ["h"], ["embedding"])],
        "encoder_embedding",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", x.shape[1]])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 8])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onx.ir_version = 8
    onnx.checker.check_model(onx)
    rows = x[:ROWS]
    record(out_dir, "encoder_embedding", onx, {"X": rows},
           matrix_sql(rows, vector=0, options={"task": "embedding"}))


def fixed_batch_regressor(out_dir, x):
    """A graph whose batch dimension is fixed at 3 (an export without dynamic axes): prognos
    scores it 3 rows at a time, padding the last run. onnxruntime's answers are computed the
    same way here, run by run."""
    rng = np.random.default_rng(17)
    w = rng.normal(size=(x.shape[1], 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["value"])],
        "fixed_batch_regressor",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [3, x.shape[1]])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, [3, 1])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onx.ir_version = 8
    onnx.checker.check_model(onx)
    path = out_dir / "fixed_batch_regressor.onnx"
    path.write_bytes(onx.SerializeToString())
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rows = x[:ROWS]
    values = []
    for start in range(0, ROWS, 3):
        part = rows[start:start + 3]
        padded = np.concatenate([part, np.repeat(part[-1:], 3 - len(part), axis=0)])
        values.append(sess.run(None, {"X": padded})[0][:len(part)])
    (out_dir / "fixed_batch_regressor.json").write_text(json.dumps({
        "fixed_batch": 3,
        "feeds": [dict(name="X", **tensor_json(rows))],
        "outputs": ["value"],
        "expected": outputs_json([np.concatenate(values)]),
        "sql": matrix_sql(rows, value=0),
    }))


def generate(out_dir):
    """Write every fixture into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x, y_class, y_multi, y_value = data(7)
    logistic = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y_class)
    sklearn_matrix(out_dir, "logistic_pipeline", logistic, x, False, label=0, proba=1)
    gbdt = GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0).fit(x, y_multi)
    sklearn_matrix(out_dir, "gbdt_multiclass_zipmap", gbdt, x, True, label=0, proba=1)
    forest = RandomForestRegressor(n_estimators=20, max_depth=6, random_state=0).fit(x, y_value)
    sklearn_matrix(out_dir, "forest_regression", forest, x, None, value=0)
    mlp = MLPClassifier(hidden_layer_sizes=(16,), max_iter=2000, random_state=0).fit(x, y_class)
    sklearn_matrix(out_dir, "mlp_classifier", mlp, x, False, label=0, proba=1)
    onehot_pipeline(out_dir)
    lightgbm_classifier(out_dir, x, y_class)
    xgboost_regressor(out_dir, x, y_value)
    lstm_regressor(out_dir)
    attention_classifier(out_dir)
    encoder_embedding(out_dir, x)
    fixed_batch_regressor(out_dir, x)


if __name__ == "__main__":
    generate(sys.argv[1])
