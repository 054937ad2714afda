-- Managed tables, external tables and COPY.
CREATE TABLE IF NOT EXISTS weekly_sales AS
SELECT store, date_trunc('week', day) AS week, sum(sales) AS sales
FROM daily_sales
GROUP BY 1, 2;

INSERT INTO weekly_sales
SELECT 'popup', TIMESTAMP '2026-01-05 00:00:00', 1234.5;

-- Export to Parquet (relative paths are resolved in the data dir's files/ folder, like CREATE EXTERNAL TABLE's) ...
COPY weekly_sales TO 'exports/weekly_sales.parquet' (FORMAT parquet);

-- ... and read it back as an external table.
CREATE EXTERNAL TABLE IF NOT EXISTS weekly_sales_export
STORED AS PARQUET LOCATION 'exports/weekly_sales.parquet';

SELECT count(*) FROM weekly_sales_export;

EXPLAIN SELECT store, sum(sales) FROM weekly_sales_export WHERE store = 'north' GROUP BY store;
