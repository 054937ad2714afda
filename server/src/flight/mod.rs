//! Arrow Flight SQL frontend (arrow-flight `flight-sql`).
//!
//! Statements are parsed (`?` placeholders read as `$1, $2, …`) and described once, in the
//! client's session; a statement ticket or prepared-statement handle names the statement and
//! its plan on the server ([`state`]), so `DoGet` runs the plan made by `GetFlightInfo`. A
//! prepared statement bound with several parameter rows runs once per row. Results are encoded
//! batch by batch as they stream out of DataFusion.

mod auth;
mod state;

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
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::common::ScalarValue;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::info;

use crate::audit::StatementAudit;
use crate::error::{EngineError, StatusCode, WireStatus};
use crate::metrics::{ConnectionGauge, METRICS, QueryTimer};

/// The address a request comes from, for the audit log.
fn peer<T>(request: &Request<T>) -> Option<String> {
    request.remote_addr().map(|a| a.to_string())
}
use prognos_engine::parser::ParseOptions;
use prognos_engine::streams::{StatementCancel, cancellable};
use prognos_engine::{CATALOG_NAME, Described, Engine, Output, Session, Statement};
use state::CachedStatement;

const PROTOCOL: &str = "flightsql";

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
    state: Arc<state::FlightState>,
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
            state: Arc::new(state::FlightState::new()),
        })
    }

    fn parse_one(&self, sql: &str) -> Result<Statement, Status> {
        let options = ParseOptions {
            question_mark_placeholders: true,
        };
        let mut stmts = self.engine.parse_with(sql, options).map_err(to_status)?;
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

    /// Parse and describe `sql` in the session of the client `request` comes from.
    async fn prepare<T>(
        &self,
        sql: &str,
        request: &Request<T>,
    ) -> Result<(Arc<Session>, Statement, Described), Status> {
        let caller = auth::caller(request)?;
        let session = self
            .state
            .session(&self.engine, state::client_key(request), &caller.role);
        let stmt = self.parse_one(sql)?;
        let described = self
            .engine
            .describe(&session, &stmt)
            .await
            .map_err(to_status)?;
        Ok((session, stmt, described))
    }

    /// The statement `handle` names, if the caller of `request` made it: a ticket or handle
    /// replayed by another role is refused.
    fn statement<T>(
        &self,
        request: &Request<T>,
        handle: &[u8],
    ) -> Result<Arc<CachedStatement>, Status> {
        let caller = auth::caller(request)?;
        let entry = self.state.get(handle)?;
        if entry.session.user() != caller.role.name {
            return Err(to_status(EngineError::statement(
                StatusCode::InsufficientPrivilege,
                "this statement handle belongs to another role",
            )));
        }
        Ok(entry)
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

    /// Run a statement once per bound parameter row (once without parameters when none are
    /// bound), each with its cached plan.
    /// The session's `statement_timeout` holds from here until the last row is sent.
    /// Its audit record (when the log is on, for `client`) is returned with the outputs, to
    /// count their rows.
    async fn run_all(
        &self,
        entry: &CachedStatement,
        client: Option<String>,
    ) -> Result<(Vec<Output>, StatementCancel, Option<Arc<StatementAudit>>), Status> {
        let audit = StatementAudit::begin(
            &self.engine,
            &entry.session,
            client.as_deref(),
            PROTOCOL,
            &entry.stmt,
        );
        let cancel = entry.session.begin_statement();
        let run = self.run_each(entry);
        let out = tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(cancel.error()),
            out = run => out,
        };
        if let Some(a) = &audit {
            a.touched(&entry.session);
            if let Err(e) = &out {
                a.fail(e);
            }
        }
        out.map(|o| (o, cancel, audit)).map_err(to_status)
    }

    async fn run_each(&self, entry: &CachedStatement) -> Result<Vec<Output>, EngineError> {
        let rows = entry.params();
        let runs: Vec<Option<Vec<ScalarValue>>> = if rows.is_empty() {
            vec![None]
        } else {
            rows.into_iter().map(Some).collect()
        };
        let mut outputs = Vec::with_capacity(runs.len());
        for params in runs {
            outputs.push(
                self.engine
                    .execute_prepared(&entry.session, &entry.stmt, &entry.described, params)
                    .await?,
            );
        }
        Ok(outputs)
    }

    /// Run a statement and stream its rows (the rows of every parameter row, in order).
    async fn run_stream(
        &self,
        entry: &CachedStatement,
        client: Option<String>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let _gauge = ConnectionGauge::open(PROTOCOL);
        let timer = QueryTimer::start(PROTOCOL);
        let mut schema = None;
        let mut streams = vec![];
        let (outputs, cancel, audit) = self.run_all(entry, client).await?;
        for output in outputs {
            if let Output::Rows(stream) = output {
                schema.get_or_insert_with(|| stream.schema());
                streams.push(cancellable(stream, cancel.clone()));
            }
        }
        let Some(schema) = schema else {
            let empty: SchemaRef = Arc::new(Schema::empty());
            let stream = FlightDataEncoderBuilder::new()
                .with_schema(empty)
                .build(futures::stream::empty())
                .map_err(flight_err)
                .boxed();
            return Ok(Response::new(stream));
        };
        let batches = futures::stream::iter(streams).flatten().map(move |b| {
            let _keep = (&timer, &_gauge);
            crate::audit::observe(audit.as_deref(), b)
                .map_err(|e| FlightError::Tonic(Box::new(to_status(e))))
        });
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(|e| match e {
                FlightError::Tonic(s) => *s,
                other => flight_err(other),
            })
            .boxed();
        Ok(Response::new(stream))
    }

    /// Run a statement for its row count (every parameter row; a query's rows are counted).
    async fn run_update(
        &self,
        entry: &CachedStatement,
        client: Option<String>,
    ) -> Result<i64, Status> {
        let _timer = QueryTimer::start(PROTOCOL);
        let mut total = 0i64;
        let (outputs, cancel, audit) = self.run_all(entry, client).await?;
        for output in outputs {
            total += match output {
                Output::Command { rows, .. } => {
                    let rows = rows.unwrap_or(0);
                    if let Some(a) = &audit {
                        a.add_rows(rows);
                    }
                    rows as i64
                }
                Output::Rows(s) => {
                    let mut s = cancellable(s, cancel.clone());
                    let mut n = 0i64;
                    while let Some(b) = s.next().await {
                        n += crate::audit::observe(audit.as_deref(), b)
                            .map_err(to_status)?
                            .num_rows() as i64;
                    }
                    n
                }
                _ => 0,
            };
        }
        Ok(total)
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

/// Every row of bound parameter batches, as values.
fn param_rows(batch: &RecordBatch) -> Result<Vec<Vec<ScalarValue>>, Status> {
    (0..batch.num_rows())
        .map(|row| {
            batch
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c, row))
                .collect::<Result<Vec<_>, _>>()
                .map_err(flight_err)
        })
        .collect()
}

/// The parameter rows a `DoPut` sends.
async fn read_param_rows(
    request: Request<PeekableFlightDataStream>,
) -> Result<Vec<Vec<ScalarValue>>, Status> {
    let mut batches = FlightRecordBatchStream::new_from_flight_data(
        request.into_inner().map_err(FlightError::from),
    );
    let mut rows = vec![];
    while let Some(batch) = batches.next().await {
        rows.extend(param_rows(&batch.map_err(flight_err)?)?);
    }
    Ok(rows)
}

#[tonic::async_trait]
impl FlightSqlService for FlightSqlServer {
    type FlightService = FlightSqlServer;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        // The interceptor checked the basic-auth header and issued a token; the token goes
        // back in the `authorization` header (what ADBC and pyarrow read) and the payload.
        let caller = auth::caller(&request)?;
        let token = caller.issued.unwrap_or_default();
        let out = futures::stream::iter(vec![Ok(HandshakeResponse {
            protocol_version: 0,
            payload: bytes::Bytes::from(token.clone()),
        })]);
        let mut response: Response<
            Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>,
        > = Response::new(Box::pin(out));
        if !token.is_empty() {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| Status::internal("token is not a valid header value"))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (session, stmt, described) = self.prepare(&query.query, &request).await?;
        let client = peer(&request);
        let descriptor = request.into_inner();
        let schema = described.schema.clone();
        let entry = CachedStatement::new(session, stmt, described);
        let Some(schema) = schema else {
            // No result set (DDL, DML, COPY, SET): run it now; clients need not fetch anything.
            self.run_update(&entry, client).await?;
            return Ok(Response::new(Self::no_rows_info(descriptor)?));
        };
        let ticket = TicketStatementQuery {
            statement_handle: self.state.insert(entry),
        };
        let info = Self::flight_info(&schema, ticket.as_any().encode_to_vec().into(), descriptor)?;
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<
        Response<<Self as arrow_flight::flight_service_server::FlightService>::DoGetStream>,
        Status,
    > {
        let entry = self.statement(&request, &ticket.statement_handle)?;
        self.run_stream(&entry, peer(&request)).await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let entry = self.statement(&request, &cmd.prepared_statement_handle)?;
        let client = peer(&request);
        let descriptor = request.into_inner();
        let Some(schema) = entry.described.schema.clone() else {
            self.run_update(&entry, client).await?;
            return Ok(Response::new(Self::no_rows_info(descriptor)?));
        };
        let info = Self::flight_info(&schema, cmd.as_any().encode_to_vec().into(), descriptor)?;
        Ok(Response::new(info))
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<
        Response<<Self as arrow_flight::flight_service_server::FlightService>::DoGetStream>,
        Status,
    > {
        let entry = self.statement(&request, &cmd.prepared_statement_handle)?;
        self.run_stream(&entry, peer(&request)).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let (session, stmt, described) = self.prepare(&query.query, &request).await?;
        let schema = described
            .schema
            .clone()
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        let parameter_schema = schema_bytes(&param_schema(&described.params))?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: self
                .state
                .insert(CachedStatement::new(session, stmt, described)),
            dataset_schema: schema_bytes(&schema)?,
            parameter_schema,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        self.statement(&request, &query.prepared_statement_handle)?;
        self.state.remove(&query.prepared_statement_handle);
        Ok(())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let entry = self.statement(&request, &query.prepared_statement_handle)?;
        entry.bind(read_param_rows(request).await?);
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    async fn do_put_statement_update(
        &self,
        ticket: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let (session, stmt, described) = self.prepare(&ticket.query, &request).await?;
        let client = peer(&request);
        self.run_update(&CachedStatement::new(session, stmt, described), client)
            .await
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let entry = self.statement(&request, &query.prepared_statement_handle)?;
        // One execution per bound row; without bound rows, one with the rows bound before.
        let client = peer(&request);
        let rows = read_param_rows(request).await?;
        if !rows.is_empty() {
            entry.bind(rows);
        }
        self.run_update(&entry, client).await
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        auth::caller(&request)?;
        let schema = query.into_builder().schema();
        Self::command_info(&schema, query, request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        auth::caller(&request)?;
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
        auth::caller(&request)?;
        let schema = query.clone().into_builder().schema();
        Self::command_info(&schema, query, request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        auth::caller(&request)?;
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
        auth::caller(&request)?;
        let schema = query.clone().into_builder().schema();
        Self::command_info(&schema, query, request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        let caller = auth::caller(&request)?;
        // The tables the caller's role sees.
        let session = self.engine.new_session();
        session.set_user(&caller.role.name, caller.role.superuser);
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
        auth::caller(&request)?;
        let schema = Schema::new(vec![Field::new("table_type", DataType::Utf8, false)]);
        Self::command_info(&schema, query, request)
    }

    async fn do_get_table_types(
        &self,
        _query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        auth::caller(&request)?;
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
        auth::caller(&request)?;
        let schema = query.clone().into_builder(&self.sql_info).schema();
        Self::command_info(schema.as_ref(), query, request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<FlightDataStream>, Status> {
        auth::caller(&request)?;
        let builder = query.into_builder(&self.sql_info);
        let schema = builder.schema();
        Ok(Response::new(Self::encode_batch_stream(
            builder.build(),
            schema,
        )))
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<FlightDataStream>, Status> {
        auth::caller(&request)?;
        Err(Status::unimplemented(format!(
            "unsupported ticket type {}",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// arrow-flight 59 answers a Flight SQL command or ticket whose inner message does not decode
/// with `INTERNAL` (its dispatch maps `ArrowError::ParseError` so); it is the client's bad
/// input, and the same crate answers `INVALID_ARGUMENT` when the outer `Any` does not decode.
/// This turns the one into the other, so no client input reaches the client as an internal
/// error.
fn undecodable_command_is_invalid_argument<B>(
    mut response: tonic::codegen::http::Response<B>,
) -> tonic::codegen::http::Response<B> {
    let headers = response.headers_mut();
    let internal = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"13");
    let undecodable = headers
        .get("grpc-message")
        .is_some_and(|v| v.as_bytes().starts_with(b"ParseError"));
    if internal && undecodable {
        headers.insert(
            "grpc-status",
            tonic::codegen::http::HeaderValue::from_static("3"),
        );
    }
    response
}

/// Serve Flight SQL on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    policy: crate::auth::Policy,
    token_ttl: std::time::Duration,
    tls: Option<(Vec<u8>, Vec<u8>)>,
    shutdown: CancellationToken,
) -> Result<(), EngineError> {
    let authenticator = auth::Authenticator::new(policy, Arc::clone(&engine), token_ttl);
    let service = FlightSqlServer::new(engine)?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let service = tonic::service::interceptor::InterceptedService::new(
        FlightServiceServer::new(service).max_decoding_message_size(64 * 1024 * 1024),
        move |request| authenticator.check(request),
    );
    let mut builder = tonic::transport::Server::builder().layer(
        tower::util::MapResponseLayer::new(undecodable_command_is_invalid_argument),
    );
    if let Some((cert, key)) = tls {
        let identity = tonic::transport::Identity::from_pem(cert, key);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| {
                EngineError::statement(StatusCode::ConfigFileError, format!("flight tls: {e}"))
            })?;
    }
    builder
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
        .await
        .map_err(|e| EngineError::statement(StatusCode::IoError, format!("flight server: {e}")))?;
    info!("flight frontend stopped");
    Ok(())
}
