"""S3 through a local S3-compatible server (moto): external tables, queries, COPY TO."""

import io

import boto3
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg import errors

from conftest import Server


def s3_env(endpoint, **extra):
    """Server settings that reach the local S3 server (moto) with its dummy credentials."""
    return {
        "PROGNOS__S3__ENDPOINT": endpoint,
        "PROGNOS__S3__REGION": "us-east-1",
        "PROGNOS__S3__ACCESS_KEY_ID": "testing",
        "PROGNOS__S3__SECRET_ACCESS_KEY": "testing",
        "PROGNOS__S3__PATH_STYLE": "true",
        "PROGNOS__S3__ALLOW_HTTP": "true",
        **extra,
    }


@pytest.fixture(scope="module")
def s3_server(moto):
    s = Server(env=s3_env(moto))
    yield s
    s.close()


def test_external_parquet_table_on_s3(moto, s3_server):
    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="lake")
    for part, rows in (("region=eu", [1, 2, 3]), ("region=us", [10, 20])):
        buf = io.BytesIO()
        pq.write_table(pa.table({"id": rows, "amount": [float(r) * 1.5 for r in rows]}), buf)
        s3.put_object(Bucket="lake", Key=f"sales/{part}/part-0.parquet", Body=buf.getvalue())

    with psycopg.connect(s3_server.dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTERNAL TABLE s3_sales STORED AS PARQUET "
                     "PARTITIONED BY (region) LOCATION 's3://lake/sales/'")
        rows = conn.execute("SELECT region, count(*), sum(amount) FROM s3_sales "
                            "GROUP BY region ORDER BY region").fetchall()
        assert rows == [("eu", 3, 9.0), ("us", 2, 45.0)]
        # Predicate on the partition column prunes to one directory.
        assert conn.execute("SELECT count(*) FROM s3_sales WHERE region = 'us'").fetchone() == (2,)
        # COPY TO writes back into the bucket.
        conn.execute("COPY (SELECT id, amount FROM s3_sales WHERE region = 'eu') "
                     "TO 's3://lake/export/eu.parquet' (FORMAT parquet)")
    body = s3.get_object(Bucket="lake", Key="export/eu.parquet")["Body"].read()
    table = pq.read_table(io.BytesIO(body))
    assert sorted(table.column("id").to_pylist()) == [1, 2, 3]

    # The external table survives a restart.
    s3_server.stop()
    s3_server.start()
    with psycopg.connect(s3_server.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM s3_sales").fetchone() == (5,)


def test_missing_bucket_is_a_clear_error(s3_server):
    with psycopg.connect(s3_server.dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as e:
            conn.execute("CREATE EXTERNAL TABLE nob STORED AS PARQUET LOCATION 's3://no-such-bucket/x/'")
        assert e.value.sqlstate is not None and e.value.sqlstate != "XX000", e.value.sqlstate
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert s3_server.alive()


def test_managed_tables_on_s3(moto):
    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="warehouse")
    s = Server(env=s3_env(moto, PROGNOS__STORAGE__TABLES_URL="s3://warehouse/prognos"))
    try:
        with psycopg.connect(s.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE remote (id BIGINT, name VARCHAR)")
            conn.execute("INSERT INTO remote VALUES (1, 'a'), (2, 'b')")
            conn.execute("INSERT INTO remote SELECT value, 'x' FROM generate_series(3, 10)")
            assert conn.execute("SELECT count(*), sum(id) FROM remote").fetchone() == (10, 55)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="warehouse", Prefix="prognos/")["Contents"]]
        assert any(k.endswith(".parquet") for k in keys), keys
        assert any("/_manifest/" in k for k in keys), keys
        s.stop()
        s.start()
        with psycopg.connect(s.dsn, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM remote").fetchone() == (10,)
            conn.execute("DROP TABLE remote")
        left = s3.list_objects_v2(Bucket="warehouse", Prefix="prognos/").get("Contents", [])
        assert left == [], left
    finally:
        s.close()


def test_model_artifacts_on_s3(moto):
    """`storage.models_url`: artifacts are objects in the bucket, read back after a restart;
    a corrupted one breaks only its model, OR REPLACE repairs it, DROP deletes the objects."""
    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="models")
    s = Server(env=s3_env(moto, PROGNOS__STORAGE__MODELS_URL="s3://models/prod"))

    def keys(prefix):
        return sorted(o["Key"] for o in s3.list_objects_v2(Bucket="models", Prefix=prefix).get("Contents", []))

    train = ("AS SELECT value % 7 AS a, (value * 13) % 11 AS b, value % 7 > 3 AS y "
             "FROM generate_series(1, 600)")
    probe = "SELECT PREDICT('{m}', a, b) FROM (VALUES (1, 2), (5, 9), (6, 0)) AS t(a, b)"
    try:
        with psycopg.connect(s.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE MODEL big_a PREDICT y USING gbdt WITH (num_trees = 20) {train}")
            conn.execute(f"CREATE MODEL big_b PREDICT y USING logistic {train}")
            before = {m: conn.execute(probe.format(m=m)).fetchall() for m in ("big_a", "big_b")}
            assert before["big_a"] == [(False,), (True,), (True,)], before
            artifact = conn.execute(
                "SELECT artifact FROM system.model_versions WHERE name = 'big_a'").fetchone()[0]
        assert artifact.startswith("s3://models/prod/models/big_a/v0001-") and artifact.endswith(".json")
        a_keys = keys("prod/models/big_a/")
        assert len(a_keys) == 1 and len(keys("prod/models/big_b/")) == 1, keys("prod/")
        assert not any(k.endswith("registry.json") for k in keys("")), "the registry stays in the data dir"

        # Restart: both models load from the bucket and predict the same.
        s.stop()
        s.start()
        with psycopg.connect(s.dsn, autocommit=True) as conn:
            assert {m: conn.execute(probe.format(m=m)).fetchall() for m in ("big_a", "big_b")} == before

        # A corrupted object: that model fails with XX001 after a restart, the other works.
        s3.put_object(Bucket="models", Key=a_keys[0], Body=b"{ not a model")
        s.stop()
        s.start()
        with psycopg.connect(s.dsn, autocommit=True) as conn:
            with pytest.raises(psycopg.Error) as e:
                conn.execute(probe.format(m="big_a")).fetchall()
            assert e.value.sqlstate == "XX001", (e.value.sqlstate, str(e.value))
            assert conn.execute(probe.format(m="big_b")).fetchall() == before["big_b"]
            conn.execute(f"CREATE OR REPLACE MODEL big_a PREDICT y USING gbdt WITH (num_trees = 20) {train}")
            assert conn.execute(probe.format(m="big_a")).fetchall() == before["big_a"]
            assert len(keys("prod/models/big_a/")) == 2
            conn.execute("DROP MODEL big_a")
            assert keys("prod/models/big_a/") == []
            assert len(keys("prod/models/big_b/")) == 1
    finally:
        s.close()


def test_model_artifact_store_unreachable(moto):
    """An artifact that cannot be written (the bucket of `storage.models_url` is missing) fails
    CREATE MODEL with 58030, registers nothing, and leaves the server up; once the bucket
    exists the same statement works."""
    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s = Server(env=s3_env(moto, PROGNOS__STORAGE__MODELS_URL="s3://not-yet-there/prod"))
    create = ("CREATE MODEL lost PREDICT y USING logistic AS SELECT value % 7 AS a, "
              "value % 7 > 3 AS y FROM generate_series(1, 200)")
    try:
        with psycopg.connect(s.dsn, autocommit=True) as conn:
            with pytest.raises(psycopg.Error) as e:
                conn.execute(create)
            assert e.value.sqlstate == "58030", (e.value.sqlstate, str(e.value))
            assert "not-yet-there" in str(e.value)
            assert conn.execute("SELECT count(*) FROM system.models").fetchone() == (0,)
            s3.create_bucket(Bucket="not-yet-there")
            conn.execute(create)
            assert conn.execute("SELECT name, version FROM system.models").fetchall() == [("lost", 1)]
    finally:
        s.close()


def test_onnx_model_imported_from_s3_and_stored_on_s3(moto, tmp_path):
    """`CREATE MODEL m FROM 's3://…'`: the graph is downloaded, stored as a payload of the
    version on the artifact store (so the source may go), fetched into the local cache again
    after a restart that lost it, and deleted with DROP MODEL."""
    import shutil

    import onnx_fixtures

    onnx_fixtures.generate(tmp_path)
    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="incoming")
    s3.create_bucket(Bucket="registry")
    s3.put_object(Bucket="incoming", Key="models/lgbm.onnx",
                  Body=(tmp_path / "lightgbm_classifier.onnx").read_bytes())
    s = Server(env=s3_env(moto, PROGNOS__STORAGE__MODELS_URL="s3://registry/prod"))

    def keys(prefix):
        return sorted(o["Key"] for o in s3.list_objects_v2(Bucket="registry", Prefix=prefix).get("Contents", []))

    probe = ("SELECT PREDICT('lgbm', f0, f1, f2, f3), PREDICT_PROBA('lgbm', f0, f1, f2, f3) "
             "FROM (VALUES (0.5, -1.0, 0.25, 2.0), (-1.5, 0.5, 1.0, 0.0)) AS t(f0, f1, f2, f3)")
    try:
        with psycopg.connect(s.dsn, autocommit=True) as conn:
            conn.execute("CREATE MODEL lgbm FROM 's3://incoming/models/lgbm.onnx'")
            before = conn.execute(probe).fetchall()
            assert len(before) == 2 and all(r[0] in (0, 1) and 0.0 <= r[1] <= 1.0 for r in before)
            with pytest.raises(psycopg.Error) as e:
                conn.execute("CREATE MODEL nope FROM 's3://incoming/models/missing.onnx'")
            assert e.value.sqlstate == "58P01", (e.value.sqlstate, str(e.value))
        s3.delete_object(Bucket="incoming", Key="models/lgbm.onnx")
        stored = keys("prod/models/lgbm/")
        assert [k.rsplit("/", 1)[1] for k in stored] == ["artifact.json", "model.onnx"], stored
        s.stop()
        shutil.rmtree(f"{s.data_dir}/models/.cache", ignore_errors=True)
        s.start()
        with psycopg.connect(s.dsn, autocommit=True) as conn:
            assert conn.execute(probe).fetchall() == before
            conn.execute("DROP MODEL lgbm")
            # EXPORT MODEL writes to the bucket too; onnxruntime scores the object.
            conn.execute("CREATE MODEL tiny PREDICT churned USING gbdt WITH (num_trees = 5) AS "
                         "SELECT CAST(value % 60 AS double) AS tenure_months, "
                         "CAST((value * 7) % 97 AS double) AS monthly_charges, "
                         "(value % 60) + (value * 7) % 97 > 70 AS churned FROM generate_series(1, 600)")
            conn.execute("EXPORT MODEL tiny TO 's3://incoming/exports/tiny.onnx'")
            ours = conn.execute("SELECT PREDICT_PROBA('tiny', 12, 70.5)").fetchone()[0]
        body = s3.get_object(Bucket="incoming", Key="exports/tiny.onnx")["Body"].read()
        import numpy as np
        import onnxruntime as ort
        session = ort.InferenceSession(body, providers=["CPUExecutionProvider"])
        _, proba = session.run(None, {"tenure_months": np.array([[12.0]], dtype=np.float32),
                                      "monthly_charges": np.array([[70.5]], dtype=np.float32)})
        assert abs(proba[0][1] - ours) <= 1e-5
        assert keys("prod/models/lgbm/") == []
    finally:
        s.close()


def test_onnx_graph_with_external_data_imported_from_s3(moto, tmp_path):
    """A graph on S3 whose weights are an external-data file beside it (in a subfolder):
    both are downloaded, both are stored in the version on the artifact store, and the model
    scores as onnxruntime does after the source is gone and the local cache is lost."""
    import shutil

    from test_onnx_models import EXTERNAL_QUERY, close, external_data_graph

    path, want = external_data_graph(tmp_path / "src", "weights/params.bin")
    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="weights-in")
    s3.create_bucket(Bucket="weights-registry")
    s3.put_object(Bucket="weights-in", Key="nets/net.onnx", Body=path.read_bytes())
    s3.put_object(Bucket="weights-in", Key="nets/weights/params.bin",
                  Body=(tmp_path / "src" / "weights" / "params.bin").read_bytes())
    s = Server(env=s3_env(moto, PROGNOS__STORAGE__MODELS_URL="s3://weights-registry/prod"))
    try:
        with psycopg.connect(s.dsn, autocommit=True) as conn:
            conn.execute("CREATE MODEL ext FROM 's3://weights-in/nets/net.onnx'")
            got = [r[0] for r in conn.execute(EXTERNAL_QUERY).fetchall()]
            assert all(close(a, b) for a, b in zip(got, want, strict=True)), (got, want)
        for key in ["nets/net.onnx", "nets/weights/params.bin"]:
            s3.delete_object(Bucket="weights-in", Key=key)
        stored = sorted(o["Key"].split("/", 4)[-1] for o in s3.list_objects_v2(
            Bucket="weights-registry", Prefix="prod/models/ext/")["Contents"])
        assert stored == ["artifact.json", "model.onnx", "weights/params.bin"], stored
        s.stop()
        shutil.rmtree(f"{s.data_dir}/models/.cache", ignore_errors=True)
        s.start()
        with psycopg.connect(s.dsn, autocommit=True) as conn:
            assert [r[0] for r in conn.execute(EXTERNAL_QUERY).fetchall()] == got
    finally:
        s.close()
