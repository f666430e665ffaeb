//! Integration tests, one binary: the `mwaa-dr` command as a user runs it, against the real
//! PostgreSQL and moto servers that `scripts/testbench.sh` starts.

mod airflow_cli;
mod airflow_e2e;
mod aws;
mod backup;
mod bench;
mod cli;
mod common;
mod config;
mod dags;
mod deploy;
mod failover;
mod faults;
mod integrity;
mod kms;
mod legacy;
mod matrix;
mod mwaa_build;
mod mwaa_e2e;
mod pg;
mod rekey;
mod remote;
mod store;
mod task_token;
mod upgrade;
