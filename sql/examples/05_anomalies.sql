-- Alerting on service metrics: the demo `service_metrics` table (hourly latency per host).

-- 1. Every point with its expected value, normal band and anomaly score (time first, so a
--    Grafana time-series panel plots it as is).
SELECT ts, host, latency_ms, round(expected, 1) AS expected, round(score, 4) AS score,
       is_anomaly
FROM ANOMALY(TABLE service_metrics, time => 'ts', value => 'latency_ms', id => 'host')
WHERE score > 0.99
ORDER BY ts;

-- 2. Alerts per host (onsets of anomalous episodes).
SELECT host, count(*) AS alerts
FROM ANOMALY(TABLE service_metrics, time => 'ts', value => 'latency_ms', id => 'host',
             sensitivity => 0.999)
WHERE is_anomaly
GROUP BY host
ORDER BY host;

-- 3. The expected value follows the hosts' daily cycle once two days are in (the timestamps
--    give the season); season_length => 1 judges by the local level alone, season_length => n
--    names a season of n points.
SELECT host, count(*) AS alerts_without_season
FROM ANOMALY(TABLE service_metrics, time => 'ts', value => 'latency_ms', id => 'host',
             season_length => 1)
WHERE is_anomaly
GROUP BY host
ORDER BY host;

-- 4. Unusual customers: an isolation forest over the demo customers, then the ten rows that
--    isolate fastest (scores near 1 are unusual, about 0.5 ordinary).
CREATE OR REPLACE MODEL odd_customers DETECT ANOMALIES WITH (num_trees = 100)
AS SELECT plan, tenure_months, monthly_charges, support_calls FROM customers;

SELECT customer_id, plan, tenure_months, monthly_charges, support_calls,
       round(ANOMALY('odd_customers', plan, tenure_months, monthly_charges, support_calls), 3)
         AS score
FROM customers
ORDER BY score DESC
LIMIT 10;
