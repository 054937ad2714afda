-- Sales forecasting on the demo `daily_sales` table (one series per store).

-- 1. Four weeks ahead for every store, with 90 % prediction intervals. `auto` picks a method
--    per store by backtest; the `method` column says which.
SELECT store, day, round(forecast, 1) AS forecast, round(lower, 1) AS lower,
       round(upper, 1) AS upper, method
FROM FORECAST(TABLE daily_sales, time => 'day', value => 'sales', id => 'store',
              horizon => 28, level => 90)
ORDER BY store, day
LIMIT 10;

-- 2. Weekly totals of the forecast per store (a Grafana-style panel query).
SELECT store, date_trunc('week', day) AS week, round(sum(forecast), 0) AS forecast_sales
FROM FORECAST(TABLE daily_sales, time => 'day', value => 'sales', id => 'store',
              horizon => 28)
GROUP BY store, date_trunc('week', day)
ORDER BY store, week;

-- 3. A fixed method and season length, over a filtered input.
SELECT day, round(forecast, 1) AS forecast, method
FROM FORECAST((SELECT day, sales FROM daily_sales WHERE store = 'online'),
              time => 'day', value => 'sales', horizon => 7,
              method => 'theta', season_length => 7)
ORDER BY day;

-- 4. A stored forecasting model: trained once, versioned, read back without refitting.
CREATE OR REPLACE MODEL store_demand FORECAST sales TIME day BY store
  WITH (horizon = 28, level = 90)
AS SELECT day, store, sales FROM daily_sales;

SELECT store, day, round(forecast, 1) AS forecast, method
FROM FORECAST('store_demand', horizon => 7)
ORDER BY store, day
LIMIT 7;

-- 5. How well did it do on the last 28 days it was not shown?
SELECT store, method, round(smape, 2) AS smape, round(mase, 3) AS mase, coverage
FROM EVALUATE('store_demand')
ORDER BY store;

-- 6. One global model for all stores (gbdt_lag) with an exogenous column: a weekend flag,
--    known ahead. The forecast reads its future values from a query (or a table).
CREATE OR REPLACE MODEL store_demand_global FORECAST sales TIME day BY store USING gbdt_lag
  WITH (horizon = 14, level = 90)
AS SELECT day, store, sales,
          CASE WHEN extract(dow FROM day) IN (0, 6) THEN 1 ELSE 0 END AS weekend
   FROM daily_sales;

SELECT store, day, round(forecast, 1) AS forecast, round(lower, 1) AS lower,
       round(upper, 1) AS upper
FROM FORECAST('store_demand_global',
              (SELECT CAST(g.ts AS DATE) AS day, s.store,
                      CASE WHEN extract(dow FROM g.ts) IN (0, 6) THEN 1 ELSE 0 END AS weekend
               FROM (SELECT value AS ts
                     FROM generate_series(TIMESTAMP '2026-01-01', TIMESTAMP '2026-01-14',
                                          INTERVAL '1 day')) AS g
               CROSS JOIN (SELECT DISTINCT store FROM daily_sales) AS s))
ORDER BY store, day
LIMIT 7;

-- 7. AutoARIMA for one store, by name.
SELECT day, round(forecast, 1) AS forecast, method
FROM FORECAST((SELECT day, sales FROM daily_sales WHERE store = 'north'),
              time => 'day', value => 'sales', horizon => 7, method => 'arima')
ORDER BY day;

-- 8. Monthly totals: dates on the first of the month are calendar months, so the forecast
--    continues on the first of the next months (quarters and month ends work the same way).
SELECT store, month, round(forecast, 0) AS forecast, method
FROM FORECAST((SELECT CAST(date_trunc('month', day) AS DATE) AS month, store,
                      sum(sales) AS sales
               FROM daily_sales GROUP BY 1, 2),
              time => 'month', value => 'sales', id => 'store', horizon => 3)
ORDER BY store, month;
