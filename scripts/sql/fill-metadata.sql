-- Fills an Airflow 2.x metadata database with realistic, deterministic metadata: DAGs, DAG
-- runs, task instances, XComs, logs, jobs, variables, connections, pools, task failures,
-- reschedules, rendered fields, triggers, notes and (2.10+) task instance history.
--
-- Usage (the database must hold a fresh Airflow schema, e.g. a tests/fixtures/airflow file):
--
--     psql -X -q -v ON_ERROR_STOP=1 -v scale=1 -d DB -f scripts/sql/fill-metadata.sql
--
-- scale (default 1, may be fractional) sets the volume; everything below scales linearly:
--
--     table           rows at scale 1     at scale 0.01
--     dag_run              20,000                200
--     task_instance     1,000,000             10,000   (50 per DAG run)
--     xcom               ~1,000,000            ~10,000   (value: ~100-byte UTF-8 JSON)
--     log                1,000,000             10,000
--     job                   50,000                500   (at least 10)
--     task_fail, task_reschedule, rendered_task_instance_fields, notes: proportionally
--
-- Fixed: 20 dag rows (4 paused), 30 variables, 9 connections, 3 pools besides default_pool,
-- 3 trigger rows. Works on Airflow 2.4 to 2.10 schemas: columns that only newer versions
-- have are filled when they exist (dag_run.clear_number and updated_at,
-- task_instance.custom_operator_name / task_display_name / updated_at, log.run_id /
-- try_number / owner_display_name, slot_pool.include_deferred,
-- dag.max_consecutive_failed_dag_runs; trigger.kwargs as JSON before 2.9, Fernet-encrypted
-- text from 2.9), and dag_run_note, task_instance_note and task_instance_history when the
-- tables exist.
--
-- The last DAG run of DAGs 1-3 is running and that of DAG 4 is queued: their task instances
-- are in every in-flight state (running, queued, scheduled, up_for_retry, deferred,
-- up_for_reschedule, restarting, none), and some xcom, task_fail, task_reschedule,
-- rendered_task_instance_fields, task_instance_note and task_instance_history rows refer to
-- them. Finished runs are success or failed, their task instances success, failed,
-- upstream_failed or skipped.
--
-- Encrypted values (variable.val with is_encrypted, connection.password / extra,
-- trigger.kwargs on 2.9+) are real Fernet tokens under the key of the schema fixtures,
-- bXdhYS1kciBzY2hlbWEgZml4dHVyZSBmZXJuZXQgMDE= , so that Airflow run with that key reads
-- them. dag_run.conf and task_instance.executor_config are Python pickles (protocol 5), as
-- Airflow's PickleType columns store them.
--
-- Deterministic: no random(), no now(); every value derives from generate_series
-- arithmetic, so two loads at the same scale give identical tables. The database must not
-- hold DAG runs, task instances, jobs or logs yet. Everything runs in one transaction;
-- sequences are left where Airflow would have them (setval to max(id)).

\set ON_ERROR_STOP on
\if :{?scale}
\else
\set scale 1
\endif

SELECT (:scale)::numeric > 0 AS fill_scale_ok \gset
\if :fill_scale_ok
\else
DO $$ BEGIN RAISE EXCEPTION 'fill-metadata.sql: scale must be a number > 0'; END $$;
\endif

-- Volumes.
SELECT greatest(1, round(20000 * (:scale)::numeric))::int AS fill_runs,
       greatest(1, round(1000000 * (:scale)::numeric))::int AS fill_logs,
       greatest(10, round(50000 * (:scale)::numeric))::int AS fill_jobs
\gset
SELECT greatest(1, :fill_jobs / 5000) AS fill_sched \gset

-- What this schema version has.
SELECT coalesce(bool_or(table_name = 'dag_run' AND column_name = 'clear_number'), false) AS has_dr_clear_number,
       coalesce(bool_or(table_name = 'dag_run' AND column_name = 'updated_at'), false) AS has_dr_updated_at,
       coalesce(bool_or(table_name = 'task_instance' AND column_name = 'updated_at'), false) AS has_ti_updated_at,
       coalesce(bool_or(table_name = 'task_instance' AND column_name = 'custom_operator_name'), false) AS has_ti_custom_operator_name,
       coalesce(bool_or(table_name = 'task_instance' AND column_name = 'task_display_name'), false) AS has_ti_task_display_name,
       coalesce(bool_or(table_name = 'log' AND column_name = 'owner_display_name'), false) AS has_log_owner_display_name,
       coalesce(bool_or(table_name = 'log' AND column_name = 'run_id'), false) AS has_log_run_id,
       coalesce(bool_or(table_name = 'log' AND column_name = 'try_number'), false) AS has_log_try_number,
       coalesce(bool_or(table_name = 'slot_pool' AND column_name = 'include_deferred'), false) AS has_pool_include_deferred,
       coalesce(bool_or(table_name = 'dag' AND column_name = 'max_consecutive_failed_dag_runs'), false) AS has_dag_max_consecutive_failed,
       coalesce(bool_or(table_name = 'trigger' AND column_name = 'kwargs' AND data_type = 'json'), false) AS has_trigger_json_kwargs,
       coalesce(bool_or(table_name = 'dag_run_note'), false) AS has_dag_run_note,
       coalesce(bool_or(table_name = 'task_instance_note'), false) AS has_task_instance_note,
       coalesce(bool_or(table_name = 'task_instance_history'), false) AS has_task_instance_history
FROM information_schema.columns
WHERE table_schema = current_schema()
\gset

\echo fill-metadata: scale :scale -> :fill_runs DAG runs, :fill_logs log rows, :fill_jobs jobs

BEGIN;
SET LOCAL TimeZone = 'UTC';
SET LOCAL synchronous_commit = off;
SET LOCAL work_mem = '64MB';
SET LOCAL jit = off;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM dag_run) OR EXISTS (SELECT 1 FROM task_instance)
       OR EXISTS (SELECT 1 FROM job) OR EXISTS (SELECT 1 FROM log) THEN
        RAISE EXCEPTION 'fill-metadata.sql: the database already holds DAG runs, task instances, jobs or logs; load it into a fresh Airflow schema';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM log_template) THEN
        RAISE EXCEPTION 'fill-metadata.sql: log_template is empty; is this an Airflow schema made by airflow db init/migrate?';
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------------
-- Working tables (temporary, dropped at COMMIT)

-- 20 DAGs; DAG d runs hourly at minute 3*d.
CREATE TEMP TABLE fill_dag ON COMMIT DROP AS
SELECT d - 1 AS d,
       name AS dag_id,
       d IN (6, 12, 18, 20) AS is_paused,
       (3 * (d - 1)) AS minute
FROM unnest(ARRAY[
    'etl_orders', 'etl_customers', 'etl_inventory', 'etl_payments', 'etl_shipments',
    'marketing_attribution', 'ml_feature_store', 'ml_churn_training', 'reporting_daily_kpis',
    'reporting_finance', 'crm_sync_salesforce', 'partner_feed_ingest', 'data_quality_checks',
    's3_archive_compaction', 'clickstream_sessionize', 'search_index_refresh',
    'gdpr_erasure_requests', 'dbt_core_models', 'warehouse_maintenance', 'alerts_sla_monitor'
]) WITH ORDINALITY AS t(name, d);

-- The 50 task instances of every run: 45 tasks, the last one mapped over 5 indexes.
CREATE TEMP TABLE fill_task ON COMMIT DROP AS
WITH e AS (
    SELECT ARRAY['orders', 'customers', 'products', 'inventory', 'payments', 'refunds',
                 'shipments', 'returns', 'invoices', 'suppliers', 'stores', 'employees',
                 'campaigns', 'sessions', 'events', 'reviews', 'carts', 'coupons',
                 'warehouses', 'currencies'] AS ent
)
SELECT s AS slot,
       CASE
           WHEN s = 0 THEN 'wait_for_source_files'
           WHEN s < 20 THEN 'extract_' || ent[s]
           WHEN s < 30 THEN 'transform_' || ent[s - 19]
           WHEN s < 35 THEN 'load_' || ent[s - 29]
           WHEN s = 35 THEN 'wait_for_partner_api'
           WHEN s = 36 THEN 'wait_for_partner_export'
           WHEN s < 40 THEN 'quality_check_' || ent[s - 36]
           WHEN s < 45 THEN 'notify_' || (ARRAY['slack', 'email', 'pagerduty', 'teams', 'webhook'])[s - 39]
           ELSE 'process_partition'
       END AS task_id,
       CASE WHEN s >= 45 THEN s - 45 ELSE -1 END AS map_index,
       CASE
           WHEN s = 0 THEN 'S3KeySensor'
           WHEN s < 20 OR s >= 45 THEN '_PythonDecoratedOperator'
           WHEN s < 30 THEN 'SQLExecuteQueryOperator'
           WHEN s < 35 THEN 'S3ToRedshiftOperator'
           WHEN s = 35 THEN 'DateTimeSensorAsync'
           WHEN s = 36 THEN 'ExternalTaskSensor'
           WHEN s < 40 THEN 'SQLCheckOperator'
           WHEN s = 41 THEN 'EmailOperator'
           ELSE 'SlackWebhookOperator'
       END AS operator,
       CASE WHEN s BETWEEN 1 AND 19 OR s >= 45 THEN '@task' END AS custom_operator_name,
       CASE
           WHEN s IN (0, 36) THEN 'sensor_pool'
           WHEN s < 20 THEN 'api_pool'
           WHEN s < 35 THEN 'etl_pool'
           ELSE 'default_pool'
       END AS pool,
       CASE
           WHEN s = 0 THEN 'table'
           WHEN s < 20 THEN ent[s]
           WHEN s < 30 THEN ent[s - 19]
           WHEN s < 35 THEN ent[s - 29]
           WHEN s < 40 AND s > 36 THEN ent[s - 36]
           ELSE 'partition'
       END AS entity,
       -- XCom keys pushed besides return_value: 50 XComs per finished run.
       CASE
           WHEN s BETWEEN 1 AND 19 THEN 'row_count'
           WHEN s = 30 THEN 'redshift_query_id'
           WHEN s >= 45 THEN 'partition_stats'
       END AS xcom_key2,
       50 - s AS priority_weight
FROM generate_series(0, 49) AS s, e;

-- One row per DAG run r = 0 .. fill_runs-1: DAG r % 20, its (r / 20)-th run.
CREATE TEMP TABLE fill_run ON COMMIT DROP AS
WITH base AS (
    SELECT r, r % 20 AS d, r / 20 AS k,
           r >= :fill_runs - 20 AND r % 20 IN (0, 1, 2) AS is_running,
           r >= :fill_runs - 20 AND r % 20 = 3 AS is_queued,
           r % 25 = 13 AS is_manual
    FROM generate_series(0, :fill_runs - 1) AS r
), t AS (
    SELECT b.*, g.dag_id,
           timestamptz '2026-01-01 00:00:00+00' + b.k * interval '1 hour' + g.minute * interval '1 minute'
               + CASE WHEN b.is_manual THEN (b.r * 7919 % 1000000) * interval '1 microsecond' ELSE interval '0' END
               AS logical,
           CASE
               WHEN b.is_running THEN 'running'
               WHEN b.is_queued THEN 'queued'
               WHEN b.r % 23 = 7 THEN 'failed'
               ELSE 'success'
           END AS state
    FROM base b JOIN fill_dag g USING (d)
)
SELECT t.*,
       CASE WHEN is_manual THEN 'manual' ELSE 'scheduled' END AS run_type,
       CASE WHEN is_manual
            THEN 'manual__' || to_char(logical, 'YYYY-MM-DD"T"HH24:MI:SS.US') || '+00:00'
            ELSE 'scheduled__' || to_char(logical, 'YYYY-MM-DD"T"HH24:MI:SS') || '+00:00'
       END AS run_id,
       logical + interval '1 hour' AS interval_end,
       logical + interval '1 hour 1.5 seconds' AS queued_at,
       CASE WHEN state <> 'queued' THEN logical + interval '1 hour 3 seconds' END AS start_date,
       CASE WHEN state IN ('success', 'failed')
            THEN logical + interval '1 hour 3 seconds' + (1200 + (r * 37) % 900) * interval '1 second'
       END AS end_date,
       CASE WHEN is_manual THEN NULL ELSE 1 + (r::bigint * :fill_sched / :fill_runs)::int END AS creating_job_id,
       CASE WHEN r % 97 = 3 AND state IN ('success', 'failed') THEN 1 ELSE 0 END AS clear_number
FROM t;
CREATE UNIQUE INDEX ON fill_run (r);
ANALYZE fill_run;

-- ---------------------------------------------------------------------------------------
-- Pools, variables, connections (fixed sizes)

INSERT INTO slot_pool (pool, slots, description
\if :has_pool_include_deferred
    , include_deferred
\endif
) VALUES
    ('etl_pool', 16, 'Warehouse transformations and loads'
\if :has_pool_include_deferred
    , false
\endif
    ),
    ('api_pool', 4, 'Calls to rate-limited source APIs'
\if :has_pool_include_deferred
    , false
\endif
    ),
    ('sensor_pool', 64, 'Sensors in reschedule or deferrable mode'
\if :has_pool_include_deferred
    , true
\endif
    );

INSERT INTO variable (key, val, description, is_encrypted) VALUES
    ('environment', 'production', 'Name of this environment', false),
    ('data_lake_bucket', 'acme-data-lake-prod', 'S3 bucket of the data lake', false),
    ('raw_prefix', 'raw/', NULL, false),
    ('curated_prefix', 'curated/', NULL, false),
    ('warehouse_schema', 'analytics', 'Target schema in Redshift', false),
    ('etl_batch_size', '50000', 'Rows per extract batch', false),
    ('retention_days', '400', 'Days of raw files kept', false),
    ('sla_minutes', '90', NULL, false),
    ('dbt_target', 'prod', NULL, false),
    ('ml_model_version', '2026.01.3', 'Churn model promoted to production', false),
    ('alert_emails', 'data-oncall@acme.example,platform@acme.example', NULL, false),
    ('partner_list', '["globex", "initech", "umbrella", "hooli"]', 'Partners with a daily feed', false),
    ('feature_flags', '{"use_new_dedup": true, "parallel_loads": 4, "skip_archive": false}', NULL, false),
    ('source_tables', '{"orders": "sales.orders", "customers": "crm.customers", "payments": "billing.payments"}', NULL, false),
    ('holiday_calendar', '["2026-01-01", "2026-04-06", "2026-05-01", "2026-12-25"]', NULL, false),
    ('search_index_alias', 'products-v42', NULL, false),
    ('gdpr_request_queue', 'https://sqs.eu-west-1.amazonaws.com/123456789012/gdpr-erasure', NULL, false),
    ('max_active_partitions', '5', NULL, false),
    ('compaction_target_mb', '512', NULL, false),
    ('clickstream_session_gap_minutes', '30', NULL, false),
    ('report_recipients', '{"finance": ["cfo@acme.example"], "kpis": ["exec@acme.example"]}', NULL, false),
    ('default_owner', 'data-platform', NULL, false),
    ('last_full_refresh', '2025-12-28', 'Set by etl_orders after a full refresh', false),
    ('welcome_message', 'Données chargées — prêt ✓', 'Non-ASCII text on purpose', false),
    ('snowflake_api_key', 'gAAAAABpVbkAWLZ2sNFN64oSKMz1ttvGaKfO6RrPzygOyB7rU68jh2c5NFx2ag3VBLrILzWPjShMJUSqtPLWAbXAj9OMgGwN_NO44f-Vw3R24Ix1v_IeOy9-nPTgfeVm4DLs6267bI_R', 'Snowflake API key', true),
    ('slack_webhook_token', 'gAAAAABpVbkAI_tjCGwilpWAvmF3sTQt4VBGUB0GXAbjjyJc3hrBvzYLvp7naHX6QwNDQG_txiki8J4BRwRDVTIatjuLu87kw0Po-LKBZlmzkntl8aCk7plMr49Mw_FJlnXE6PgRWh4_', NULL, true),
    ('partner_api_secret', 'gAAAAABpVbkAiIUPZnZuhwf6VDDRCsqZVOXmKp_wWh2GxDc-ehaXUw-R7As8VKg0Py5BlIpMachR3kuvc3MwlbcPKdiM5vbuZQLOabWmA95rHoSmIklhvUhSqmiQgekjF9aUn3nvs9W6', NULL, true),
    ('data_quality_config', 'gAAAAABpVbkAJs1BH7iLmAwu7rrHjxTuLkq74KzIvnFM9SQAT5C9RjZV3e0XJm9lv05U83jtyiA1Gl5GDpWSDmVOonmCKjxspuzWZMOW0UZN6sznOQp7MA4AvCVs2DGKS67uagmNE-97jv533BWCcIcySL9vRwimwvJB5d73ZIcHpDTRijtvH9c=', 'Thresholds of data_quality_checks', true),
    ('datadog_api_key', 'gAAAAABpVbkAQfP8nDG9tpYQYKhsSrgtMZKQIcjHXIVl0RgIYvPWUyuOiJHlj3n-4RjRA3k8szqV6QD44UWLQ6VsBs-b_42Qe0zw8sxQ0_RPuXE4AY0ehtaJPACj_yjWBTqt9JIr977J', NULL, true),
    ('sftp_private_key_passphrase', 'gAAAAABpVbkAci7QOqAeZ_h1eU2fUvQPNCCsQcJbi1eAwniPwv42g5JBDo0LuwajTH3fKnig9Rk4oIl1IA8V6LRHR7muKz4sOXftjQP-HJrZ82WO6LKomns=', NULL, true);

INSERT INTO connection (conn_id, conn_type, description, host, schema, login, password, port, is_encrypted, is_extra_encrypted, extra) VALUES
    ('warehouse_postgres', 'postgres', 'Operational warehouse (RDS)',
     'warehouse.cluster-c9x2k4m1p7qz.eu-west-1.rds.amazonaws.com', 'warehouse', 'etl_user',
     'gAAAAABpVbkAj7gq-yu95lw5wDlxXDx9OiM7qqHRQ4Dcqsp2gIs3Cc_3k-RVjyYMIVQ5FTd7cIACd_AsAkgv_3eM19-WEtTxYhwh10zy8hfeYYViE2cCikM=',
     5432, true, true,
     'gAAAAABpVbkAZQ_IFCToszop8n3N0ems11gD5z_SRrpGucbPd6rWO359RJvIt2bIEI5YZZ1owqGuMBGutNke8TIXQ7DJzdnbSIsonRjzjJti5v2cu8MRF3Jde-Ttr_ZhnuT0X3x3GgCB'),
    ('redshift_analytics', 'redshift', NULL,
     'analytics.c1a2b3c4d5e6.eu-west-1.redshift.amazonaws.com', 'analytics', 'loader',
     'gAAAAABpVbkAsV68MYpBLXmZGozb8kbZl45f76nVAQfYN03YVX9aRtjtjP6s2Zgf7LTFlMHLCTpIT-I_X8glhz2hSUbSCyaBlw==',
     5439, true, false, NULL),
    ('snowflake_prod', 'snowflake', 'Snowflake, raw layer', NULL, 'RAW', 'AIRFLOW_LOADER',
     'gAAAAABpVbkAp0GoBhUU-fZbo5DxLuw4VatTpxYajmz3wZo5RIzcYnGIfPyifESSeaQLkdxBpM3fdf5OJ9vPjt_PCqrOmv-XRA==',
     NULL, true, true,
     'gAAAAABpVbkAs_y-Eh3E29QzU525JfV6vKAxH6XhdbTiFYb6GdASzqoTIOFDbQ_GXaGadyuMwQ5UH6v1tcqBZ1BLV846VtjDr5ofnoPRcEioCfMHpa3IzEpo0TC05fG1lr_IKASljACmEJpOdbTeLtxI6U6sraTmsHhr8jKN06O3rKOQRxYi--sjlto7-43UTxxcyaEDfAKrcz2XGFpIxjq4PgFThw5xvQ=='),
    ('partner_sftp', 'sftp', 'Daily partner exports', 'sftp.partner.example', NULL, 'acme',
     'gAAAAABpVbkAgQI-CiPRyYaHbOquhrKCuFYZWAa_szNYeFCCgQJrmxfq6hZ2DWcCWte4XvO3I09NGxYi3bJKeDzvwusfadwB47n9vckcYsLbR33_dW6XHbY=',
     22, true, false, NULL),
    ('slack_alerts', 'slackwebhook', 'Channel #data-alerts', 'hooks.slack.com', NULL, NULL,
     'gAAAAABpVbkAVghZt0_QNn_t77QW1vWzkUp2Ar7ldKu76ihEJ-YE_-qtW-yGWJfkcSFwKkjf_feJc7VTa_BedVhZyePfNa13ZQvbpk1tS08OL4i375IBA7HbRZKc5ftM_mOvdNYl7mJu',
     NULL, true, false, NULL),
    ('partner_api', 'http', NULL, 'https://api.partner.example', 'v2', 'acme-client',
     'gAAAAABpVbkAG9klac9DUhVFjMbN0q2Zzx3IKrW70qttJMgskdjuupUWZDlpGSl1QAXXh4Dml779b-9zCi9fyOEmZ7ucXkTAzoaxZncdajSiu2iVYfha5LMbfJddEHZIdOcaBu2VhEPs',
     443, true, true,
     'gAAAAABpVbkAT2KhiJAWx5S7JLNSBCZ_9Pah6NACGTqMpNb2Gy5xsdfVrg8CwwlCrIUe1rGLcgTL3Ff2nSIeM3oYm8xdJusVDIWmrXt_P9WlhL-nMySVRF3-w7-fmw9rX1Bvs2K12mWrEYz6GM-ENnjjKIhFyb5nfA=='),
    ('aws_data_lake', 'aws', 'Role of the data lake', NULL, NULL, NULL, NULL, NULL, false, false,
     '{"region_name": "eu-west-1", "role_arn": "arn:aws:iam::123456789012:role/airflow-data-lake"}'),
    ('legacy_mysql', 'mysql', 'Created before the Fernet key was set', 'legacy-db.internal.acme.example',
     'shop', 'report_ro', 'Legacy-R3port-pw', 3306, false, false, '{"charset": "utf8mb4"}'),
    ('smtp_relay', 'smtp', NULL, 'email-smtp.eu-west-1.amazonaws.com', NULL, 'AKIAEXAMPLESMTPUSER',
     'smtp-relay-plaintext-pw', 587, false, false, '{"from_email": "airflow@acme.example", "disable_ssl": true}');

-- ---------------------------------------------------------------------------------------
-- DAGs, jobs, DAG runs

INSERT INTO dag (dag_id, root_dag_id, is_paused, is_subdag, is_active, last_parsed_time,
                 fileloc, processor_subdir, owners, description, default_view,
                 schedule_interval, timetable_description, max_active_tasks, max_active_runs,
                 has_task_concurrency_limits, has_import_errors, next_dagrun,
                 next_dagrun_data_interval_start, next_dagrun_data_interval_end,
                 next_dagrun_create_after
\if :has_dag_max_consecutive_failed
                 , max_consecutive_failed_dag_runs
\endif
)
SELECT g.dag_id, NULL, g.is_paused, false, true,
       (SELECT max(coalesce(end_date, start_date, queued_at)) FROM fill_run) + interval '42 seconds',
       '/usr/local/airflow/dags/' || g.dag_id || '.py', '/usr/local/airflow/dags', 'data-platform',
       'Hourly ' || replace(g.dag_id, '_', ' '), 'grid',
       CASE WHEN g.minute = 0 THEN '"@hourly"' ELSE format('"%s * * * *"', g.minute) END,
       CASE WHEN g.minute = 0 THEN 'At 00 minutes past the hour'
            ELSE format('At %s minutes past the hour', lpad(g.minute::text, 2, '0')) END,
       16, 1, false, false,
       nx.next_logical, nx.next_logical, nx.next_logical + interval '1 hour',
       nx.next_logical + interval '1 hour'
\if :has_dag_max_consecutive_failed
       , 0
\endif
FROM fill_dag g
CROSS JOIN LATERAL (
    SELECT coalesce(max(date_trunc('minute', r.logical)) + interval '1 hour',
                    timestamptz '2026-01-01 00:00:00+00' + g.minute * interval '1 minute') AS next_logical
    FROM fill_run r WHERE r.d = g.d
) nx;

-- Jobs: ids 1..S SchedulerJob, S+1..2S TriggererJob (S = jobs / 5000, at least 1), the rest
-- LocalTaskJob, in time order; the last scheduler, triggerer and the newest task jobs run.
INSERT INTO job (id, dag_id, state, job_type, start_date, end_date, latest_heartbeat,
                 executor_class, hostname, unixname)
SELECT j, dag_id, state, job_type, start_date,
       CASE WHEN state = 'running' THEN NULL ELSE end_date END,
       CASE WHEN state = 'running' THEN end_date ELSE end_date - interval '2 seconds' END,
       'CeleryExecutor', hostname, 'airflow'
FROM (
    SELECT j,
           CASE WHEN j <= 2 * :fill_sched THEN NULL ELSE (SELECT dag_id FROM fill_dag WHERE d = q.r % 20) END AS dag_id,
           CASE
               WHEN j <= 2 * :fill_sched THEN CASE WHEN (j - 1) % :fill_sched = :fill_sched - 1 THEN 'running' ELSE 'success' END
               WHEN q.r >= :fill_runs - 20 AND q.r % 20 IN (0, 1, 2) THEN 'running'
               ELSE 'success'
           END AS state,
           CASE WHEN j <= :fill_sched THEN 'SchedulerJob' WHEN j <= 2 * :fill_sched THEN 'TriggererJob' ELSE 'LocalTaskJob' END AS job_type,
           q.start_date, q.end_date,
           CASE
               WHEN j <= :fill_sched THEN format('ip-10-0-0-%s.ec2.internal', 10 + j % 200)
               WHEN j <= 2 * :fill_sched THEN format('ip-10-0-0-%s.ec2.internal', 110 + j % 100)
               ELSE format('ip-10-0-%s-%s.ec2.internal', 1 + q.r % 3, 10 + (q.r * 7 + j) % 240)
           END AS hostname
    FROM (
        SELECT j,
               -- The run this job belongs to (task jobs) or starts with (scheduler/triggerer).
               CASE WHEN j <= 2 * :fill_sched
                    THEN (((j - 1) % :fill_sched)::bigint * :fill_runs / :fill_sched)::int
                    ELSE (((j - 2 * :fill_sched - 1)::bigint * :fill_runs * 50
                           / (:fill_jobs - 2 * :fill_sched)) / 50)::int
               END AS r,
               CASE WHEN j <= 2 * :fill_sched
                    THEN timestamptz '2026-01-01 00:50:00+00'
                         + (((j - 1) % :fill_sched)::bigint * :fill_runs / :fill_sched / 20) * interval '1 hour'
                    ELSE timestamptz '2026-01-01 01:00:00+00'
                         + (((j - 2 * :fill_sched - 1)::bigint * :fill_runs * 50 / (:fill_jobs - 2 * :fill_sched)) / 1000) * interval '1 hour'
                         + ((j * 13) % 3000) * interval '1 second'
               END AS start_date,
               CASE WHEN j <= 2 * :fill_sched
                    THEN timestamptz '2026-01-01 00:50:00+00'
                         + (((((j - 1) % :fill_sched) + 1)::bigint * :fill_runs / :fill_sched / 20) + 1) * interval '1 hour'
                    ELSE timestamptz '2026-01-01 01:00:00+00'
                         + (((j - 2 * :fill_sched - 1)::bigint * :fill_runs * 50 / (:fill_jobs - 2 * :fill_sched)) / 1000) * interval '1 hour'
                         + ((j * 13) % 3000 + 5 + j % 240) * interval '1 second'
               END AS end_date
        FROM generate_series(1, :fill_jobs) AS j
    ) q
) jobs;

INSERT INTO dag_run (id, dag_id, queued_at, execution_date, start_date, end_date, state, run_id,
                     creating_job_id, external_trigger, run_type, conf, data_interval_start,
                     data_interval_end, last_scheduling_decision, dag_hash, log_template_id
\if :has_dr_updated_at
                     , updated_at
\endif
\if :has_dr_clear_number
                     , clear_number
\endif
)
SELECT r + 1, dag_id, queued_at, logical, start_date, end_date, state, run_id,
       creating_job_id, is_manual, run_type,
       CASE
           WHEN NOT is_manual THEN '\x80057d942e'::bytea
           WHEN r % 2 = 0 THEN '\x8005955f000000000000007d94288c0c66756c6c5f7265667265736894888c067461626c6573945d94288c066f7264657273948c09637573746f6d65727394658c06726561736f6e948c1c6261636b66696c6c20616674657220736368656d61206368616e676594752e'::bytea
           ELSE '\x8005951f000000000000007d948c0b7461726765745f64617465948c0a323032362d30312d313594732e'::bytea
       END,
       logical, interval_end,
       coalesce(end_date, start_date + interval '14 minutes', queued_at),
       md5(dag_id || ':v3'),
       (SELECT max(id) FROM log_template)
\if :has_dr_updated_at
       , coalesce(end_date, start_date + interval '14 minutes', queued_at)
\endif
\if :has_dr_clear_number
       , clear_number
\endif
FROM fill_run
ORDER BY r;

-- ---------------------------------------------------------------------------------------
-- Triggers (before task instances: task_instance.trigger_id has a foreign key)

\if :has_trigger_json_kwargs
INSERT INTO trigger (id, classpath, kwargs, created_date, triggerer_id) VALUES
    (1, 'airflow.triggers.temporal.DateTimeTrigger',
     '{"__var": {"moment": {"__var": 1767297600.0, "__type": "datetime"}, "end_from_trigger": false}, "__type": "dict"}',
     (SELECT max(start_date) FROM fill_run), 2 * :fill_sched),
    (2, 'airflow.providers.amazon.aws.triggers.s3.S3KeyTrigger',
     '{"__var": {"bucket_name": "acme-partner-drop", "bucket_key": ["exports/daily/orders.csv"], "wildcard_match": false, "aws_conn_id": "aws_data_lake", "poke_interval": 60.0, "should_check_fn": false, "use_regex": false}, "__type": "dict"}',
     (SELECT max(start_date) FROM fill_run), 2 * :fill_sched),
    (3, 'airflow.triggers.temporal.TimeDeltaTrigger',
     '{"__var": {"delta": {"__var": 900.0, "__type": "timedelta"}}, "__type": "dict"}',
     (SELECT max(start_date) FROM fill_run), 2 * :fill_sched);
\else
-- Airflow 2.9+ stores the serialized kwargs Fernet-encrypted.
INSERT INTO trigger (id, classpath, kwargs, created_date, triggerer_id) VALUES
    (1, 'airflow.triggers.temporal.DateTimeTrigger',
     'gAAAAABpVbkAQrRPK8JltBi9ZAVH1RZvIRLUkkiuwGAoYndzKoFSjEaV5plnSk_TWH7PiKXtSEaZPllH4cnyx6AMB_5GuabKTPy0lg3HyZns1ZtqHJ89r9mTuO6JokuURpEB9geo8Q7meZxBYibNOqGilzXjfC-QpuM48nwM0YlDmiA6kV8tTNqtD-MgZ9_gtzcgeDCKpmV-FLMMACx0SrWy_faImM9jVZKfLrXpXm2OjYVGKwMhef8=',
     (SELECT max(start_date) FROM fill_run), 2 * :fill_sched),
    (2, 'airflow.providers.amazon.aws.triggers.s3.S3KeyTrigger',
     'gAAAAABpVbkARX3X8wquhfxNN9Y6qxxqWph_HzhTETfN26dxy6FAm15ykK5LyffskTqVRdQkK_mvDvdgJjfj-5UPXayt9j3zCQUf9FdI4DqcdkOMraNT_-6TGVyyN_T23xcZJdbApGl66_FY2xPpVDBZYAVRXS-aOxtcEcEi6RKPgz3cHSxo9hdaRxNGKF48-KZ4ZQTjXVxKBLe0QvjVnt9LRnT794gRRWm4yJAAcJ6kmGnkwWWHB5LbUC1k8bKGUtLIdOgaliejlwTR_VerM_srmC8a53DjHkOXk9JOvsF7CGsUvr2E1_qyOKFc3zp6WeSQRRpUq3AeHcRgU1o_GXc9LRjNG5RjniL9edj2E7LM-q6QyglcJ0w5yVzN0-L8t4Nrwk8gqmv_',
     (SELECT max(start_date) FROM fill_run), 2 * :fill_sched),
    (3, 'airflow.triggers.temporal.TimeDeltaTrigger',
     'gAAAAABpVbkAEhDGF0e6dv5zWq1Bmq3EHGWWqQsLJDym7rR248uYtIVQ1H0Mlkx8e8noepaAd6tGcmUyBez4XeVzCIz8Q22YQSS4G28btpa6ZVADVZEEC9imhg8XbR0YEFZhxBwS9UdcmkxHdd7K35SVgKkWnhuxsfCy6XJdm6R849XbU1h-MeU=',
     (SELECT max(start_date) FROM fill_run), 2 * :fill_sched);
\endif

-- ---------------------------------------------------------------------------------------
-- Task instances: 50 per run

INSERT INTO task_instance (task_id, dag_id, run_id, map_index, start_date, end_date, duration,
                           state, try_number, max_tries, hostname, unixname, job_id, pool,
                           pool_slots, queue, priority_weight, operator, queued_dttm,
                           queued_by_job_id, pid, executor_config, external_executor_id,
                           trigger_id, trigger_timeout, next_method, next_kwargs
\if :has_ti_updated_at
                           , updated_at
\endif
\if :has_ti_custom_operator_name
                           , custom_operator_name
\endif
\if :has_ti_task_display_name
                           , task_display_name
\endif
)
SELECT task_id, dag_id, run_id, map_index,
       CASE WHEN ran THEN ti_start END,
       CASE WHEN finished THEN ti_start + secs * interval '1 second' END,
       CASE WHEN finished THEN secs END,
       state,
       CASE WHEN NOT ran THEN 0 WHEN retried OR state = 'failed' THEN 2 ELSE 1 END,
       CASE WHEN slot IN (0, 36) THEN 3 ELSE 1 END,
       CASE WHEN ran THEN format('ip-10-0-%s-%s.ec2.internal', 1 + (r + slot) % 3, 10 + (r * 7 + slot * 13) % 240) END,
       'airflow',
       CASE WHEN ran THEN 2 * :fill_sched + 1
                          + ((r::bigint * 50 + slot) * (:fill_jobs - 2 * :fill_sched) / (:fill_runs::bigint * 50))::int END,
       pool, 1, 'default', priority_weight, operator,
       CASE WHEN ran OR state = 'queued' THEN ti_start - interval '2 seconds' END,
       CASE WHEN ran OR state = 'queued' THEN creating_job END,
       CASE WHEN ran THEN 1000 + (r * 50 + slot) % 60000 END,
       CASE WHEN slot >= 45 THEN '\x8005955b000000000000007d948c124b756265726e657465734578656375746f72947d94288c0e726571756573745f6d656d6f7279948c03324769948c0b726571756573745f637075948c0131948c0c6c696d69745f6d656d6f7279948c033447699475732e'::bytea
            ELSE '\x80057d942e'::bytea END,
       CASE WHEN ran OR state = 'queued'
            THEN md5(run_id || task_id || map_index)::uuid::text END,
       CASE WHEN state = 'deferred' THEN 1 + r % 20 END,
       CASE WHEN state = 'deferred' THEN (ti_start + interval '1 hour') AT TIME ZONE 'UTC' END,
       CASE WHEN state = 'deferred' THEN 'execute_complete' END,
       NULL::json
\if :has_ti_updated_at
       , coalesce(CASE WHEN finished THEN ti_start + secs * interval '1 second' END,
                  CASE WHEN ran OR state = 'queued' THEN ti_start END, run_start, queued_at)
\endif
\if :has_ti_custom_operator_name
       , custom_operator_name
\endif
\if :has_ti_task_display_name
       , task_id
\endif
FROM (
    SELECT s.*,
           state IN ('success', 'failed', 'running', 'up_for_retry', 'deferred', 'up_for_reschedule', 'restarting') AS ran,
           state IN ('success', 'failed', 'up_for_retry', 'up_for_reschedule') AS finished,
           state = 'success' AND slot NOT IN (0, 35, 36) AND (r * 7 + slot) % 61 = 0 AS retried
    FROM (
        SELECT fr.r, fr.dag_id, fr.run_id, fr.queued_at, fr.start_date AS run_start,
               coalesce(fr.creating_job_id, 1 + (fr.r::bigint * :fill_sched / :fill_runs)::int) AS creating_job,
               ft.slot, ft.task_id, ft.map_index, ft.operator, ft.custom_operator_name, ft.pool,
               ft.priority_weight,
               fr.start_date + (ft.slot * 20 + (fr.r * 3 + ft.slot) % 7) * interval '1 second' AS ti_start,
               (3 + (fr.r * 37 + ft.slot * 11) % 240 + ((fr.r + ft.slot) % 1000) / 1000.0)::float8 AS secs,
               CASE
                   WHEN fr.state = 'queued' THEN NULL
                   WHEN fr.state = 'running' THEN
                       CASE
                           WHEN ft.slot < 30 THEN 'success'
                           WHEN ft.slot IN (30, 31) THEN 'running'
                           WHEN ft.slot = 32 THEN 'queued'
                           WHEN ft.slot = 33 THEN 'scheduled'
                           WHEN ft.slot = 34 THEN 'up_for_retry'
                           WHEN ft.slot = 35 THEN 'deferred'
                           WHEN ft.slot = 36 THEN 'up_for_reschedule'
                           WHEN ft.slot = 37 THEN 'restarting'
                       END
                   WHEN fr.state = 'failed' AND ft.slot = 20 THEN 'failed'
                   WHEN fr.state = 'failed' AND ft.slot BETWEEN 21 AND 29 THEN 'upstream_failed'
                   WHEN ft.slot BETWEEN 40 AND 44 AND fr.r % 2 = 0 THEN 'skipped'
                   ELSE 'success'
               END AS state
        FROM fill_run fr CROSS JOIN fill_task ft
    ) s
) t
ORDER BY r, slot;

-- ---------------------------------------------------------------------------------------
-- XComs: return_value plus one more key from extract, load_orders and the mapped tasks

INSERT INTO xcom (dag_run_id, task_id, map_index, key, dag_id, run_id, value, timestamp)
SELECT fr.r + 1, ti.task_id, ti.map_index, k.key, ti.dag_id, ti.run_id,
       convert_to(CASE
           WHEN k.key = 'return_value' AND ft.slot < 20 THEN
               format('{"s3_key": "raw/%s/%s/part-%s.parquet", "rows": %s, "bytes": %s}',
                      ft.entity, to_char(fr.logical, 'YYYY-MM-DD"T"HH24'), lpad(((fr.r + ft.slot) % 100000)::text, 5, '0'),
                      (fr.r * 131 + ft.slot * 17) % 500000, (fr.r * 7919 + ft.slot * 104729) % 90000000)
           WHEN k.key = 'row_count' THEN
               format('{"table": "%s", "row_count": %s, "checked_at": "%s", "source": "api"}',
                      ft.entity, (fr.r * 131 + ft.slot * 17) % 500000,
                      to_char(ti.end_date, 'YYYY-MM-DD"T"HH24:MI:SS') || '+00:00')
           WHEN k.key = 'return_value' AND ft.slot = 30 THEN
               format('{"copied_rows": %s, "target": "analytics.orders", "manifest": "s3://acme-data-lake-prod/m/%s"}',
                      (fr.r * 131) % 500000, fr.r)
           WHEN k.key = 'redshift_query_id' THEN
               format('{"query_id": "%s", "cluster": "analytics", "statement": "COPY analytics.orders"}',
                      md5(ti.run_id || ti.dag_id)::uuid::text)
           WHEN k.key = 'return_value' THEN
               format('{"partition": %s, "files": %s, "rows": %s, "status": "ok", "path": "curated/p=%s"}',
                      ti.map_index, 1 + (fr.r + ti.map_index) % 12, (fr.r * 53 + ti.map_index * 7) % 200000,
                      to_char(fr.logical, 'YYYYMMDDHH24'))
           ELSE
               format('{"partition": %s, "min_ts": "%s", "max_ts": "%s", "région": "eu-west-3", "dups": %s}',
                      ti.map_index, to_char(fr.logical, 'YYYY-MM-DD"T"HH24:MI'),
                      to_char(fr.logical + interval '59 minutes', 'YYYY-MM-DD"T"HH24:MI'), (fr.r + ti.map_index) % 9)
       END, 'UTF8'),
       coalesce(ti.end_date, ti.start_date)
FROM fill_run fr
JOIN task_instance ti ON ti.dag_id = fr.dag_id AND ti.run_id = fr.run_id
JOIN fill_task ft ON ft.task_id = ti.task_id AND ft.map_index = ti.map_index
CROSS JOIN LATERAL (VALUES ('return_value'), (ft.xcom_key2)) AS k(key)
WHERE ft.xcom_key2 IS NOT NULL AND ti.state IN ('success', 'running')
ORDER BY fr.r, ft.slot, k.key;

-- ---------------------------------------------------------------------------------------
-- Failures and retries: task_fail (every failed try), task_instance_history (2.10+: every
-- earlier try), task_reschedule (sensors in reschedule mode)

CREATE TEMP TABLE fill_try ON COMMIT DROP AS
SELECT ti.dag_id, ti.task_id, ti.run_id, ti.map_index, ti.state, ti.try_number, t.try,
       ti.start_date - (ti.try_number - t.try) * interval '5 minutes'
           - CASE WHEN t.try < ti.try_number THEN interval '40 seconds' ELSE interval '0' END AS try_start,
       CASE WHEN t.try < ti.try_number THEN 35 ELSE greatest(1, ti.duration::int) END AS try_secs
FROM task_instance ti
CROSS JOIN LATERAL generate_series(1, CASE WHEN ti.state = 'success' THEN ti.try_number - 1 ELSE ti.try_number END) AS t(try)
WHERE ti.state IN ('failed', 'up_for_retry') OR (ti.state = 'success' AND ti.try_number > 1);

INSERT INTO task_fail (id, task_id, dag_id, run_id, map_index, start_date, end_date, duration)
SELECT row_number() OVER (ORDER BY try_start, dag_id, task_id, map_index, try),
       task_id, dag_id, run_id, map_index, try_start,
       try_start + try_secs * interval '1 second', try_secs
FROM fill_try;

\if :has_task_instance_history
-- The earlier tries of retried and failed task instances, and the first try of the ones
-- waiting for their retry.
INSERT INTO task_instance_history (id, task_id, dag_id, run_id, map_index, try_number,
                                   start_date, end_date, duration, state, max_tries, hostname,
                                   unixname, job_id, pool, pool_slots, queue, priority_weight,
                                   operator, custom_operator_name, queued_dttm,
                                   queued_by_job_id, pid, executor, executor_config,
                                   updated_at, rendered_map_index, external_executor_id,
                                   trigger_id, trigger_timeout, next_method, next_kwargs,
                                   task_display_name)
SELECT row_number() OVER (ORDER BY f.try_start, f.dag_id, f.task_id, f.map_index, f.try),
       ti.task_id, ti.dag_id, ti.run_id, ti.map_index, f.try,
       f.try_start, f.try_start + f.try_secs * interval '1 second', f.try_secs, 'failed',
       ti.max_tries, ti.hostname, ti.unixname, ti.job_id, ti.pool, ti.pool_slots, ti.queue,
       ti.priority_weight, ti.operator, ti.custom_operator_name,
       f.try_start - interval '2 seconds', ti.queued_by_job_id, ti.pid, ti.executor,
       ti.executor_config, f.try_start + f.try_secs * interval '1 second', ti.rendered_map_index,
       ti.external_executor_id, NULL, NULL, NULL, NULL, ti.task_display_name
FROM fill_try f
JOIN task_instance ti USING (dag_id, task_id, run_id, map_index)
WHERE f.try < f.try_number OR f.state = 'up_for_retry';
\endif

-- Sensor wait_for_source_files rescheduled twice in every 5th finished run;
-- wait_for_partner_export once in every 7th finished run and in the running runs.
INSERT INTO task_reschedule (id, task_id, dag_id, run_id, map_index, try_number, start_date,
                             end_date, duration, reschedule_date)
SELECT row_number() OVER (ORDER BY x.poke_start, x.dag_id, x.task_id),
       x.task_id, x.dag_id, x.run_id, x.map_index, 1, x.poke_start,
       x.poke_start + interval '2 seconds', 2, x.poke_start + interval '2 seconds' + interval '60 seconds'
FROM (
    SELECT ti.task_id, ti.dag_id, ti.run_id, ti.map_index,
           ti.start_date - (3 - n.n) * interval '62 seconds' AS poke_start
    FROM fill_run fr
    JOIN task_instance ti ON ti.dag_id = fr.dag_id AND ti.run_id = fr.run_id
    CROSS JOIN LATERAL generate_series(1, CASE WHEN ti.task_id = 'wait_for_source_files' THEN 2 ELSE 1 END) AS n(n)
    WHERE (ti.task_id = 'wait_for_source_files' AND fr.r % 5 = 0 AND ti.state = 'success')
       OR (ti.task_id = 'wait_for_partner_export'
           AND ((fr.r % 7 = 0 AND ti.state = 'success') OR ti.state = 'up_for_reschedule'))
) x;

-- ---------------------------------------------------------------------------------------
-- Rendered template fields: Airflow keeps them for the last 30 runs of each task.

INSERT INTO rendered_task_instance_fields (dag_id, task_id, run_id, map_index, rendered_fields, k8s_pod_yaml)
SELECT ti.dag_id, ti.task_id, ti.run_id, ti.map_index,
       (CASE
           WHEN ft.operator = 'S3KeySensor' THEN
               format('{"bucket_key": "s3://acme-raw/%s/%s/_SUCCESS", "bucket_name": null, "wildcard_match": false}',
                      ti.dag_id, to_char(fr.logical, 'YYYY-MM-DD'))
           WHEN ft.operator = 'SQLExecuteQueryOperator' THEN
               format('{"sql": "INSERT INTO analytics.%s SELECT * FROM staging.%s WHERE ds = ''%s''", "parameters": null}',
                      ft.entity, ft.entity, to_char(fr.logical, 'YYYY-MM-DD'))
           WHEN ft.operator = 'S3ToRedshiftOperator' THEN
               format('{"s3_bucket": "acme-data-lake-prod", "s3_key": "curated/%s/ds=%s", "schema": "analytics", "table": "%s", "copy_options": ["FORMAT AS PARQUET"]}',
                      ft.entity, to_char(fr.logical, 'YYYY-MM-DD'), ft.entity)
           WHEN ft.operator = 'SQLCheckOperator' THEN
               format('{"sql": "SELECT COUNT(*) > 0 FROM analytics.%s WHERE ds = ''%s''"}',
                      ft.entity, to_char(fr.logical, 'YYYY-MM-DD'))
           ELSE
               format('{"templates_dict": null, "op_args": [], "op_kwargs": {"table": "%s", "ds": "%s", "run_id": "%s"}}',
                      ft.entity, to_char(fr.logical, 'YYYY-MM-DD'), ti.run_id)
       END)::json,
       NULL
FROM fill_run fr
JOIN task_instance ti ON ti.dag_id = fr.dag_id AND ti.run_id = fr.run_id
JOIN fill_task ft ON ft.task_id = ti.task_id AND ft.map_index = ti.map_index
WHERE fr.r >= :fill_runs - 600
  AND ti.state IN ('success', 'failed', 'running', 'up_for_retry', 'deferred', 'up_for_reschedule', 'restarting')
ORDER BY fr.r, ft.slot;

-- ---------------------------------------------------------------------------------------
-- Notes (2.5+): on half of the failed runs and their failed task, and on the task instances
-- waiting for a retry.

\if :has_dag_run_note
INSERT INTO dag_run_note (user_id, dag_run_id, content, created_at, updated_at)
SELECT NULL, r + 1,
       format('Failed on transform_payments: upstream API returned 503 (incident INC-%s); re-run after the provider fix.', 1000 + r),
       end_date + interval '1 hour', end_date + interval '1 hour 5 minutes'
FROM fill_run
WHERE state = 'failed' AND r % 46 = 7;
\endif

\if :has_task_instance_note
INSERT INTO task_instance_note (user_id, task_id, dag_id, run_id, map_index, content, created_at, updated_at)
SELECT NULL, ti.task_id, ti.dag_id, ti.run_id, ti.map_index,
       CASE WHEN ti.state = 'failed'
            THEN 'Provider outage, not a code problem. Cleared downstream once fixed.'
            ELSE 'Partner endpoint timing out; retrying automatically.' END,
       coalesce(ti.end_date, ti.start_date) + interval '10 minutes',
       coalesce(ti.end_date, ti.start_date) + interval '12 minutes'
FROM fill_run fr
JOIN task_instance ti ON ti.dag_id = fr.dag_id AND ti.run_id = fr.run_id
WHERE (fr.state = 'failed' AND fr.r % 46 = 7 AND ti.state = 'failed')
   OR ti.state = 'up_for_retry';
\endif

-- ---------------------------------------------------------------------------------------
-- Audit log: mostly task events, every 100th row an action in the web UI.

INSERT INTO log (id, dttm, dag_id, task_id, map_index, event, execution_date, owner, extra
\if :has_log_owner_display_name
                 , owner_display_name
\endif
\if :has_log_run_id
                 , run_id
\endif
\if :has_log_try_number
                 , try_number
\endif
)
SELECT i + 1,
       coalesce(fr.start_date, fr.queued_at) + (ft.slot * 20 + i % 17) * interval '1 second' + CASE WHEN ui THEN interval '25 minutes' ELSE interval '0' END,
       fr.dag_id,
       CASE WHEN ui THEN NULL ELSE ft.task_id END,
       CASE WHEN ui THEN NULL ELSE ft.map_index END,
       event,
       fr.logical,
       CASE WHEN ui THEN 'admin' ELSE 'data-platform' END,
       CASE
           WHEN event = 'cli_task_run' THEN
               format('{"host_name": "ip-10-0-%s-%s.ec2.internal", "full_command": "[''/usr/local/bin/airflow'', ''tasks'', ''run'', ''%s'', ''%s'', ''%s'', ''--local'', ''--subdir'', ''DAGS_FOLDER/%s.py'']"}',
                      1 + (fr.r + ft.slot) % 3, 10 + (fr.r * 7 + ft.slot * 13) % 240,
                      fr.dag_id, ft.task_id, fr.run_id, fr.dag_id)
           WHEN ui THEN format('{"dag_id": "%s", "run_id": "%s", "origin": "/dags/%s/grid"}', fr.dag_id, fr.run_id, fr.dag_id)
       END
\if :has_log_owner_display_name
       , CASE WHEN ui THEN 'Admin User' END
\endif
\if :has_log_run_id
       , fr.run_id
\endif
\if :has_log_try_number
       , CASE WHEN ui THEN NULL ELSE 1 END
\endif
FROM (
    SELECT i, i % 100 = 99 AS ui,
           CASE
               WHEN i % 100 = 99 THEN (ARRAY['grid', 'graph', 'trigger', 'clear', 'paused', 'log'])[1 + (i / 100) % 6]
               ELSE (ARRAY['cli_task_run', 'running', 'success', 'cli_task_run'])[1 + (i / 50 + i) % 4]
           END AS event
    FROM generate_series(0, :fill_logs - 1) AS i
) l
JOIN fill_run fr ON fr.r = (l.i / 50) % :fill_runs
JOIN fill_task ft ON ft.slot = l.i % 50
ORDER BY i;

-- ---------------------------------------------------------------------------------------
-- Sequences where Airflow leaves them: the next id follows the largest one.

DO $$
DECLARE
    t text;
    seq text;
    top bigint;
BEGIN
    FOREACH t IN ARRAY ARRAY['variable', 'connection', 'slot_pool', 'log', 'job', 'dag_run',
                             'trigger', 'task_fail', 'task_reschedule', 'task_instance_history']
    LOOP
        CONTINUE WHEN to_regclass(t) IS NULL;
        seq := pg_get_serial_sequence(t, 'id');
        CONTINUE WHEN seq IS NULL;
        EXECUTE format('SELECT max(id) FROM %I', t) INTO top;
        IF top IS NOT NULL THEN
            PERFORM setval(seq, top, true);
        END IF;
    END LOOP;
END
$$;

COMMIT;

ANALYZE;

SELECT t AS "table", n AS "rows"
FROM (VALUES (1, 'dag', (SELECT count(*) FROM dag)),
             (2, 'dag_run', (SELECT count(*) FROM dag_run)),
             (3, 'task_instance', (SELECT count(*) FROM task_instance)),
             (4, 'xcom', (SELECT count(*) FROM xcom)),
             (5, 'log', (SELECT count(*) FROM log)),
             (6, 'job', (SELECT count(*) FROM job)),
             (7, 'task_fail', (SELECT count(*) FROM task_fail)),
             (8, 'task_reschedule', (SELECT count(*) FROM task_reschedule)),
             (9, 'rendered_task_instance_fields', (SELECT count(*) FROM rendered_task_instance_fields)),
             (10, 'trigger', (SELECT count(*) FROM trigger)),
             (11, 'variable', (SELECT count(*) FROM variable)),
             (12, 'connection', (SELECT count(*) FROM connection)),
             (13, 'slot_pool', (SELECT count(*) FROM slot_pool))) AS c(i, t, n)
ORDER BY i;
