//! `mwaa-dr deploy`: what runs the recovery unattended. `--print-definition` prints the Step
//! Functions state machine generated from the failover plan.

use crate::cli::DeployArgs;
use crate::config::Config;
use crate::deploy::state_machine::{self, ScheduleKind, WorkflowSettings};
use crate::error::{Error, Result};
use crate::model::StoreLocation;

pub fn run(config: &Config, args: &DeployArgs) -> Result<()> {
    if args.print_definition {
        let definition = definition(config, "deploy")?;
        let text = serde_json::to_string_pretty(&definition)
            .map_err(|e| Error::failed("print", "the state machine definition", e))?;
        println!("{text}");
    }
    Ok(())
}

/// The state machine definition for the configuration, checked for consistency.
pub fn definition(config: &Config, command: &str) -> Result<serde_json::Value> {
    let targets = super::failover_plan::targets(config, command, false)?;
    let settings = workflow_settings(config, command)?;
    let definition = state_machine::definition(&targets, &settings);
    state_machine::check_structure(&definition)
        .map_err(|problem| Error::failed("generate", "the state machine definition", problem))?;
    Ok(definition)
}

/// The state machine's settings beyond the plan: the store must be S3 (the state machine
/// reads and writes it through S3's API).
pub fn workflow_settings(config: &Config, command: &str) -> Result<WorkflowSettings> {
    let (bucket, prefix) = match config.store(command)? {
        StoreLocation::S3 { bucket, prefix } => (bucket.clone(), prefix.clone()),
        other => {
            return Err(Error::InvalidValue {
                variable: "DR_BACKUP_STORE".into(),
                value: other.to_string(),
                problem: "the Step Functions state machine reaches the store through S3 only"
                    .into(),
                accepted: "s3://bucket/prefix".into(),
            });
        }
    };
    let mut restore_conf = super::remote::restore_conf(config, None, true);
    restore_conf.remove("clean");
    Ok(WorkflowSettings {
        bucket,
        prefix,
        schedule_kind: ScheduleKind::Scheduler { group: None },
        restore_dag: config.deployment.import_dag_name.clone(),
        restore_conf,
    })
}
