//! The failover's plan input from the configuration, shared by `failover` (which runs the
//! plan) and `deploy` (which generates the Step Functions state machine from it).

use crate::config::Config;
use crate::error::{Error, Result};
use crate::failover::{NewEnvironment, Targets};
use crate::model::DrType;

/// The failover's options from the configuration, for `command`: what each DR type needs is
/// required here, before anything is touched.
pub fn targets(config: &Config, command: &str, force: bool) -> Result<Targets> {
    let dr_type = config.dr_type.ok_or_else(|| Error::MissingValue {
        variable: "DR_TYPE".into(),
        command: command.into(),
        purpose: "the recovery strategy, BACKUP_RESTORE or WARM_STANDBY".into(),
    })?;
    let secondary = config
        .require(
            &config.secondary.environment_name,
            "SECONDARY_MWAA_ENVIRONMENT_NAME",
            command,
            "the environment that takes over",
        )?
        .to_string();
    let primary = config
        .require(
            &config.primary.environment_name,
            "PRIMARY_MWAA_ENVIRONMENT_NAME",
            command,
            "the environment that failed",
        )?
        .to_string();
    if dr_type == DrType::BackupRestore {
        require_new_environment(config, command)?;
    }
    Ok(Targets {
        dr_type,
        primary,
        secondary,
        secondary_region: config.secondary.region.clone(),
        schedule: config.health_check.schedule_name.clone(),
        sns_topic: config.failover.sns_topic_arn.clone(),
        force,
        health: config.health_check.clone(),
        new_environment: NewEnvironment {
            role_arn: config.secondary.role_arn.clone(),
            dags_bucket: config.secondary.dags_bucket.clone(),
            subnet_ids: config.secondary.subnet_ids.clone(),
            security_group_ids: config.secondary.security_group_ids.clone(),
        },
        create_env_polling_interval: config.failover.create_env_polling_interval,
        timeout: config.failover.timeout,
        restore_dag: (!config.has_target_db()).then(|| config.deployment.import_dag_name.clone()),
        original_file: config.failover.backup_file_name.clone(),
    })
}

/// Backup-Restore creates the secondary: its role, DAGs bucket and network must be set.
fn require_new_environment(config: &Config, command: &str) -> Result<()> {
    config.require(
        &config.secondary.role_arn,
        "SECONDARY_MWAA_ROLE_ARN",
        command,
        "the execution role of the new environment",
    )?;
    config.require(
        &config.secondary.dags_bucket,
        "SECONDARY_DAGS_BUCKET_NAME",
        command,
        "the DAGs bucket of the new environment",
    )?;
    for (variable, list) in [
        ("SECONDARY_SUBNET_IDS", &config.secondary.subnet_ids),
        (
            "SECONDARY_SECURITY_GROUP_IDS",
            &config.secondary.security_group_ids,
        ),
    ] {
        if list.is_empty() {
            return Err(Error::MissingValue {
                variable: variable.into(),
                command: command.into(),
                purpose: "the network of the new environment".into(),
            });
        }
    }
    Ok(())
}
