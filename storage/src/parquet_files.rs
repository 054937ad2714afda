//! Writing record batch streams as Parquet data files.

use datafusion::execution::SendableRecordBatchStream;
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use futures::StreamExt;
use object_store::buffered::BufWriter;

use crate::error::StorageResult;
use crate::manifest::{DATA_DIR, DataFile, TableStore};

/// Rows after which a new data file is started.
pub const DEFAULT_ROWS_PER_FILE: usize = 4 * 1024 * 1024;

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(256 * 1024))
        .build()
}

/// Stream `data` into new Parquet files under `<table root>/data/`, one file per
/// `rows_per_file` rows. The files are not visible to readers until a manifest lists them.
pub async fn write_data_files(
    table: &TableStore,
    mut data: SendableRecordBatchStream,
    rows_per_file: usize,
) -> StorageResult<Vec<DataFile>> {
    let schema = data.schema();
    let mut files = Vec::new();
    let mut current: Option<(String, AsyncArrowWriter<BufWriter>, u64)> = None;
    while let Some(batch) = data.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        if current.is_none() {
            let rel = format!("{DATA_DIR}/{}.parquet", uuid::Uuid::new_v4().simple());
            let sink = BufWriter::new(table.store().clone(), table.child(&rel));
            let writer =
                AsyncArrowWriter::try_new(sink, schema.clone(), Some(writer_properties()))?;
            current = Some((rel, writer, 0));
        }
        let full = match current.as_mut() {
            Some((_, writer, rows)) => {
                writer.write(&batch).await?;
                *rows += batch.num_rows() as u64;
                *rows as usize >= rows_per_file
            }
            None => false,
        };
        if full && let Some((rel, writer, rows)) = current.take() {
            files.push(finish(rel, writer, rows).await?);
        }
    }
    if let Some((rel, writer, rows)) = current.take() {
        files.push(finish(rel, writer, rows).await?);
    }
    Ok(files)
}

async fn finish(
    rel: String,
    mut writer: AsyncArrowWriter<BufWriter>,
    rows: u64,
) -> StorageResult<DataFile> {
    writer.flush().await?;
    let bytes = writer.bytes_written() as u64;
    writer.close().await?;
    Ok(DataFile {
        path: rel,
        rows,
        bytes,
    })
}
