-- Churn prediction on the demo `customers` table: train, inspect, score, retrain.
-- Training progress arrives as NOTICE messages.

-- 1. Train. The target is `churned` (boolean → binary classification); every other column of
--    the query is a feature, in this order. `auto` (the default) tries several algorithms.
CREATE OR REPLACE MODEL churn
  PREDICT churned
  USING auto
  WITH (validation_fraction = 0.2, seed = 42, time_budget = '30s')
AS SELECT plan, tenure_months, monthly_charges, support_calls, churned FROM customers;

-- 2. What was trained, how good it is, and what auto tried.
SHOW MODELS;
DESCRIBE MODEL churn;
SELECT trial, algorithm, params, metric, round(value, 4) AS value, chosen
FROM system.model_trials WHERE name = 'churn' ORDER BY trial;
SELECT * FROM feature_importance('churn');

-- 3. Score inside queries: features are passed by position, in training order.
SELECT customer_id,
       PREDICT('churn', plan, tenure_months, monthly_charges, support_calls) AS will_churn,
       round(PREDICT_PROBA('churn', plan, tenure_months, monthly_charges, support_calls), 3) AS p
FROM customers
ORDER BY p DESC
LIMIT 10;

-- Churn risk per plan, and the customers worth a call.
SELECT plan,
       round(avg(PREDICT_PROBA('churn', plan, tenure_months, monthly_charges, support_calls)), 3) AS avg_risk,
       avg(CASE WHEN churned THEN 1.0 ELSE 0.0 END) AS actual_rate
FROM customers GROUP BY plan ORDER BY plan;

CREATE TABLE IF NOT EXISTS churn_call_list AS
SELECT customer_id, monthly_charges
FROM customers
WHERE PREDICT_PROBA('churn', plan, tenure_months, monthly_charges, support_calls) > 0.7;

-- 4. Customer segments with k-means (no target).
CREATE OR REPLACE MODEL segments USING kmeans WITH (k = 4)
AS SELECT tenure_months, monthly_charges, support_calls FROM customers;

SELECT PREDICT('segments', tenure_months, monthly_charges, support_calls) AS segment,
       count(*) AS customers, round(avg(monthly_charges), 2) AS avg_charges
FROM customers GROUP BY 1 ORDER BY 1;

-- 5. A neural network on the same rows (seeded: a retrain gives the same predictions), and
--    why it scores one customer as it does (integrated gradients, in log-odds).
CREATE OR REPLACE MODEL churn_nn PREDICT churned USING mlp
  WITH (hidden_layers = '32,16', seed = 42)
AS SELECT plan, tenure_months, monthly_charges, support_calls, churned FROM customers;

SELECT name, algorithm, metric, round(metric_value, 3) AS validation_auc
FROM system.models WHERE name = 'churn_nn';
SELECT customer_id,
       round(PREDICT_PROBA('churn_nn', plan, tenure_months, monthly_charges, support_calls), 3) AS p_nn,
       round(PREDICT_PROBA('churn', plan, tenure_months, monthly_charges, support_calls), 3) AS p_auto
FROM customers ORDER BY customer_id LIMIT 5;
SELECT customer_id, round(plan_contribution, 2) AS plan, round(tenure_months_contribution, 2) AS tenure,
       round(monthly_charges_contribution, 2) AS charges, round(support_calls_contribution, 2) AS calls,
       round(base_value, 2) AS base
FROM EXPLAIN_PREDICT('churn_nn', (SELECT customer_id, plan, tenure_months, monthly_charges, support_calls
                                  FROM customers ORDER BY customer_id LIMIT 3));

-- 6. Every version stays listed; DROP MODEL removes a model and its artifacts.
SELECT name, version, is_current, algorithm, train_rows FROM system.model_versions ORDER BY name, version;
DROP MODEL IF EXISTS segments;
