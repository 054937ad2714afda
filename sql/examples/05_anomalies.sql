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

-- 5. The alerting rule as a model: a series detector keeps ANOMALY's settings and columns, so
--    every dashboard query alerts the same way and a new version changes them all. Rows the
--    on-call team reviewed label the history (true: an incident, false: normal, NULL: not
--    reviewed); the settings not given are chosen to find the incidents with the fewest
--    false alarms (metrics in system.model_versions, settings in DESCRIBE MODEL).
CREATE OR REPLACE MODEL latency_alerts DETECT ANOMALIES IN latency_ms TIME ts BY host
  WITH (labels = 'incident', cooldown = 12)
AS SELECT ts, host, latency_ms,
          CASE WHEN latency_ms > 200 THEN true WHEN ts < '2025-01-06' THEN false END AS incident
   FROM service_metrics;

SELECT ts, host, latency_ms, round(score, 4) AS score
FROM ANOMALY('latency_alerts', TABLE service_metrics)
WHERE is_anomaly
ORDER BY ts;
