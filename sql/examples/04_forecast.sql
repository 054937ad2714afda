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
