//! User queries keep their meaning through the Postgres-compatibility rewrites: a correlated
//! scalar subquery in a select list must not be replaced (datafusion-pg-catalog's rewriter
//! turns it into NULL; prognos applies that rule to catalog queries only).

use datafusion::arrow::util::pretty::pretty_format_batches;

const SQL: &str = "SELECT a.x, (SELECT min(b.y) FROM (VALUES ('a',1),('a',2)) b(x,y) WHERE b.x = a.x) AS m FROM (VALUES ('a'),('b')) a(x) ORDER BY 1";

#[tokio::test]
async fn correlated_scalar_subquery_keeps_its_value() {
    let dir = tempfile::tempdir().expect("tmp");
    let engine =
        prognos_engine::Engine::open(&prognos_engine::config::OpenOptions::new(dir.path()))
            .await
            .expect("engine");
    let session = engine.new_session();
    let stmt = engine.parse(SQL).expect("parse").remove(0);
    let out = engine
        .execute(&session, &stmt, None)
        .await
        .expect("execute");
    let prognos_engine::Output::Rows(stream) = out else {
        panic!("rows expected");
    };
    let batches: Vec<_> = futures::TryStreamExt::try_collect(stream)
        .await
        .expect("collect");
    let text = pretty_format_batches(&batches).expect("fmt").to_string();
    assert_eq!(
        text,
        "+---+---+\n| x | m |\n+---+---+\n| a | 1 |\n| b |   |\n+---+---+"
    );
}
