//! How the frontends report engine errors: one table from the engine's [`StatusCode`] to a
//! Postgres SQLSTATE (pgwire) and one to a gRPC status code (Flight SQL), pinned by a test.

pub use prognos_engine::error::{EngineError, EngineResult, StatusCode};

/// The wire codes of a status code.
pub trait WireStatus {
    /// The Postgres SQLSTATE of this class.
    fn sqlstate(self) -> &'static str;
    /// The gRPC status code Flight SQL reports for this class.
    fn grpc_code(self) -> tonic::Code;
}

impl WireStatus for StatusCode {
    /// The Postgres SQLSTATE of this class.
    fn sqlstate(self) -> &'static str {
        match self {
            StatusCode::SyntaxError => "42601",
            StatusCode::UndefinedTable => "42P01",
            StatusCode::UndefinedColumn => "42703",
            StatusCode::UndefinedFunction => "42883",
            StatusCode::UndefinedSchema => "3F000",
            StatusCode::DuplicateTable => "42P07",
            StatusCode::InvalidParameterValue => "22023",
            StatusCode::DatatypeMismatch => "42804",
            StatusCode::InvalidTextRepresentation => "22P02",
            StatusCode::DivisionByZero => "22012",
            StatusCode::NumericOutOfRange => "22003",
            StatusCode::CardinalityViolation => "21000",
            StatusCode::ProtocolViolation => "08P01",
            StatusCode::FeatureNotSupported => "0A000",
            StatusCode::QueryCanceled => "57014",
            StatusCode::OutOfMemory => "53200",
            StatusCode::StatementTooComplex => "54001",
            StatusCode::ProgramLimitExceeded => "54000",
            StatusCode::IoError => "58030",
            StatusCode::UndefinedFile => "58P01",
            StatusCode::ConfigFileError => "F0000",
            StatusCode::InvalidStatement => "42000",
            StatusCode::UndefinedObject => "42704",
            StatusCode::DuplicateObject => "42710",
            StatusCode::DataException => "22000",
            StatusCode::DataCorrupted => "XX001",
            StatusCode::InFailedTransaction => "25P02",
            StatusCode::NoActiveTransaction => "25P01",
            StatusCode::InvalidSavepoint => "3B001",
            StatusCode::SerializationFailure => "40001",
            StatusCode::InvalidPassword => "28P01",
            StatusCode::InvalidAuthorization => "28000",
            StatusCode::InsufficientPrivilege => "42501",
            StatusCode::ObjectInUse => "55006",
            StatusCode::ObjectNotInPrerequisiteState => "55000",
            StatusCode::DependentObjects => "2BP01",
            StatusCode::InvalidGrantOperation => "0LP01",
            StatusCode::ReservedName => "42939",
            StatusCode::ReadOnlyParameter => "55P02",
            StatusCode::TooManyConnections => "53300",
            StatusCode::Internal => "XX000",
        }
    }

    /// The gRPC status code Flight SQL reports for this class.
    fn grpc_code(self) -> tonic::Code {
        match self {
            StatusCode::SyntaxError
            | StatusCode::InvalidParameterValue
            | StatusCode::DatatypeMismatch
            | StatusCode::InvalidTextRepresentation
            | StatusCode::DivisionByZero
            | StatusCode::NumericOutOfRange
            | StatusCode::CardinalityViolation
            | StatusCode::ProtocolViolation
            | StatusCode::InvalidStatement
            | StatusCode::StatementTooComplex
            | StatusCode::UndefinedColumn
            | StatusCode::UndefinedFunction
            | StatusCode::DataException => tonic::Code::InvalidArgument,
            StatusCode::UndefinedObject => tonic::Code::NotFound,
            StatusCode::DuplicateObject => tonic::Code::AlreadyExists,
            StatusCode::DataCorrupted => tonic::Code::DataLoss,
            StatusCode::UndefinedTable
            | StatusCode::UndefinedSchema
            | StatusCode::UndefinedFile => tonic::Code::NotFound,
            StatusCode::DuplicateTable => tonic::Code::AlreadyExists,
            StatusCode::FeatureNotSupported => tonic::Code::Unimplemented,
            StatusCode::QueryCanceled => tonic::Code::Cancelled,
            StatusCode::OutOfMemory
            | StatusCode::ProgramLimitExceeded
            | StatusCode::TooManyConnections => tonic::Code::ResourceExhausted,
            StatusCode::IoError | StatusCode::ConfigFileError => tonic::Code::Unavailable,
            StatusCode::InFailedTransaction
            | StatusCode::NoActiveTransaction
            | StatusCode::InvalidSavepoint => tonic::Code::FailedPrecondition,
            StatusCode::SerializationFailure => tonic::Code::Aborted,
            StatusCode::InvalidPassword | StatusCode::InvalidAuthorization => {
                tonic::Code::Unauthenticated
            }
            StatusCode::InsufficientPrivilege => tonic::Code::PermissionDenied,
            StatusCode::ObjectInUse
            | StatusCode::ObjectNotInPrerequisiteState
            | StatusCode::ReadOnlyParameter
            | StatusCode::DependentObjects => tonic::Code::FailedPrecondition,
            StatusCode::ReservedName | StatusCode::InvalidGrantOperation => {
                tonic::Code::InvalidArgument
            }
            StatusCode::Internal => tonic::Code::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_table_is_pinned() {
        let table = [
            (StatusCode::SyntaxError, "42601"),
            (StatusCode::UndefinedTable, "42P01"),
            (StatusCode::UndefinedColumn, "42703"),
            (StatusCode::UndefinedFunction, "42883"),
            (StatusCode::DuplicateTable, "42P07"),
            (StatusCode::InvalidParameterValue, "22023"),
            (StatusCode::DivisionByZero, "22012"),
            (StatusCode::CardinalityViolation, "21000"),
            (StatusCode::ProtocolViolation, "08P01"),
            (StatusCode::FeatureNotSupported, "0A000"),
            (StatusCode::QueryCanceled, "57014"),
            (StatusCode::OutOfMemory, "53200"),
            (StatusCode::UndefinedFile, "58P01"),
            (StatusCode::InFailedTransaction, "25P02"),
            (StatusCode::NoActiveTransaction, "25P01"),
            (StatusCode::InvalidSavepoint, "3B001"),
            (StatusCode::SerializationFailure, "40001"),
            (StatusCode::InvalidPassword, "28P01"),
            (StatusCode::InvalidAuthorization, "28000"),
            (StatusCode::InsufficientPrivilege, "42501"),
            (StatusCode::ObjectInUse, "55006"),
            (StatusCode::ObjectNotInPrerequisiteState, "55000"),
            (StatusCode::DependentObjects, "2BP01"),
            (StatusCode::InvalidGrantOperation, "0LP01"),
            (StatusCode::ReservedName, "42939"),
            (StatusCode::ReadOnlyParameter, "55P02"),
            (StatusCode::TooManyConnections, "53300"),
            (StatusCode::Internal, "XX000"),
        ];
        for (code, state) in table {
            assert_eq!(code.sqlstate(), state, "{code:?}");
        }
    }
}
