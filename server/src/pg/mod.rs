//! Postgres wire protocol frontend (pgwire 0.42).
//!
//! One handler set per connection, holding that connection's [`Session`]: simple and extended
//! query protocol, start-up parameters, cancel requests (by pid + secret key, routed to the
//! session's running statement), errors with SQLSTATEs, and results streamed batch by batch.

mod copy_out;
mod corked;
mod encode;
mod frame_check;
mod params;
mod startup;
mod types;
mod wire_loop;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use async_trait::async_trait;
use futures::{Sink, SinkExt, StreamExt, stream};
use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::CancelHandler;
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{CopyResponse, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::stmt::StoredStatement;
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{
    ClientInfo, ErrorHandler, PgWireServerHandlers, RandomPidSecretKeyGenerator, Type,
};
use pgwire::api::{ClientPortalStore, DEFAULT_NAME};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::extendedquery::{
    Bind, BindComplete, Close, CloseComplete, Describe, Execute, Parse, ParseComplete,
    Sync as PgSync, TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::response::ReadyForQuery;
use pgwire::messages::simplequery::Query;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::audit::StatementAudit;
use crate::error::{EngineError, StatusCode, WireStatus};
use crate::metrics::{ConnectionGauge, METRICS, QueryTimer};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use prognos_engine::streams::cancellable;
use prognos_engine::{CopyInTarget, CopyKind, Described, Engine, Output, Session, Statement};

pub use encode::fields_for;

pub(crate) const PROTOCOL: &str = "pgwire";

/// (pid, secret key) a connection hands out for cancel requests.
type CancelKey = (i32, Vec<u8>);
type SessionMap = HashMap<CancelKey, Weak<Session>>;

/// Sessions by (pid, secret key), so a CancelRequest on another socket reaches them.
#[derive(Debug, Default)]
struct CancelRegistry {
    sessions: Mutex<SessionMap>,
}

impl CancelRegistry {
    fn register(&self, key: (i32, Vec<u8>), session: &Arc<Session>) {
        self.lock().insert(key, Arc::downgrade(session));
    }
    fn unregister(&self, key: &(i32, Vec<u8>)) {
        self.lock().remove(key);
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, SessionMap> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

static PID_GENERATOR: LazyLock<RandomPidSecretKeyGenerator> =
    LazyLock::new(RandomPidSecretKeyGenerator::default);

/// How the pgwire frontend admits connections.
pub struct PgSecurity {
    auth: Arc<startup::PgAuth>,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    slots: Arc<startup::ConnectionSlots>,
}

impl std::fmt::Debug for PgSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSecurity")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl PgSecurity {
    /// Authentication by `policy` against `engine`'s roles, and TLS with `tls` when given.
    /// At most `max_connections` connections are served at once; the next is refused with
    /// `53300` at start-up.
    /// With `require_tls`, a connection that does not start TLS is refused (`28000`).
    pub fn new(
        policy: crate::auth::Policy,
        engine: &Arc<Engine>,
        tls: Option<Arc<pgwire::tokio::tokio_rustls::rustls::ServerConfig>>,
        require_tls: bool,
        max_connections: usize,
    ) -> Self {
        Self {
            auth: Arc::new(startup::PgAuth::new(
                policy,
                Arc::clone(engine),
                require_tls && tls.is_some(),
            )),
            tls: tls.map(pgwire::tokio::TlsAcceptor::from),
            slots: Arc::new(startup::ConnectionSlots::new(max_connections)),
        }
    }
}

/// Accept connections on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    security: PgSecurity,
    shutdown: CancellationToken,
) {
    let registry = Arc::new(CancelRegistry::default());
    wire_loop::quiet_decoder_panics();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let handlers = Connection::new(
            Arc::clone(&engine),
            Arc::clone(&registry),
            Arc::clone(&security.auth),
            startup::ConnectionSlots::take(&security.slots),
            peer.to_string(),
        );
        let tls = security.tls.clone();
        tokio::spawn(async move {
            debug!(%peer, "pg connection");
            // A decoder panic (pgwire 0.42 reads past the end of some malformed bodies) is
            // caught in the loop and answered 08P01; this catches anything else, so a panic
            // ends this connection alone.
            let session =
                std::panic::AssertUnwindSafe(wire_loop::serve_connection(socket, tls, handlers));
            match futures::FutureExt::catch_unwind(session).await {
                Ok(Ok(wire_loop::Ended::Normally)) => {}
                Ok(Ok(wire_loop::Ended::ProtocolViolation(reason))) => {
                    METRICS.error(PROTOCOL, "08P01");
                    warn!(%peer, %reason, "pg connection closed: protocol violation (08P01)")
                }
                Ok(Err(e)) => debug!(%peer, error = %e, "pg connection ended with error"),
                Err(_) => warn!(%peer, "pg connection closed: a panic while serving it"),
            }
        });
    }
    info!("pg frontend stopped");
}

/// The handler set of one connection.
struct Connection {
    handler: Arc<Handler>,
}

impl Connection {
    fn new(
        engine: Arc<Engine>,
        registry: Arc<CancelRegistry>,
        auth: Arc<startup::PgAuth>,
        slot: startup::Slot,
        client: String,
    ) -> Self {
        let session = Arc::new(engine.new_session());
        let parser = Arc::new(PgQueryParser {
            engine: Arc::clone(&engine),
            session: Arc::clone(&session),
        });
        Self {
            handler: Arc::new(Handler {
                engine,
                session,
                registry,
                auth,
                slot,
                parser,
                key: Mutex::new(None),
                pending_copy: Mutex::new(None),
                client,
                _gauge: ConnectionGauge::open(PROTOCOL),
            }),
        }
    }
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.handler)
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.handler)
    }
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.handler)
    }
    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.handler)
    }
    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::clone(&self.handler)
    }
    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        Arc::clone(&self.handler)
    }
}

/// A `COPY … FROM STDIN` in progress.
type PendingCopy = (CopyInTarget, bytes::BytesMut, Option<Arc<StatementAudit>>);

/// Handlers of one connection (see module docs).
struct Handler {
    engine: Arc<Engine>,
    session: Arc<Session>,
    registry: Arc<CancelRegistry>,
    auth: Arc<startup::PgAuth>,
    /// This connection's place in `max_connections`.
    slot: startup::Slot,
    parser: Arc<PgQueryParser>,
    key: Mutex<Option<(i32, Vec<u8>)>>,
    /// `COPY … FROM STDIN` in progress: its target, the bytes received so far, and its audit
    /// record (written when the copy ends).
    pending_copy: Mutex<Option<PendingCopy>>,
    /// The client's address.
    client: String,
    _gauge: ConnectionGauge,
}

impl Drop for Handler {
    fn drop(&mut self) {
        if let Some(key) = self.key.lock().unwrap_or_else(|p| p.into_inner()).take() {
            self.registry.unregister(&key);
        }
    }
}

/// Turn a server error into a Postgres error response.
fn to_pg_error(e: EngineError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(&e)))
}

fn error_info(e: &EngineError) -> ErrorInfo {
    ErrorInfo::new(
        "ERROR".to_string(),
        e.status().sqlstate().to_string(),
        e.to_string(),
    )
}

#[async_trait]
impl CancelHandler for Handler {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let key = (request.pid, request.secret_key.to_bytes().to_vec());
        let session = self.registry.lock().get(&key).and_then(Weak::upgrade);
        if let Some(session) = session {
            info!(pid = request.pid, "cancel request");
            session.cancel_running();
        }
    }
}

impl ErrorHandler for Handler {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        METRICS.error(PROTOCOL, error.code());
    }
}

impl Handler {
    /// Drive a statement while forwarding its progress messages (e.g. training progress of
    /// `CREATE MODEL`) to the client as NOTICEs as they happen.
    async fn with_notices<C, F, T>(&self, client: &mut C, run: F) -> T
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        F: std::future::Future<Output = T>,
    {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<prognos_engine::Notice>();
        self.session.set_notice_sink(Some(tx));
        let notice = |n: prognos_engine::Notice| {
            let (severity, code) = if n.warning {
                ("WARNING", "01000")
            } else {
                ("NOTICE", "00000")
            };
            PgWireBackendMessage::NoticeResponse(
                ErrorInfo::new(severity.to_string(), code.to_string(), n.message).into(),
            )
        };
        tokio::pin!(run);
        let out = loop {
            tokio::select! {
                out = &mut run => break out,
                Some(m) = rx.recv() => {
                    // A client that stopped reading only loses its notices.
                    let _ = client.send(notice(m)).await;
                }
            }
        };
        self.session.set_notice_sink(None);
        while let Ok(m) = rx.try_recv() {
            let _ = client.send(notice(m)).await;
        }
        out
    }

    /// Run one statement and shape its output as a pgwire response.
    async fn run(
        &self,
        stmt: &Statement,
        prepared: Option<&Described>,
        params: Option<Vec<datafusion::common::ScalarValue>>,
        format: &Format,
    ) -> Result<Response, EngineError> {
        let timer = QueryTimer::start(PROTOCOL);
        let audit = StatementAudit::begin(
            &self.engine,
            &self.session,
            Some(&self.client),
            PROTOCOL,
            stmt,
        );
        let token = self.session.begin_statement();
        let output = tokio::select! {
            biased;
            _ = token.cancelled() => Err(token.error()),
            out = async {
                match prepared {
                    Some(d) => self.engine.execute_prepared(&self.session, stmt, d, params).await,
                    None => self.engine.execute(&self.session, stmt, params).await,
                }
            } => out,
        };
        if let Some(a) = &audit {
            a.touched(&self.session);
        }
        let output = output.inspect_err(|e| {
            self.session.statement_failed();
            if let Some(a) = &audit {
                a.fail(e);
            }
        })?;
        Ok(match output {
            Output::Rows(stream) => {
                let schema = stream.schema();
                let fields: Arc<Vec<FieldInfo>> =
                    Arc::new(fields_for(&schema, |i| format.format_for(i)));
                // The first batch is computed here, while the statement's NOTICEs are still
                // forwarded (`with_notices`): what the model functions say while scoring it (a
                // fallback model answering, FORECAST's series notes) reaches the client.
                let mut stream = cancellable(stream, token);
                let first = stream.next().await;
                let stream: datafusion::execution::SendableRecordBatchStream =
                    Box::pin(RecordBatchStreamAdapter::new(
                        Arc::clone(&schema),
                        stream::iter(first).chain(stream),
                    ));
                let row_fields = Arc::clone(&fields);
                let session = Arc::clone(&self.session);
                let rows = stream
                    .map(move |batch| {
                        let _keep = &timer;
                        let batch =
                            crate::audit::observe(audit.as_deref(), batch).map_err(|e| {
                                // An error while the rows stream fails the transaction block too.
                                session.statement_failed();
                                to_pg_error(e)
                            })?;
                        encode::encode_batch(&batch, &row_fields)
                    })
                    .flat_map(|rows| match rows {
                        Ok(rows) => stream::iter(rows.into_iter().map(Ok).collect::<Vec<_>>()),
                        Err(e) => stream::iter(vec![Err(e)]),
                    });
                Response::Query(QueryResponse::new(fields, rows))
            }
            Output::Command { tag, rows } => {
                let mut t = Tag::new(&tag);
                if tag == "INSERT" {
                    t = t.with_oid(0);
                }
                if let Some(n) = rows {
                    t = t.with_rows(n as usize);
                    if let Some(a) = &audit {
                        a.add_rows(n);
                    }
                }
                Response::Execution(t)
            }
            Output::CopyIn(target) => {
                let columns = target.columns.fields().len();
                let wire_format = i8::from(target.format.kind == CopyKind::Binary);
                *self.pending_copy.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((target, bytes::BytesMut::new(), audit));
                Response::CopyIn(CopyResponse::new(wire_format, columns, stream::empty()))
            }
            Output::CopyOut {
                stream: rows,
                format: copy_format,
            } => {
                let schema = rows.schema();
                let columns = schema.fields().len();
                let wire_format = i8::from(copy_format.kind == CopyKind::Binary);
                // What precedes the rows (the binary signature, a CSV header line) travels in
                // the first row's message, so pgwire's row count stays the rows' count.
                let preamble = if copy_format.kind == CopyKind::Binary {
                    Some(copy_out::binary_header())
                } else if copy_format.kind == CopyKind::Csv && copy_format.header {
                    Some(copy_out::csv_header(&schema, &copy_format))
                } else {
                    None
                };
                let rows = cancellable(rows, token)
                    .map(move |batch| {
                        let _keep = &timer;
                        let batch =
                            crate::audit::observe(audit.as_deref(), batch).map_err(to_pg_error)?;
                        copy_out::encode_rows(&batch, &copy_format)
                    })
                    .flat_map(|rows| match rows {
                        Ok(rows) => stream::iter(rows.into_iter().map(Ok).collect::<Vec<_>>()),
                        Err(e) => stream::iter(vec![Err(e)]),
                    });
                let pending = Arc::new(std::sync::Mutex::new(preamble));
                let first = Arc::clone(&pending);
                let rows = rows
                    .map(move |row| {
                        let row = row?;
                        Ok(
                            match first.lock().unwrap_or_else(|p| p.into_inner()).take() {
                                Some(pre) => {
                                    let mut both = bytes::BytesMut::from(pre.as_ref());
                                    both.extend_from_slice(&row);
                                    both.freeze()
                                }
                                None => row,
                            },
                        )
                    })
                    // No rows: the preamble alone (pgwire then counts it as one row).
                    .chain(stream::once(async move {
                        Ok(pending
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .take()
                            .unwrap_or_default())
                    }))
                    .map(|r: PgWireResult<bytes::Bytes>| r.map(CopyData::new));
                // pgwire ends a binary stream with its trailer itself.
                Response::CopyOut(CopyResponse::new(wire_format, columns, rows))
            }
            Output::TransactionStart(tag) => Response::TransactionStart(Tag::new(&tag)),
            Output::TransactionEnd(tag) => Response::TransactionEnd(Tag::new(&tag)),
        })
    }
}

#[async_trait]
impl CopyHandler for Handler {
    async fn on_copy_data<C>(&self, _client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut pending = self.pending_copy.lock().unwrap_or_else(|p| p.into_inner());
        match pending.as_mut() {
            Some((_, buf, _)) => {
                buf.extend_from_slice(&copy_data.data);
                Ok(())
            }
            None => Err(to_pg_error(EngineError::statement(
                StatusCode::ProtocolViolation,
                "CopyData received outside of COPY FROM STDIN",
            ))),
        }
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use futures::SinkExt;
        let pending = self
            .pending_copy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some((target, buf, audit)) = pending else {
            return Err(to_pg_error(EngineError::statement(
                StatusCode::ProtocolViolation,
                "CopyDone received outside of COPY FROM STDIN",
            )));
        };
        let rows = self
            .engine
            .copy_in(&self.session, &target, buf.freeze())
            .await
            .inspect_err(|e| {
                self.session.statement_failed();
                if let Some(a) = &audit {
                    a.fail(e);
                }
            })
            .map_err(to_pg_error)?;
        if let Some(a) = &audit {
            a.add_rows(rows);
        }
        let tag = Tag::new("COPY").with_rows(rows as usize);
        client
            .send(PgWireBackendMessage::CommandComplete(tag.into()))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, _client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let pending = self
            .pending_copy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let e = EngineError::statement(
            StatusCode::QueryCanceled,
            format!("COPY from stdin failed: {}", fail.message),
        );
        if let Some((_, _, Some(a))) = &pending {
            a.fail(&e);
        }
        to_pg_error(e)
    }
}

#[async_trait]
impl SimpleQueryHandler for Handler {
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self._on_query(&mut corked::Corked::uncorked(client, &self.session), query)
            .await
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stmts = self
            .engine
            .parse(query)
            .inspect_err(|_| self.session.statement_failed())
            .map_err(to_pg_error)?;
        let mut responses = Vec::with_capacity(stmts.len());
        for stmt in &stmts {
            let run = self.run(stmt, None, None, &Format::UnifiedText);
            match self.with_notices(client, run).await {
                Ok(r) => responses.push(r),
                Err(e) => {
                    METRICS.error(PROTOCOL, e.status().sqlstate());
                    responses.push(Response::Error(Box::new(error_info(&e))));
                    break;
                }
            }
        }
        if responses.is_empty() {
            responses.push(Response::EmptyQuery);
        }
        Ok(responses)
    }
}

/// A statement prepared through the extended protocol.
#[derive(Debug, Clone)]
pub struct PgStatement {
    stmt: Statement,
    described: Described,
}

/// Parses and plans `Parse` messages in the connection's session.
struct PgQueryParser {
    engine: Arc<Engine>,
    session: Arc<Session>,
}

#[async_trait]
impl QueryParser for PgQueryParser {
    type Statement = PgStatement;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<PgStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut stmts = self
            .engine
            .parse(sql)
            .inspect_err(|_| self.session.statement_failed())
            .map_err(to_pg_error)?;
        if stmts.len() > 1 {
            return Err(to_pg_error(EngineError::statement(
                StatusCode::SyntaxError,
                "cannot insert multiple commands into a prepared statement",
            )));
        }
        let Some(stmt) = stmts.pop() else {
            return Ok(None);
        };
        let described = self
            .engine
            .describe(&self.session, &stmt)
            .await
            .map_err(to_pg_error)?;
        Ok(Some(PgStatement { stmt, described }))
    }

    fn get_parameter_types(&self, stmt: &PgStatement) -> PgWireResult<Vec<Type>> {
        Ok(stmt
            .described
            .params
            .iter()
            .map(|t| t.as_ref().map(types::pg_type).unwrap_or(Type::TEXT))
            .collect())
    }

    fn get_result_schema(
        &self,
        stmt: &PgStatement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(match &stmt.described.schema {
            Some(schema) => fields_for(schema, |i| {
                column_format
                    .map(|f| f.format_for(i))
                    .unwrap_or(FieldFormat::Text)
            }),
            None => Vec::new(),
        })
    }
}

#[async_trait]
impl ExtendedQueryHandler for Handler {
    type Statement = PgStatement;
    type QueryParser = PgQueryParser;

    fn query_parser(&self) -> Arc<PgQueryParser> {
        Arc::clone(&self.parser)
    }

    // Parse, Bind, Describe, Execute and Close answer without flushing (`corked`): their
    // replies leave with the ReadyForQuery that answers Sync.

    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME).to_owned();
        match StoredStatement::parse(client, &message, self.query_parser()).await? {
            Some(stmt) => client.portal_store().put_statement(Arc::new(stmt)),
            None => client.portal_store().put_empty_statement(&name),
        }
        client
            .feed(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
            .await?;
        Ok(())
    }

    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statement_name = message.statement_name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal_name = message.portal_name.as_deref().unwrap_or(DEFAULT_NAME);
        match client.portal_store().get_statement(statement_name) {
            Some(Entry::Value(statement)) => {
                let portal = Portal::try_new(&message, statement)?;
                client.portal_store().put_portal(Arc::new(portal));
            }
            Some(Entry::Empty) => {
                if !message.parameters.is_empty() {
                    return Err(to_pg_error(EngineError::statement(
                        StatusCode::ProtocolViolation,
                        format!(
                            "bind message supplies {} parameters, but prepared statement \
                             \"{statement_name}\" requires 0",
                            message.parameters.len()
                        ),
                    )));
                }
                client.portal_store().put_empty_portal(portal_name);
            }
            None => return Err(PgWireError::StatementNotFound(statement_name.to_owned())),
        }
        client
            .feed(PgWireBackendMessage::BindComplete(BindComplete::new()))
            .await?;
        Ok(())
    }

    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self._on_describe(&mut corked::Corked::new(client, &self.session), message)
            .await
    }

    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self._on_execute(&mut corked::Corked::new(client, &self.session), message)
            .await
    }

    async fn on_sync<C>(&self, client: &mut C, _message: PgSync) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // pgwire's own answer, with the session's transaction status.
        client.portal_store().rm_portal(DEFAULT_NAME);
        let status = corked::status_of(&self.session);
        client.set_transaction_status(status);
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                status,
            )))
            .await?;
        client.flush().await?;
        Ok(())
    }

    async fn on_close<C>(&self, client: &mut C, message: Close) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => client.portal_store().rm_statement(name),
            TARGET_TYPE_BYTE_PORTAL => client.portal_store().rm_portal(name),
            _ => {}
        }
        client
            .feed(PgWireBackendMessage::CloseComplete(CloseComplete::new()))
            .await?;
        Ok(())
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<PgStatement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stored = &portal.statement;
        let values = params::decode_all(
            portal,
            &stored.parameter_types,
            &stored.statement.described.params,
        )
        .map_err(to_pg_error)?;
        let params = if stored.statement.described.params.is_empty() && values.is_empty() {
            None
        } else {
            Some(values)
        };
        let run = self.run(
            &stored.statement.stmt,
            Some(&stored.statement.described),
            params,
            &portal.result_column_format,
        );
        self.with_notices(client, run).await.map_err(to_pg_error)
    }
}
