//! `mwaa-dr deploy` and `mwaa-dr undeploy`: the CloudFormation stacks of both Regions and the
//! DR DAGs in each DAGs bucket.

use serde::Serialize;
use serde_json::Value;

use crate::aws::buckets::{S3Buckets, VersionedBuckets};
use crate::aws::cloudformation::{ResourceChange, SdkStacks};
use crate::aws::schedule::AwsSchedules;
use crate::cli::{DeployArgs, RegionChoice, UndeployArgs};
use crate::commands::dag_files::{Binary, render_files};
use crate::config::Config;
use crate::deploy::RenderedFile;
use crate::deploy::apply::{self, Outcome, Waiting};
use crate::deploy::cloudformation::{Definitions, RegionSide, Side, StackSettings, template};
use crate::deploy::startup;
use crate::deploy::state_machine::{self, ScheduleKind, WorkflowSettings};
use crate::error::{Error, Result};
use crate::model::DrType;
use crate::output;
use crate::store::BackupStore;
use crate::store::s3::S3Store;

/// The folder of the DAGs folder the DR DAGs go into (as the original's `mwaa_dr`).
const DAGS_SUBFOLDER: &str = "mwaa_dr";
/// Where the startup script goes in each DAGs bucket.
const STARTUP_FOLDER: &str = "mwaa-dr";

/// The failover workflow's Amazon States Language definition: the state machine generated
/// from the failover plan (`deploy::state_machine`), acting on what the stacks create: the
/// schedule `settings` names (across Regions, the rule of that name the heartbeat alarm
/// fires), and the secondary's notification topic unless DR_SNS_TOPIC_ARN names another.
pub fn workflow_definition(
    config: &Config,
    settings: &StackSettings,
    command: &str,
) -> Result<Value> {
    let (targets, workflow) = workflow_inputs(config, settings, command)?;
    checked(
        state_machine::definition(&targets, &workflow),
        "the state machine definition",
    )
}

/// Both machines' definitions: the failover workflow, and the heartbeat machine of the
/// primary's Region (which saves Backup-Restore definitions in the primary's backup bucket,
/// replicated to the secondary's, where the workflow and the CLI read them).
fn definitions(config: &Config, settings: &StackSettings, command: &str) -> Result<Definitions> {
    let (targets, workflow) = workflow_inputs(config, settings, command)?;
    let failover = checked(
        state_machine::definition(&targets, &workflow),
        "the state machine definition",
    )?;
    let primary_store = WorkflowSettings {
        bucket: settings.names().backup_bucket(&settings.primary.region),
        ..workflow
    };
    let heartbeat = checked(
        state_machine::heartbeat_definition(&targets, &primary_store),
        "the heartbeat machine definition",
    )?;
    Ok(Definitions {
        failover,
        heartbeat,
    })
}

/// `definition` once its graph passed [`state_machine::check_structure`].
fn checked(definition: Value, what: &str) -> Result<Value> {
    state_machine::check_structure(&definition)
        .map_err(|problem| Error::failed("generate", what, problem))?;
    Ok(definition)
}

/// The failover plan and the workflow settings the machines are generated from.
fn workflow_inputs(
    config: &Config,
    settings: &StackSettings,
    command: &str,
) -> Result<(crate::failover::Targets, WorkflowSettings)> {
    let mut targets = super::failover_plan::targets(config, command, false)?;
    targets.schedule = Some(settings.schedule_name());
    if targets.sns_topic.is_none() {
        targets.sns_topic = Some(format!(
            "arn:aws:sns:{}:{}:{}",
            settings.secondary.region,
            settings.account_id,
            settings.names().topic(Side::Secondary)
        ));
    }
    // The secondary's own backup bucket, where its DAGs keep the backups (as deploy renders
    // them) and the workflow's role may read and write.
    let workflow = WorkflowSettings {
        bucket: settings.names().backup_bucket(&settings.secondary.region),
        prefix: text_value(config, "DR_BACKUP_PREFIX").unwrap_or_default(),
        schedule_kind: if settings.cross_region() {
            ScheduleKind::Rule
        } else {
            ScheduleKind::Scheduler { group: None }
        },
        restore_dag: config.deployment.import_dag_name.clone(),
        restore_conf: restore_conf(config),
        primary_elsewhere: settings.cross_region(),
    };
    Ok((targets, workflow))
}

/// The restore DAG run's conf besides `clean` and the token: the strategies.
fn restore_conf(config: &Config) -> serde_json::Map<String, Value> {
    let mut conf = super::remote::restore_conf(config, None, true);
    conf.remove("clean");
    conf
}

/// `deploy --print-definition`: the definition on stdout, nothing changed.
fn print_definition(config: &Config, settings: &StackSettings) -> Result<()> {
    let definition = workflow_definition(config, settings, "deploy")?;
    let text = serde_json::to_string_pretty(&definition)
        .map_err(|e| Error::failed("print", "the state machine definition", e))?;
    println!("{text}");
    Ok(())
}

/// The deployment settings from the configuration; every variable a template needs is
/// checked before anything is called. `undeploy` needs only what names the stacks and
/// buckets (`templates` false): the prefix, the account and the Regions.
fn stack_settings(config: &Config, command: &str, templates: bool) -> Result<StackSettings> {
    let need = |value: &Option<String>, variable: &str, purpose: &str| {
        config
            .require(value, variable, command, purpose)
            .map(str::to_string)
    };
    let deployment = &config.deployment;
    let side = |side: &crate::config::Side, prefix: &str| -> Result<RegionSide> {
        Ok(RegionSide {
            region: need(
                &side.region,
                &format!("{prefix}_REGION"),
                "the Region of that stack",
            )?,
            environment_name: if templates {
                need(
                    &side.environment_name,
                    &format!("{prefix}_MWAA_ENVIRONMENT_NAME"),
                    "the workflow checks and restores the environments",
                )?
            } else {
                side.environment_name.clone().unwrap_or_default()
            },
            execution_role_arn: side.role_arn.clone(),
            vpc_id: side.vpc_id.clone(),
            subnet_ids: side.subnet_ids.clone(),
            security_group_ids: side.security_group_ids.clone(),
        })
    };
    let dr_type = match config.dr_type {
        Some(dr_type) => dr_type,
        None if !templates => DrType::WarmStandby,
        None => {
            return Err(Error::MissingValue {
                variable: "DR_TYPE".into(),
                command: command.into(),
                purpose: "the workflow differs between BACKUP_RESTORE and WARM_STANDBY".into(),
            });
        }
    };
    let settings = StackSettings {
        prefix: need(
            &deployment.stack_name_prefix,
            "STACK_NAME_PREFIX",
            "the stacks and everything in them are named from it",
        )?,
        account_id: need(
            &deployment.aws_account_id,
            "AWS_ACCOUNT_ID",
            "ARNs and bucket names hold it",
        )?,
        creates_environment: dr_type == DrType::BackupRestore,
        primary: side(&config.primary, "PRIMARY")?,
        secondary: side(&config.secondary, "SECONDARY")?,
        health_check_enabled: config.health_check.enabled,
        health_check_interval_mins: (config.health_check.interval.as_secs() / 60).max(1),
        simulate_dr: config.health_check.simulate_dr,
        schedule_name: config.health_check.schedule_name.clone(),
        notification_emails: config.failover.notification_emails.clone(),
        update_execution_role: deployment.update_execution_role,
        // Only a template needs the network and the roles checked.
        create_sfn_vpce: templates && deployment.create_sfn_vpce,
        health_check_looks: config.health_check.max_retry.saturating_add(1),
    };
    let settings = if templates {
        settings
    } else {
        StackSettings {
            creates_environment: false,
            update_execution_role: false,
            ..settings
        }
    };
    settings.check()?;
    Ok(settings)
}

/// The sides a command acts on, in the order deploy creates them: the secondary first (the
/// primary's bucket replicates into the secondary's).
fn sides(choice: Option<RegionChoice>) -> Vec<Side> {
    match choice {
        Some(RegionChoice::Primary) => vec![Side::Primary],
        Some(RegionChoice::Secondary) => vec![Side::Secondary],
        None => vec![Side::Secondary, Side::Primary],
    }
}

fn region_of(settings: &StackSettings, side: Side) -> &str {
    match side {
        Side::Primary => &settings.primary.region,
        Side::Secondary => &settings.secondary.region,
    }
}

fn dags_bucket(config: &Config, side: Side) -> Option<&str> {
    match side {
        Side::Primary => config.primary.dags_bucket.as_deref(),
        Side::Secondary => config.secondary.dags_bucket.as_deref(),
    }
}

/// A text variable's resolved value (its default included).
fn text_value(config: &Config, name: &str) -> Option<String> {
    config
        .entries()
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_str().map(str::to_string))
}

/// The object keys of the DR files in a DAGs bucket.
fn file_key(config: &Config, file: &str) -> String {
    if file == startup::FILE_NAME {
        return format!("{STARTUP_FOLDER}/{file}");
    }
    let folder = config.deployment.dags_s3_path.trim_matches('/');
    if folder.is_empty() {
        format!("{DAGS_SUBFOLDER}/{file}")
    } else {
        format!("{folder}/{DAGS_SUBFOLDER}/{file}")
    }
}

#[derive(Debug, Serialize)]
struct StackReport {
    side: Side,
    region: String,
    stack: String,
    outcome: Outcome,
    changes: Vec<ResourceChange>,
}

#[derive(Debug, Serialize)]
struct FileReport {
    side: Side,
    bucket: String,
    key: String,
    /// uploaded, unchanged, would_upload, deleted, would_delete
    outcome: &'static str,
}

impl FileReport {
    /// The file's line in the text report: its S3 URI and what happened to it.
    fn line(&self) -> String {
        format!(
            "s3://{}/{}: {}",
            self.bucket,
            self.key,
            self.outcome.replace('_', " ")
        )
    }
}

#[derive(Debug, Serialize)]
struct DeployReport {
    dry_run: bool,
    stacks: Vec<StackReport>,
    files: Vec<FileReport>,
    backup_buckets: Vec<String>,
}

#[derive(Debug, Serialize)]
struct TemplatesReport {
    templates: Vec<String>,
}

pub async fn deploy(config: &Config, args: &DeployArgs) -> Result<()> {
    let command = "deploy";
    let settings = stack_settings(config, command, true)?;
    if args.print_definition {
        return print_definition(config, &settings);
    }
    let definition = definitions(config, &settings, command)?;
    let sides = sides(args.region_only);
    if let Some(dir) = &args.template_out {
        return write_templates(config, &settings, &definition, &sides, dir);
    }
    // Everything is rendered and checked before the first call.
    let binary = binary_of(args)?;
    let uploads = render_uploads(config, &settings, &binary, &sides, command)?;
    let mut report = DeployReport {
        dry_run: config.dry_run,
        stacks: Vec::new(),
        files: Vec::new(),
        backup_buckets: Vec::new(),
    };
    apply_stacks(config, &settings, &definition, &sides, &mut report).await?;
    upload_files(config, &settings, &uploads, &mut report).await?;
    output::emit(config.output, &report, || deploy_text(&report));
    Ok(())
}

/// The DR files rendered for one side's DAGs bucket.
struct Upload {
    side: Side,
    bucket: String,
    files: Vec<RenderedFile>,
}

/// The binary the startup script installs, as the arguments name it; `--binary-uri` is
/// required.
fn binary_of(args: &DeployArgs) -> Result<Binary<'_>> {
    let binary_uri = args.binary_uri.as_deref().ok_or_else(|| Error::Usage {
        message: "pass --binary-uri s3://BUCKET/KEY (the binary the startup script installs) with --binary-sha256 or --binary-file, or --template-out DIR to only write the templates".into(),
    })?;
    Ok(Binary {
        uri: binary_uri,
        version: args.binary_version.as_deref(),
        sha256: args.binary_sha256.as_deref(),
        file: args.binary_file.as_deref(),
        install_path: &args.install_path,
    })
}

/// The DR DAGs and the startup script for each side's DAGs bucket, reading and writing
/// backups in that side's backup bucket; each side's DAGs bucket is required.
fn render_uploads(
    config: &Config,
    settings: &StackSettings,
    binary: &Binary<'_>,
    sides: &[Side],
    command: &str,
) -> Result<Vec<Upload>> {
    let names = settings.names();
    let store_prefix = text_value(config, "DR_BACKUP_PREFIX").unwrap_or_default();
    let mut uploads = Vec::new();
    for &side in sides {
        let variable = format!("{}_DAGS_BUCKET_NAME", side.as_str().to_uppercase());
        let configured = dags_bucket(config, side).map(str::to_string);
        let bucket = config.require(
            &configured,
            &variable,
            command,
            "the DR DAGs and the startup script are uploaded there",
        )?;
        let backup_bucket = names.backup_bucket(region_of(settings, side));
        let store = crate::store::StoreLocation::s3(&backup_bucket, &store_prefix);
        let (files, _) = render_files(config, &store.to_string(), binary)?;
        uploads.push(Upload {
            side,
            bucket: bucket.to_string(),
            files,
        });
    }
    Ok(uploads)
}

/// Applies each side's template to its stack through one change set named for this run.
async fn apply_stacks(
    config: &Config,
    settings: &StackSettings,
    definition: &Definitions,
    sides: &[Side],
    report: &mut DeployReport,
) -> Result<()> {
    let names = settings.names();
    let waiting = Waiting::default();
    let change_set = format!("mwaa-dr-{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    for &side in sides {
        let region = region_of(settings, side);
        let stacks = SdkStacks::new(region, &config.aws_timeouts).await;
        let body = template(settings, side, definition).to_string();
        let stack = names.stack(side);
        tracing::info!(stack = %stack, region, "applying the template through a change set");
        let applied =
            apply::apply(&stacks, &stack, &change_set, &body, config.dry_run, waiting).await?;
        report.stacks.push(StackReport {
            side,
            region: region.to_string(),
            stack,
            outcome: applied.outcome,
            changes: applied.changes,
        });
        report.backup_buckets.push(names.backup_bucket(region));
    }
    Ok(())
}

/// Uploads the rendered DR files into each side's DAGs bucket.
async fn upload_files(
    config: &Config,
    settings: &StackSettings,
    uploads: &[Upload],
    report: &mut DeployReport,
) -> Result<()> {
    for Upload {
        side,
        bucket,
        files,
    } in uploads
    {
        let region = region_of(settings, *side);
        let store = S3Store::in_region(bucket, "", region, &config.aws_timeouts).await;
        for file in files {
            let key = file_key(config, &file.name);
            let outcome = upload(&store, &key, file, config.dry_run).await?;
            report.files.push(FileReport {
                side: *side,
                bucket: bucket.clone(),
                key,
                outcome,
            });
        }
    }
    Ok(())
}

/// Uploads `file` at `key` unless the object there has the same content.
async fn upload(
    store: &S3Store,
    key: &str,
    file: &RenderedFile,
    dry_run: bool,
) -> Result<&'static str> {
    if store.exists(key).await? && store.get_bytes(key).await? == file.contents.as_bytes() {
        return Ok("unchanged");
    }
    if dry_run {
        return Ok("would_upload");
    }
    store.put_bytes(key, file.contents.as_bytes()).await?;
    Ok("uploaded")
}

fn deploy_text(report: &DeployReport) -> String {
    let mut lines = Vec::new();
    for s in &report.stacks {
        let what = match s.outcome {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "no changes",
            Outcome::WouldCreate => "would be created",
            Outcome::WouldUpdate => "would be updated",
        };
        lines.push(format!("stack {} ({}): {what}", s.stack, s.region));
        for c in &s.changes {
            let replacement = match c.replacement.as_deref() {
                Some("True") => " (replaced)",
                Some("Conditional") => " (may be replaced)",
                _ => "",
            };
            lines.push(format!(
                "  {:<7} {} {}{replacement}",
                c.action, c.logical_id, c.resource_type
            ));
        }
    }
    lines.extend(report.files.iter().map(FileReport::line));
    if report.dry_run {
        lines.push("dry run: nothing was changed".into());
    } else {
        lines.push(format!(
            "backup buckets: {} (the DR DAGs read and write backups there)",
            report.backup_buckets.join(", ")
        ));
    }
    lines.join("\n")
}

fn write_templates(
    config: &Config,
    settings: &StackSettings,
    definition: &Definitions,
    sides: &[Side],
    dir: &std::path::Path,
) -> Result<()> {
    if !config.dry_run {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::failed("create", dir.display().to_string(), e))?;
    }
    let mut written = Vec::new();
    for &side in sides {
        let path = dir.join(format!("{}.template.json", settings.names().stack(side)));
        let body = serde_json::to_string_pretty(&template(settings, side, definition))
            .map_err(|e| Error::failed("render", path.display().to_string(), e))?;
        if !config.dry_run {
            std::fs::write(&path, body + "\n")
                .map_err(|e| Error::failed("write", path.display().to_string(), e))?;
        }
        written.push(path.display().to_string());
    }
    let doc = TemplatesReport { templates: written };
    let verb = if config.dry_run {
        "would write"
    } else {
        "wrote"
    };
    output::emit(config.output, &doc, || {
        format!("{verb} {}; nothing was deployed", doc.templates.join(", "))
    });
    Ok(())
}

#[derive(Debug, Serialize)]
struct UndeployReport {
    dry_run: bool,
    stacks: Vec<UndeployedStack>,
    files: Vec<FileReport>,
}

#[derive(Debug, Serialize)]
struct UndeployedStack {
    side: Side,
    region: String,
    stack: String,
    /// deleted, absent, would_delete
    outcome: &'static str,
    backup_bucket: String,
    /// Object versions and delete markers deleted (or, in a dry run, that would be).
    backup_objects: u64,
}

pub async fn undeploy(config: &Config, args: &UndeployArgs) -> Result<()> {
    let command = "undeploy";
    let settings = stack_settings(config, command, false)?;
    // The primary first: its bucket replicates into the secondary's.
    let mut sides = sides(args.region_only);
    sides.reverse();
    // Look at every backup bucket before changing anything.
    let held = held_backups(config, &settings, &sides).await?;
    confirm_undeploy(config, args, &settings, &sides, &held)?;
    let mut report = UndeployReport {
        dry_run: config.dry_run,
        stacks: Vec::new(),
        files: Vec::new(),
    };
    if !config.dry_run && settings.cross_region() && sides.contains(&Side::Primary) {
        disarm_failover_trigger(config, &settings).await?;
    }
    for &side in &sides {
        let region = region_of(&settings, side);
        if let Some(bucket) = dags_bucket(config, side) {
            remove_dr_files(config, side, region, bucket, &mut report.files).await?;
        }
        let stack = delete_stack(config, &settings, side, &held).await?;
        report.stacks.push(stack);
    }
    output::emit(config.output, &report, || undeploy_text(&report));
    Ok(())
}

/// Across Regions, deleting the primary's stack stops the heartbeat, which the secondary's
/// alarm would take for an outage: the rule it fires (the schedule's name) is disabled first,
/// if it exists. `failover` leaves it disabled the same way; see docs/FAILOVER.md, "Regions".
async fn disarm_failover_trigger(config: &Config, settings: &StackSettings) -> Result<()> {
    let region = &settings.secondary.region;
    let rule = settings.schedule_name();
    let schedules = AwsSchedules::new(Some(region), &config.aws_timeouts).await;
    if let Some(disabled) = schedules.disable_rule(&rule).await? {
        tracing::info!(rule = %rule, region = %region, ?disabled, "disabled the rule the heartbeat alarm fires before the heartbeat goes");
    }
    Ok(())
}

/// A side's backup bucket and how many object versions (and delete markers) it holds.
type HeldBackups = (Side, String, u64);

/// What each side's backup bucket holds.
async fn held_backups(
    config: &Config,
    settings: &StackSettings,
    sides: &[Side],
) -> Result<Vec<HeldBackups>> {
    let names = settings.names();
    let mut held = Vec::new();
    for &side in sides {
        let region = region_of(settings, side);
        let bucket = names.backup_bucket(region);
        let buckets = S3Buckets::new(region, &config.aws_timeouts).await;
        let count = buckets.count_versions(&bucket).await?.unwrap_or(0);
        held.push((side, bucket, count));
    }
    Ok(held)
}

/// Refuses to delete backups unless `--delete-backups` says so, then asks before deleting
/// the stacks (not in a dry run).
fn confirm_undeploy(
    config: &Config,
    args: &UndeployArgs,
    settings: &StackSettings,
    sides: &[Side],
    held: &[HeldBackups],
) -> Result<()> {
    if !args.delete_backups
        && let Some((_, bucket, count)) = held.iter().find(|(_, _, count)| *count > 0)
    {
        return Err(Error::refused(
            "undeploy",
            format!("s3://{bucket}"),
            format!("the backup bucket holds {count} object versions (backups)"),
            "copy what you want to keep, then run `mwaa-dr undeploy --delete-backups`; nothing was changed",
        ));
    }
    if !config.dry_run {
        let names = settings.names();
        let stacks: Vec<String> = sides.iter().map(|&s| names.stack(s)).collect();
        crate::commands::confirm(
            config,
            &format!(
                "delete the stacks {}{}",
                stacks.join(" and "),
                if args.delete_backups {
                    " and every backup in their buckets"
                } else {
                    ""
                }
            ),
        )?;
    }
    Ok(())
}

/// Deletes the DR DAGs and the startup script that are in one side's DAGs `bucket`.
async fn remove_dr_files(
    config: &Config,
    side: Side,
    region: &str,
    bucket: &str,
    files: &mut Vec<FileReport>,
) -> Result<()> {
    let store = S3Store::in_region(bucket, "", region, &config.aws_timeouts).await;
    let deployment = &config.deployment;
    let names = [
        format!("{}.py", deployment.export_dag_name),
        format!("{}.py", deployment.import_dag_name),
        format!("{}.py", deployment.cleanup_dag_name),
        startup::FILE_NAME.to_string(),
    ];
    for name in names {
        let key = file_key(config, &name);
        if !store.exists(&key).await? {
            continue;
        }
        if !config.dry_run {
            store.delete(&key).await?;
        }
        files.push(FileReport {
            side,
            bucket: bucket.to_string(),
            key,
            outcome: if config.dry_run {
                "would_delete"
            } else {
                "deleted"
            },
        });
    }
    Ok(())
}

/// Empties one side's backup bucket (when it holds anything) and deletes its stack; in a dry
/// run only says whether there is a stack to delete.
async fn delete_stack(
    config: &Config,
    settings: &StackSettings,
    side: Side,
    held: &[HeldBackups],
) -> Result<UndeployedStack> {
    let names = settings.names();
    let region = region_of(settings, side);
    let stacks = SdkStacks::new(region, &config.aws_timeouts).await;
    let stack = names.stack(side);
    let (_, bucket, count) = held
        .iter()
        .find(|(s, _, _)| *s == side)
        .cloned()
        .unwrap_or((side, names.backup_bucket(region), 0));
    let outcome = if config.dry_run {
        if crate::aws::cloudformation::Stacks::describe(&stacks, &stack)
            .await?
            .is_some()
        {
            "would_delete"
        } else {
            "absent"
        }
    } else {
        if count > 0 {
            S3Buckets::new(region, &config.aws_timeouts)
                .await
                .empty(&bucket)
                .await?;
        }
        if apply::delete(&stacks, &stack, Waiting::default()).await? {
            "deleted"
        } else {
            "absent"
        }
    };
    Ok(UndeployedStack {
        side,
        region: region.to_string(),
        stack,
        outcome,
        backup_bucket: bucket,
        backup_objects: count,
    })
}

/// `undeploy`'s report as text.
fn undeploy_text(report: &UndeployReport) -> String {
    let mut lines: Vec<String> = report
        .stacks
        .iter()
        .map(|s| {
            format!(
                "stack {} ({}): {}{}",
                s.stack,
                s.region,
                s.outcome.replace('_', " "),
                if s.backup_objects > 0 {
                    format!(
                        " (backup bucket {}: {} object versions)",
                        s.backup_bucket, s.backup_objects
                    )
                } else {
                    String::new()
                }
            )
        })
        .collect();
    lines.extend(report.files.iter().map(FileReport::line));
    if report.dry_run {
        lines.push("dry run: nothing was changed".into());
    }
    lines.join("\n")
}
