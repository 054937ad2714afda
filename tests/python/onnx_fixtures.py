"""Generate the ONNX fixtures the Rust tests score, with Python onnxruntime's outputs.

Usage: python onnx_fixtures.py OUT_DIR

For each fixture NAME it writes NAME.onnx, and NAME.json with the input rows (a float32
matrix) and what onnxruntime answers on them (every output, in the graph's order). Nothing is
downloaded: the models are trained here on synthetic data with fixed seeds and converted with
skl2onnx (versions pinned in requirements.txt).
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def data(seed, n=400, k=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k)).astype(np.float32)
    y_class = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] + rng.normal(scale=0.5, size=n) > 0).astype(np.int64)
    y_multi = np.digitize(x[:, 0] + x[:, 3], [-0.7, 0.7]).astype(np.int64)
    y_value = (3 * x[:, 0] - 2 * x[:, 1] + x[:, 2] * x[:, 3]).astype(np.float32)
    return x, y_class, y_multi, y_value


def outputs_json(values):
    out = []
    for v in values:
        if isinstance(v, list):  # ZipMap: one {label: probability} per row
            out.append({"maps": [[[str(k), float(p)] for k, p in sorted(row.items())] for row in v]})
        else:
            arr = np.asarray(v)
            kind = "string" if arr.dtype.kind in "OUS" else str(arr.dtype)
            data = [str(e) for e in arr.ravel()] if kind == "string" else arr.ravel().tolist()
            out.append({"dtype": kind, "shape": list(arr.shape), "data": data})
    return out


def write(out_dir, name, model, x, zipmap):
    options = {id(model): {"zipmap": zipmap}} if zipmap is not None else None
    onx = to_onnx(model, x[:1], options=options, target_opset=17)
    path = out_dir / f"{name}.onnx"
    path.write_bytes(onx.SerializeToString())
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rows = x[:64]
    values = sess.run(None, {sess.get_inputs()[0].name: rows})
    (out_dir / f"{name}.json").write_text(json.dumps({
        "input": sess.get_inputs()[0].name,
        "rows": rows.shape[0],
        "cols": rows.shape[1],
        "data": rows.ravel().tolist(),
        "outputs": [o.name for o in sess.get_outputs()],
        "expected": outputs_json(values),
    }))


def main():
    out_dir = Path(sys.argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    x, y_class, y_multi, y_value = data(7)
    logistic = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y_class)
    write(out_dir, "logistic_pipeline", logistic, x, zipmap=False)
    gbdt = GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0).fit(x, y_multi)
    write(out_dir, "gbdt_multiclass_zipmap", gbdt, x, zipmap=True)
    forest = RandomForestRegressor(n_estimators=20, max_depth=6, random_state=0).fit(x, y_value)
    write(out_dir, "forest_regression", forest, x, zipmap=None)
    mlp = MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0).fit(x, y_class)
    write(out_dir, "mlp_classifier", mlp, x, zipmap=False)


if __name__ == "__main__":
    main()
