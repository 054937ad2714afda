//! Arrow Flight SQL frontend (arrow-flight `flight-sql`).
//!
//! Handles are stateless: a statement ticket or prepared-statement handle carries the SQL text
//! and, once bound, the parameter values (as Arrow IPC), so any request can be served by a
//! fresh session. Results are encoded batch by batch as they stream out of DataFusion.

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, SqlSupportedTransaction,
    TicketStatementQuery,
};
use arrow_flight::{
    FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use datafusion::common::ScalarValue;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::info;

use crate::error::{EngineError, StatusCode, WireStatus};
use crate::metrics::{ConnectionGauge, METRICS, QueryTimer};
use prognos_engine::{CATALOG_NAME, Engine, Output, Statement};

const PROTOCOL: &str = "flightsql";

/// What a ticket or prepared-statement handle carries.
#[derive(Debug, Serialize, Deserialize)]
struct Handle {
    sql: String,
    /// Bound parameter values as an Arrow IPC stream of one row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    params: Option<Vec<u8>>,
}

impl Handle {
    fn encode(&self) -> Result<bytes::Bytes, Status> {
        serde_json::to_vec(self)
            .map(bytes::Bytes::from)
            .map_err(|e| Status::internal(format!("cannot encode handle: {e}")))
    }
    fn decode(raw: &[u8]) -> Result<Self, Status> {
        serde_json::from_slice(raw)
            .map_err(|e| Status::invalid_argument(format!("invalid statement handle: {e}")))
    }
}

fn to_status(e: EngineError) -> Status {
    let code = e.status();
    METRICS.error(PROTOCOL, code.sqlstate());
    let mut status = Status::new(code.grpc_code(), e.to_string());
    if let Ok(v) = code.sqlstate().parse() {
        status.metadata_mut().insert("x-sqlstate", v);
    }
    status
}

fn flight_err(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// The Flight SQL service.
#[derive(Clone)]
pub struct FlightSqlServer {
    engine: Arc<Engine>,
    sql_info: Arc<SqlInfoData>,
}

impl std::fmt::Debug for FlightSqlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightSqlServer").finish_non_exhaustive()
    }
}

type FlightDataStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

impl FlightSqlServer {
    /// A service over `engine`.
    pub fn new(engine: Arc<Engine>) -> Result<Self, EngineError> {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "prognos");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
        b.append(SqlInfo::FlightSqlServerReadOnly, false);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        b.append(
            SqlInfo::FlightSqlServerTransaction,
            SqlSupportedTransaction::None as i32,
        );
        b.append(SqlInfo::FlightSqlServerCancel, false);
        b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        b.append(SqlInfo::SqlDdlCatalog, false);
        b.append(SqlInfo::SqlDdlSchema, true);
        b.append(SqlInfo::SqlDdlTable, true);
        let sql_info = b
            .build()
            .map_err(|e| EngineError::statement(StatusCode::Internal, e.to_string()))?;
        Ok(Self {
            engine,
            sql_info: Arc::new(sql_info),
        })
    }

    fn parse_one(&self, sql: &str) -> Result<Statement, Status> {
        let sql = qmark_to_dollar(sql);
        let mut stmts = self.engine.parse(&sql).map_err(to_status)?;
        if stmts.len() != 1 {
            return Err(to_status(EngineError::statement(
                StatusCode::SyntaxError,
                format!("expected exactly one statement, got {}", stmts.len()),
            )));
        }
        stmts
            .pop()
            .ok_or_else(|| Status::invalid_argument("empty statement"))
    }

    async fn describe(&self, sql: &str) -> Result<prognos_engine::Described, Status> {
        let session = self.engine.new_session();
        let stmt = self.parse_one(sql)?;
        self.engine
            .describe(&session, &stmt)
            .await
            .map_err(to_status)
    }

    fn flight_info(
        schema: &Schema,
        ticket: bytes::Bytes,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
        Ok(FlightInfo::new()
            .try_with_schema(schema)
            .map_err(flight_err)?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor)
            .with_ordered(true))
    }

    /// FlightInfo whose one endpoint's ticket is the (metadata) command itself.
    fn command_info(
        schema: &Schema,
        command: impl ProstMessageExt,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let info = Self::flight_info(
            schema,
            command.as_any().encode_to_vec().into(),
            request.into_inner(),
        )?;
        Ok(Response::new(info))
    }

    /// FlightInfo of a statement that already ran and returns no rows: no endpoints.
    fn no_rows_info(descriptor: FlightDescriptor) -> Result<FlightInfo, Status> {
        Ok(FlightInfo::new()
            .try_with_schema(&Schema::empty())
            .map_err(flight_err)?
            .with_descriptor(descriptor)
            .with_total_records(0))
    }

    /// Run a handle's statement and stream its result.
    async fn run_stream(&self, handle: Handle) -> Result<Response<FlightDataStream>, Status> {
        let _gauge = ConnectionGauge::open(PROTOCOL);
        let timer = QueryTimer::start(PROTOCOL);
        let session = self.engine.new_session();
        let stmt = self.parse_one(&handle.sql)?;
        let params = decode_params(handle.params.as_deref())?;
        let output = self
            .engine
            .execute(&session, &stmt, params)
            .await
            .map_err(to_status)?;
        let stream = match output {
            Output::Rows(stream) => {
                let schema = stream.schema();
                let batches = stream.map(move |b| {
                    let _keep = (&timer, &_gauge);
                    b.map_err(|e| {
                        FlightError::Tonic(Box::new(to_status(EngineError::DataFusion(e))))
                    })
                });
                FlightDataEncoderBuilder::new()
                    .with_schema(schema)
                    .build(batches)
                    .map_err(|e| match e {
                        FlightError::Tonic(s) => *s,
                        other => flight_err(other),
                    })
                    .boxed()
            }
            _ => {
                let empty: SchemaRef = Arc::new(Schema::empty());
                FlightDataEncoderBuilder::new()
                    .with_schema(empty)
                    .build(futures::stream::empty())
                    .map_err(flight_err)
                    .boxed()
            }
        };
        Ok(Response::new(stream))
    }

    async fn run_update(&self, handle: Handle) -> Result<i64, Status> {
        let _timer = QueryTimer::start(PROTOCOL);
        let session = self.engine.new_session();
        let stmt = self.parse_one(&handle.sql)?;
        let params = decode_params(handle.params.as_deref())?;
        match self
            .engine
            .execute(&session, &stmt, params)
            .await
            .map_err(to_status)?
        {
            Output::Command { rows, .. } => Ok(rows.map(|r| r as i64).unwrap_or(0)),
            Output::Rows(mut s) => {
                // A query sent as an update: drain it and report the row count.
                let mut n = 0i64;
                while let Some(b) = s.next().await {
                    n += b
                        .map_err(|e| to_status(EngineError::DataFusion(e)))?
                        .num_rows() as i64;
                }
                Ok(n)
            }
            _ => Ok(0),
        }
    }

    fn encode_batch_stream(
        batch: Result<RecordBatch, FlightError>,
        schema: SchemaRef,
    ) -> FlightDataStream {
        FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(async move { batch }))
            .map_err(flight_err)
            .boxed()
    }
}

/// Flight SQL clients (ADBC, JDBC-style drivers) write parameters as `?`; DataFusion expects
/// `$1, $2, …`. Rewrites `?` tokens outside literals, in order.
fn qmark_to_dollar(sql: &str) -> String {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    if !sql.contains('?') {
        return sql.to_string();
    }
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return sql.to_string();
    };
    let mut n = 0;
    let mut out = String::with_capacity(sql.len() + 8);
    for t in tokens {
        match t {
            Token::Placeholder(p) if p == "?" => {
                n += 1;
                out.push_str(&format!("${n}"));
            }
            Token::Question => {
                n += 1;
                out.push_str(&format!("${n}"));
            }
            other => out.push_str(&other.to_string()),
        }
    }
    out
}

fn param_schema(params: &[Option<DataType>]) -> Schema {
    Schema::new(
        params
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Field::new(
                    format!("${}", i + 1),
                    t.clone().unwrap_or(DataType::Utf8),
                    true,
                )
            })
            .collect::<Vec<_>>(),
    )
}

fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(flight_err)?;
    Ok(bytes)
}

fn decode_params(raw: Option<&[u8]>) -> Result<Option<Vec<ScalarValue>>, Status> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let reader =
        datafusion::arrow::ipc::reader::StreamReader::try_new(raw, None).map_err(flight_err)?;
    for batch in reader {
        let batch = batch.map_err(flight_err)?;
        if batch.num_rows() == 0 {
            continue;
        }
        let values = batch
            .columns()
            .iter()
            .map(|c| ScalarValue::try_from_array(c, 0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(flight_err)?;
        return Ok(Some(values));
    }
    Ok(Some(Vec::new()))
}

fn encode_params(batch: &RecordBatch) -> Result<Vec<u8>, Status> {
    let mut buf = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut buf, &batch.schema()).map_err(flight_err)?;
        w.write(batch).map_err(flight_err)?;
        w.finish().map_err(flight_err)?;
    }
    Ok(buf)
}

#[tonic::async_trait]
impl FlightSqlService for FlightSqlServer {
    type FlightService = FlightSqlServer;

    async fn do_handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        // No authentication yet: accept every client.
        let out = futures::stream::iter(vec![Ok(HandshakeResponse {
            protocol_version: 0,
            payload: bytes::Bytes::new(),
        })]);
        Ok(Response::new(Box::pin(out)))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let described = self.describe(&query.query).await?;
        let descriptor = request.into_inner();
        let Some(schema) = described.schema else {
            // No result set (DDL, DML, COPY): run it now; clients need not fetch anything.
            self.run_update(Handle {
                sql: query.query,
                params: None,
            })
            .await?;
            return Ok(Response::new(Self::no_rows_info(descriptor)?));
        };
        let handle = Handle {
            sql: query.query,
            params: None,
        }
        .encode()?;
        let ticket = TicketStatementQuery {
            statement_handle: handle,
        };
        let info = Self::flight_info(&schema, ticket.as_any().encode_to_vec().into(), descriptor)?;
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<
        Response<<Self as arrow_flight::flight_service_server::FlightService>::DoGetStream>,
        Status,
    > {
        self.run_stream(Handle::decode(&ticket.statement_handle)?)
            .await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let handle = Handle::decode(&cmd.prepared_statement_handle)?;
        let described = self.describe(&handle.sql).await?;
        let descriptor = request.into_inner();
        let Some(schema) = described.schema else {
            self.run_update(handle).await?;
            return Ok(Response::new(Self::no_rows_info(descriptor)?));
        };
        let info = Self::flight_info(&schema, cmd.as_any().encode_to_vec().into(), descriptor)?;
        Ok(Response::new(info))
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<
        Response<<Self as arrow_flight::flight_service_server::FlightService>::DoGetStream>,
        Status,
    > {
        self.run_stream(Handle::decode(&cmd.prepared_statement_handle)?)
            .await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let described = self.describe(&query.query).await?;
        let schema = described
            .schema
            .clone()
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: Handle {
                sql: query.query,
                params: None,
            }
            .encode()?,
            dataset_schema: schema_bytes(&schema)?,
            parameter_schema: schema_bytes(&param_schema(&described.params))?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        // Handles are stateless: nothing to free.
        Ok(())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let mut handle = Handle::decode(&query.prepared_statement_handle)?;
        let mut batches = FlightRecordBatchStream::new_from_flight_data(
            request.into_inner().map_err(FlightError::from),
        );
        let mut bound = None;
        while let Some(batch) = batches.next().await {
            let batch = batch.map_err(flight_err)?;
            if batch.num_rows() > 0 && bound.is_none() {
                bound = Some(batch.slice(0, 1));
            }
        }
        if let Some(batch) = bound {
            handle.params = Some(encode_params(&batch)?);
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.encode()?),
        })
    }

    async fn do_put_statement_update(
        &self,
        ticket: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.run_update(Handle {
            sql: ticket.query,
            params: None,
        })
        .await
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let handle = Handle::decode(&query.prepared_statement_handle)?;
        let mut batches = FlightRecordBatchStream::new_from_flight_data(
            request.into_inner().map_err(FlightError::from),
        );
        // One execution per bound row; without bound rows, one execution with the handle's own.
        let mut total = 0;
        let mut ran = false;
        while let Some(batch) = batches.next().await {
            let batch = batch.map_err(flight_err)?;
            for row in 0..batch.num_rows() {
                let bound = Handle {
                    sql: handle.sql.clone(),
                    params: Some(encode_params(&batch.slice(row, 1))?),
                };
                total += self.run_update(bound).await?;
                ran = true;
            }
        }
        if !ran {
            total = self.run_update(handle).await?;
        }
        Ok(total)
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        Self::command_info(&schema, query, request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let mut builder = query.into_builder();
        builder.append(CATALOG_NAME);
        let schema = builder.schema();
        Ok(Response::new(Self::encode_batch_stream(
            builder.build(),
            schema,
        )))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        Self::command_info(&schema, query, request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let session = self.engine.new_session();
        let mut builder = query.into_builder();
        if let Some(catalog) = session.ctx().catalog(CATALOG_NAME) {
            for schema in catalog.schema_names() {
                builder.append(CATALOG_NAME, schema);
            }
        }
        let schema = builder.schema();
        Ok(Response::new(Self::encode_batch_stream(
            builder.build(),
            schema,
        )))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        Self::command_info(&schema, query, request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let session = self.engine.new_session();
        let mut builder = query.into_builder();
        if let Some(catalog) = session.ctx().catalog(CATALOG_NAME) {
            for schema_name in catalog.schema_names() {
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                let mut names = schema.table_names();
                names.sort();
                for name in names {
                    let Ok(Some(table)) = schema.table(&name).await else {
                        continue;
                    };
                    let kind = match table.table_type() {
                        datafusion::datasource::TableType::View => "VIEW",
                        datafusion::datasource::TableType::Temporary => "LOCAL TEMPORARY",
                        datafusion::datasource::TableType::Base => "TABLE",
                    };
                    builder
                        .append(
                            CATALOG_NAME,
                            &schema_name,
                            &name,
                            kind,
                            table.schema().as_ref(),
                        )
                        .map_err(flight_err)?;
                }
            }
        }
        let schema = builder.schema();
        Ok(Response::new(Self::encode_batch_stream(
            builder.build(),
            schema,
        )))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = Schema::new(vec![Field::new("table_type", DataType::Utf8, false)]);
        Self::command_info(&schema, query, request)
    }

    async fn do_get_table_types(
        &self,
        _query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new(
            "table_type",
            DataType::Utf8,
            false,
        )]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(datafusion::arrow::array::StringArray::from(vec![
                "LOCAL TEMPORARY",
                "TABLE",
                "VIEW",
            ]))],
        )
        .map_err(FlightError::from);
        Ok(Response::new(Self::encode_batch_stream(batch, schema)))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.sql_info).schema();
        Self::command_info(schema.as_ref(), query, request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let builder = query.into_builder(&self.sql_info);
        let schema = builder.schema();
        Ok(Response::new(Self::encode_batch_stream(
            builder.build(),
            schema,
        )))
    }

    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<FlightDataStream>, Status> {
        Err(Status::unimplemented(format!(
            "unsupported ticket type {}",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// Serve Flight SQL on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    shutdown: CancellationToken,
) -> Result<(), EngineError> {
    let service = FlightSqlServer::new(engine)?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tonic::transport::Server::builder()
        .add_service(FlightServiceServer::new(service).max_decoding_message_size(64 * 1024 * 1024))
        .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
        .await
        .map_err(|e| EngineError::statement(StatusCode::IoError, format!("flight server: {e}")))?;
    info!("flight frontend stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::qmark_to_dollar;

    #[test]
    fn question_marks_become_numbered_placeholders() {
        assert_eq!(
            qmark_to_dollar("SELECT a FROM t WHERE a = ? AND b = '?' AND c > ?"),
            "SELECT a FROM t WHERE a = $1 AND b = '?' AND c > $2"
        );
        assert_eq!(qmark_to_dollar("SELECT 1"), "SELECT 1");
    }
}
