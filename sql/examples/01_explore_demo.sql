-- Explore the demo tables loaded into a fresh data dir.
-- Run: psql "postgresql://prognos@127.0.0.1:5432/prognos" -f sql/examples/01_explore_demo.sql
SELECT store, date_trunc('month', day) AS month, round(sum(sales), 2) AS sales
FROM daily_sales
GROUP BY 1, 2
ORDER BY 1, 2
LIMIT 12;

-- Churn rate by plan (the kind of table CREATE MODEL ... PREDICT churned will train on).
SELECT plan, count(*) AS customers, round(avg(CASE WHEN churned THEN 1.0 ELSE 0.0 END), 3) AS churn_rate
FROM customers
GROUP BY plan
ORDER BY churn_rate DESC;

-- Hourly latency per host, as a Grafana time-series panel would ask for it.
SELECT date_trunc('hour', ts) AS "time", host AS metric, avg(latency_ms) AS value
FROM service_metrics
WHERE ts BETWEEN '2025-01-02T00:00:00Z' AND '2025-01-03T00:00:00Z'
GROUP BY 1, 2
ORDER BY 1, 2;
