//! The CloudFormation templates `deploy` applies, one per Region: pure functions from the
//! deployment settings (and the workflow's definition) to template JSON.
//!
//! Primary Region: the versioned backup bucket, replicated to the secondary's; the role S3
//! replicates with; an SNS topic for the primary's notifications. Secondary Region: the
//! versioned backup bucket; the Step Functions state machine and its role; the EventBridge
//! Scheduler schedule that starts it and the schedule's role; the SNS topic with the e-mail
//! subscriptions and the EventBridge rule that sends it failed, timed-out and aborted
//! executions; optionally the Step Functions interface VPC endpoint and the execution role's
//! extra policy. Every name derives from STACK_NAME_PREFIX.
//!
//! When the Regions differ, the secondary's workflow cannot read the primary (Step Functions'
//! SDK integrations reach only their own Region), so detection crosses the Regions on
//! EventBridge: in the primary Region a schedule starts the heartbeat machine, which puts an
//! event when the primary is healthy, and a rule forwards those events to the secondary
//! Region's default bus; there a rule counts them (`AWS/Events` `MatchedEvents`), an alarm
//! fires when they stop, and a rule on the alarm's change from OK to ALARM starts the
//! failover workflow with `primary_unhealthy` in its input. That rule replaces the
//! schedule: it carries the schedule's name, and the failover disables it.

use serde_json::{Value, json};

use crate::deploy::state_machine::{HEARTBEAT_DETAIL_TYPE, HEARTBEAT_SOURCE, PRIMARY_UNHEALTHY};
use crate::error::{Error, Result};

/// The variable names come from the prefix; S3 bucket names limit its length.
pub const PREFIX_VARIABLE: &str = "STACK_NAME_PREFIX";

/// One Region's side of the deployment.
#[derive(Debug, Clone, Default)]
pub struct RegionSide {
    pub region: String,
    pub environment_name: String,
    /// The environment's execution role (given, never created).
    pub execution_role_arn: Option<String>,
    pub vpc_id: Option<String>,
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
}

/// What the templates are built from (validated by [`StackSettings::check`]).
#[derive(Debug, Clone, Default)]
pub struct StackSettings {
    pub prefix: String,
    pub account_id: String,
    /// DR_TYPE is BACKUP_RESTORE: the workflow creates the secondary environment.
    pub creates_environment: bool,
    pub primary: RegionSide,
    pub secondary: RegionSide,
    /// HEALTH_CHECK_ENABLED: the schedule's state.
    pub health_check_enabled: bool,
    /// HEALTH_CHECK_INTERVAL_MINS: the schedule's rate.
    pub health_check_interval_mins: u64,
    /// MWAA_SIMULATE_DR: the schedule's input to the workflow.
    pub simulate_dr: bool,
    /// HEALTH_CHECK_SCHEDULE_NAME, when set, names the schedule (so `failover` finds it).
    pub schedule_name: Option<String>,
    pub notification_emails: Vec<String>,
    /// MWAA_UPDATE_EXECUTION_ROLE.
    pub update_execution_role: bool,
    /// SECONDARY_CREATE_SFN_VPCE.
    pub create_sfn_vpce: bool,
    /// HEALTH_CHECK_MAX_RETRY + 1: the looks that must all miss before a failover (across
    /// Regions, the alarm's evaluation periods).
    pub health_check_looks: u32,
}

impl StackSettings {
    /// The primary is in another Region than the secondary: detection crosses the Regions
    /// on EventBridge (the heartbeat machine, the forwarding rule, the alarm and the rule that
    /// starts the workflow) instead of the workflow's own look.
    pub fn cross_region(&self) -> bool {
        self.primary.region != self.secondary.region
    }

    /// The alarm's evaluation periods across Regions: HEALTH_CHECK_MAX_RETRY + 1 missed
    /// looks, and at least 2, so that a heartbeat that lands on either side of a period's
    /// boundary (one period with two events, the next with none) never counts as a miss.
    pub fn alarm_periods(&self) -> u32 {
        self.health_check_looks.max(2)
    }

    fn interval_secs(&self) -> u64 {
        self.health_check_interval_mins.max(1) * 60
    }
}

/// Which Region's stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Primary,
    Secondary,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Primary, Side::Secondary];

    pub fn as_str(self) -> &'static str {
        match self {
            Side::Primary => "primary",
            Side::Secondary => "secondary",
        }
    }
}

/// The physical names of what deploy creates, all derived from the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
    account_id: String,
}

impl Names {
    pub fn new(prefix: &str, account_id: &str) -> Self {
        Names {
            prefix: prefix.to_string(),
            account_id: account_id.to_string(),
        }
    }

    pub fn stack(&self, side: Side) -> String {
        format!("{}-{}", self.prefix, side.as_str())
    }

    /// Globally unique: the account and Region are part of it.
    pub fn backup_bucket(&self, region: &str) -> String {
        format!("{}-backup-{}-{region}", self.prefix, self.account_id)
    }

    pub fn state_machine(&self) -> String {
        format!("{}-state-machine", self.prefix)
    }

    pub fn state_machine_role(&self) -> String {
        format!("{}-state-machine-role", self.prefix)
    }

    pub fn scheduler_role(&self) -> String {
        format!("{}-scheduler-role", self.prefix)
    }

    pub fn replication_role(&self) -> String {
        format!("{}-replication-role", self.prefix)
    }

    /// The schedule's name unless HEALTH_CHECK_SCHEDULE_NAME gives one.
    pub fn default_schedule(&self) -> String {
        default_schedule_name(&self.prefix)
    }

    pub fn topic(&self, side: Side) -> String {
        format!("{}-{}-notifications", self.prefix, side.as_str())
    }

    pub fn failure_rule(&self) -> String {
        format!("{}-sfn-failure-rule", self.prefix)
    }

    /// Across Regions, in the primary's: the machine that looks at the heartbeat, its
    /// schedule, the rule that forwards its events to the secondary, and their roles.
    pub fn heartbeat_state_machine(&self) -> String {
        format!("{}-heartbeat", self.prefix)
    }

    pub fn heartbeat_role(&self) -> String {
        format!("{}-heartbeat-role", self.prefix)
    }

    pub fn heartbeat_schedule(&self) -> String {
        format!("{}-heartbeat-schedule", self.prefix)
    }

    pub fn heartbeat_scheduler_role(&self) -> String {
        format!("{}-heartbeat-scheduler-role", self.prefix)
    }

    pub fn heartbeat_forward_rule(&self) -> String {
        format!("{}-heartbeat-forward", self.prefix)
    }

    pub fn heartbeat_forward_role(&self) -> String {
        format!("{}-heartbeat-forward-role", self.prefix)
    }

    /// Across Regions, in the secondary's: the rule the forwarded events match (its
    /// `MatchedEvents` is what the alarm counts), the alarm, and the role of the rule that
    /// starts the workflow (the rule itself carries the schedule's name).
    pub fn heartbeat_rule(&self) -> String {
        format!("{}-heartbeat-arrivals", self.prefix)
    }

    pub fn heartbeat_alarm(&self) -> String {
        format!("{}-primary-heartbeat", self.prefix)
    }

    pub fn failover_trigger_role(&self) -> String {
        format!("{}-failover-trigger-role", self.prefix)
    }

    pub fn default_bus_arn(&self, region: &str) -> String {
        format!(
            "arn:aws:events:{region}:{}:event-bus/default",
            self.account_id
        )
    }

    pub fn alarm_arn(&self, region: &str, alarm: &str) -> String {
        format!(
            "arn:aws:cloudwatch:{region}:{}:alarm:{alarm}",
            self.account_id
        )
    }

    pub fn rule_arn(&self, region: &str, rule: &str) -> String {
        format!("arn:aws:events:{region}:{}:rule/{rule}", self.account_id)
    }

    pub fn execution_role_policy(&self, side: Side) -> String {
        format!("{}-{}-execution-role-policy", self.prefix, side.as_str())
    }

    pub fn state_machine_arn(&self, region: &str) -> String {
        format!(
            "arn:aws:states:{region}:{}:stateMachine:{}",
            self.account_id,
            self.state_machine()
        )
    }

    pub fn schedule_arn(&self, region: &str, schedule: &str) -> String {
        format!(
            "arn:aws:scheduler:{region}:{}:schedule/default/{schedule}",
            self.account_id
        )
    }
}

/// The health-check schedule's name when HEALTH_CHECK_SCHEDULE_NAME gives none: the name the
/// original's secondary stack gives it (`conf.get_name("scheduler")`), so that `failover`
/// disables the schedule either of them deployed.
pub fn default_schedule_name(prefix: &str) -> String {
    format!("{prefix}-scheduler")
}

impl StackSettings {
    pub fn names(&self) -> Names {
        Names::new(&self.prefix, &self.account_id)
    }

    pub fn schedule_name(&self) -> String {
        self.schedule_name
            .clone()
            .unwrap_or_else(|| self.names().default_schedule())
    }

    fn side(&self, side: Side) -> &RegionSide {
        match side {
            Side::Primary => &self.primary,
            Side::Secondary => &self.secondary,
        }
    }

    /// Refuses settings that would make names AWS rejects, naming the variable.
    pub fn check(&self) -> Result<()> {
        let prefix = &self.prefix;
        let longest_region = self.primary.region.len().max(self.secondary.region.len());
        // <prefix>-backup-<12 digits>-<region> is an S3 bucket name: at most 63 characters.
        let max = 63usize.saturating_sub("-backup-".len() + 12 + 1 + longest_region);
        let valid = !prefix.is_empty()
            && prefix.len() <= max
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !prefix.starts_with('-')
            && !prefix.ends_with('-')
            && !prefix.contains("--");
        if !valid {
            return Err(Error::InvalidValue {
                variable: PREFIX_VARIABLE.into(),
                value: prefix.clone(),
                problem: "it names S3 buckets, IAM roles and stacks".into(),
                accepted: format!(
                    "1 to {max} lowercase letters, digits and single hyphens, starting and ending with a letter or digit"
                ),
            });
        }
        if self.create_sfn_vpce {
            let s = &self.secondary;
            if s.vpc_id.is_none() || s.subnet_ids.is_empty() || s.security_group_ids.is_empty() {
                return Err(Error::MissingValue {
                    variable: "SECONDARY_VPC_ID, SECONDARY_SUBNET_IDS and SECONDARY_SECURITY_GROUP_IDS".into(),
                    command: "deploy".into(),
                    purpose: "SECONDARY_CREATE_SFN_VPCE=YES creates the Step Functions endpoint in that VPC".into(),
                });
            }
        }
        self.check_alarm_length()?;
        if self.update_execution_role && self.secondary.execution_role_arn.is_none() {
            return Err(Error::MissingValue {
                variable: "SECONDARY_MWAA_ROLE_ARN".into(),
                command: "deploy".into(),
                purpose: "MWAA_UPDATE_EXECUTION_ROLE=YES adds a policy to that role".into(),
            });
        }
        if self.creates_environment && self.secondary.execution_role_arn.is_none() {
            return Err(Error::MissingValue {
                variable: "SECONDARY_MWAA_ROLE_ARN".into(),
                command: "deploy".into(),
                purpose: "BACKUP_RESTORE's workflow passes that role to CreateEnvironment".into(),
            });
        }
        for side in Side::BOTH {
            if let Some(arn) = &self.side(side).execution_role_arn
                && role_name(arn).is_none()
            {
                let variable = format!("{}_MWAA_ROLE_ARN", side.as_str().to_uppercase());
                return Err(Error::InvalidValue {
                    variable,
                    value: arn.clone(),
                    problem: "not an IAM role ARN".into(),
                    accepted: "arn:aws:iam::<account>:role/<path/>name".into(),
                });
            }
        }
        Ok(())
    }

    /// Across Regions: refuses a heartbeat alarm longer than CloudWatch allows.
    fn check_alarm_length(&self) -> Result<()> {
        if !self.cross_region() {
            return Ok(());
        }
        // PutMetricAlarm: Period × EvaluationPeriods at most a day for periods under an
        // hour, seven days otherwise.
        let period = self.interval_secs();
        let total = period * u64::from(self.alarm_periods());
        let limit = if period < 3600 { 86_400 } else { 604_800 };
        if total > limit {
            return Err(Error::InvalidValue {
                variable: "HEALTH_CHECK_INTERVAL_MINS and HEALTH_CHECK_MAX_RETRY".into(),
                value: format!(
                    "{} minutes × {} looks",
                    self.health_check_interval_mins,
                    self.alarm_periods()
                ),
                problem: "across Regions the heartbeat alarm evaluates that many periods of that length, longer than CloudWatch allows".into(),
                accepted: format!(
                    "interval × (retries + 1) of at most {} hours",
                    limit / 3600
                ),
            });
        }
        Ok(())
    }
}

/// The role name of an IAM role ARN (the part after the last `/`).
pub fn role_name(arn: &str) -> Option<&str> {
    let rest = arn.split(":role/").nth(1)?;
    let name = rest.rsplit('/').next()?;
    (!name.is_empty() && arn.starts_with("arn:aws")).then_some(name)
}

fn statement(actions: &[&str], resources: Value) -> Value {
    json!({"Effect": "Allow", "Action": actions, "Resource": resources})
}

fn policy(statements: Vec<Value>) -> Value {
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// An IAM role `service` assumes, with one inline policy.
fn service_role(name: String, service: &str, policy_name: &str, statements: Vec<Value>) -> Value {
    json!({
        "Type": "AWS::IAM::Role",
        "Properties": {
            "RoleName": name,
            "AssumeRolePolicyDocument": trust(service),
            "Policies": [{
                "PolicyName": policy_name,
                "PolicyDocument": policy(statements),
            }],
        },
    })
}

fn trust(service: &str) -> Value {
    policy(vec![json!({
        "Effect": "Allow",
        "Principal": {"Service": service},
        "Action": "sts:AssumeRole",
    })])
}

fn bucket_arn(bucket: &str) -> String {
    format!("arn:aws:s3:::{bucket}")
}

/// What the execution role of an environment needs on its Region's backup bucket: the backup
/// and restore tasks read, write, list and prune the store.
const STORE_ACTIONS: &[&str] = &[
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:ListBucket",
    "s3:GetBucketLocation",
    "s3:AbortMultipartUpload",
];

/// A versioned, encrypted, private bucket named `bucket`.
fn backup_bucket(bucket: &str, replication: Option<Value>) -> Value {
    let mut properties = json!({
        "BucketName": bucket,
        "VersioningConfiguration": {"Status": "Enabled"},
        "BucketEncryption": {"ServerSideEncryptionConfiguration": [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
        ]},
        "PublicAccessBlockConfiguration": {
            "BlockPublicAcls": true,
            "BlockPublicPolicy": true,
            "IgnorePublicAcls": true,
            "RestrictPublicBuckets": true,
        },
    });
    if let Some(replication) = replication {
        properties["ReplicationConfiguration"] = replication;
    }
    json!({
        "Type": "AWS::S3::Bucket",
        // Deleting the stack must not silently drop backups: `undeploy` empties the bucket
        // first, and only with --delete-backups.
        "DeletionPolicy": "Delete",
        "UpdateReplacePolicy": "Retain",
        "Properties": properties,
    })
}

/// The bucket's policy: the environment's execution role may use the store, and nobody may
/// reach it without TLS.
fn backup_bucket_policy(bucket_logical: &str, role_arn: Option<&str>) -> Value {
    let arn = json!({"Fn::GetAtt": [bucket_logical, "Arn"]});
    let objects = json!({"Fn::Join": ["", [{"Fn::GetAtt": [bucket_logical, "Arn"]}, "/*"]]});
    let mut statements = vec![json!({
        "Sid": "DenyWithoutTls",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [arn.clone(), objects.clone()],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    })];
    if let Some(role) = role_arn {
        statements.push(json!({
            "Sid": "ExecutionRoleUsesTheStore",
            "Effect": "Allow",
            "Principal": {"AWS": role},
            "Action": STORE_ACTIONS,
            "Resource": [arn, objects],
        }));
    }
    json!({
        "Type": "AWS::S3::BucketPolicy",
        "Properties": {"Bucket": {"Ref": bucket_logical}, "PolicyDocument": policy(statements)},
    })
}

/// An SNS topic with one e-mail subscription per address.
fn topic(name: &str, emails: &[String]) -> Value {
    let subscriptions: Vec<Value> = emails
        .iter()
        .map(|e| json!({"Protocol": "email", "Endpoint": e}))
        .collect();
    let mut properties = json!({"TopicName": name});
    if !subscriptions.is_empty() {
        properties["Subscription"] = Value::Array(subscriptions);
    }
    json!({"Type": "AWS::SNS::Topic", "Properties": properties})
}

fn output(value: Value, description: &str) -> Value {
    json!({"Description": description, "Value": value})
}

/// The primary Region's template; `heartbeat` is the heartbeat machine's definition, created
/// only when the Regions differ.
pub fn primary_template(settings: &StackSettings, heartbeat: &Value) -> Value {
    let names = settings.names();
    let primary_bucket = names.backup_bucket(&settings.primary.region);
    let secondary_bucket = names.backup_bucket(&settings.secondary.region);
    let role_arn = settings.primary.execution_role_arn.as_deref();
    let mut resources = serde_json::Map::new();
    resources.insert(
        "BackupBucket".into(),
        backup_bucket(
            &primary_bucket,
            Some(replication_to_secondary(&secondary_bucket)),
        ),
    );
    resources.insert(
        "BackupBucketPolicy".into(),
        backup_bucket_policy("BackupBucket", role_arn),
    );
    resources.insert(
        "ReplicationRole".into(),
        replication_role(&names, &primary_bucket, &secondary_bucket),
    );
    resources.insert(
        "NotificationTopic".into(),
        topic(&names.topic(Side::Primary), &settings.notification_emails),
    );
    if let Some(role) = role_arn {
        resources.insert("NotificationTopicPolicy".into(), primary_topic_policy(role));
        if settings.update_execution_role
            && let Some(name) = role_name(role)
        {
            resources.insert(
                "ExecutionRolePolicy".into(),
                primary_execution_role_policy(&names, name),
            );
        }
    }
    let mut outputs = json!({
        "BackupBucketName": output(json!({"Ref": "BackupBucket"}), "The backup store's bucket in this Region (DR_BACKUP_BUCKET of the primary's DAGs)"),
        "NotificationTopicArn": output(json!({"Ref": "NotificationTopic"}), "The topic a failed backup notifies (DR_SNS_TOPIC_ARN)"),
    });
    let mut description = format!(
        "mwaa-dr {}: primary Region ({}): backup bucket replicated to {}, notifications",
        settings.prefix, settings.primary.region, settings.secondary.region
    );
    if settings.cross_region() {
        heartbeat_resources(settings, heartbeat, &mut resources);
        outputs["HeartbeatStateMachineArn"] = output(
            json!({"Ref": "HeartbeatStateMachine"}),
            "The machine that looks at the primary's heartbeat and tells the secondary Region",
        );
        description.push_str(", the heartbeat sent to the secondary Region");
    }
    json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": description,
        "Resources": resources,
        "Outputs": outputs,
    })
}

/// The event pattern of the heartbeat events of `settings`' primary, on either bus.
fn heartbeat_pattern(settings: &StackSettings) -> Value {
    json!({
        "source": [HEARTBEAT_SOURCE],
        "detail-type": [HEARTBEAT_DETAIL_TYPE],
        "detail": {"environment": [settings.primary.environment_name]},
    })
}

/// Across Regions, in the primary's: the heartbeat machine and its role, the schedule that
/// starts it every HEALTH_CHECK_INTERVAL_MINS (always enabled: its events are the signal,
/// and it changes nothing) and its role, and the rule that forwards the events to the
/// secondary Region's default bus and its role.
fn heartbeat_resources(
    settings: &StackSettings,
    heartbeat: &Value,
    resources: &mut serde_json::Map<String, Value>,
) {
    let names = settings.names();
    let primary = &settings.primary;
    resources.insert(
        "HeartbeatStateMachineRole".into(),
        service_role(
            names.heartbeat_role(),
            "states.amazonaws.com",
            "primary-heartbeat",
            heartbeat_statements(settings),
        ),
    );
    resources.insert(
        "HeartbeatStateMachine".into(),
        json!({
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {
                "StateMachineName": names.heartbeat_state_machine(),
                "RoleArn": {"Fn::GetAtt": ["HeartbeatStateMachineRole", "Arn"]},
                "DefinitionString": heartbeat.to_string(),
            },
        }),
    );
    resources.insert(
        "HeartbeatSchedulerRole".into(),
        service_role(
            names.heartbeat_scheduler_role(),
            "scheduler.amazonaws.com",
            "start-heartbeat",
            vec![statement(
                &["states:StartExecution"],
                json!([{"Ref": "HeartbeatStateMachine"}]),
            )],
        ),
    );
    resources.insert("HeartbeatSchedule".into(), heartbeat_schedule(settings));
    let secondary_bus = names.default_bus_arn(&settings.secondary.region);
    resources.insert(
        "HeartbeatForwardRole".into(),
        service_role(
            names.heartbeat_forward_role(),
            "events.amazonaws.com",
            "forward-heartbeat",
            vec![statement(&["events:PutEvents"], json!([secondary_bus]))],
        ),
    );
    resources.insert(
        "HeartbeatForwardRule".into(),
        json!({
            "Type": "AWS::Events::Rule",
            "Properties": {
                "Name": names.heartbeat_forward_rule(),
                "Description": format!("Forwards the heartbeat events of {} to the default bus of {}", primary.environment_name, settings.secondary.region),
                "State": "ENABLED",
                "EventPattern": heartbeat_pattern(settings),
                "Targets": [{
                    "Id": "secondary-region-bus",
                    "Arn": secondary_bus,
                    "RoleArn": {"Fn::GetAtt": ["HeartbeatForwardRole", "Arn"]},
                }],
            },
        }),
    );
}

/// The schedule that starts the heartbeat machine every HEALTH_CHECK_INTERVAL_MINS.
fn heartbeat_schedule(settings: &StackSettings) -> Value {
    let names = settings.names();
    let primary = &settings.primary;
    json!({
        "Type": "AWS::Scheduler::Schedule",
        "Properties": {
            "Name": names.heartbeat_schedule(),
            "Description": format!("Starts the mwaa-dr heartbeat of {} in {}: the secondary Region fails over when its events stop", primary.environment_name, primary.region),
            "ScheduleExpression": rate(settings.health_check_interval_mins),
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "State": "ENABLED",
            "Target": {
                "Arn": {"Ref": "HeartbeatStateMachine"},
                "RoleArn": {"Fn::GetAtt": ["HeartbeatSchedulerRole", "Arn"]},
                "Input": "{}",
            },
        },
    })
}

/// The heartbeat machine role's statements: read the heartbeat, put the event on this
/// Region's default bus, and for Backup-Restore save the primary's definition in this
/// Region's backup bucket.
pub fn heartbeat_statements(settings: &StackSettings) -> Vec<Value> {
    let names = settings.names();
    let account = &settings.account_id;
    let primary = &settings.primary;
    let mut statements = vec![
        // GetMetricData has no resource-level permissions.
        statement(&["cloudwatch:GetMetricData"], json!("*")),
        statement(
            &["events:PutEvents"],
            json!([names.default_bus_arn(&primary.region)]),
        ),
    ];
    if settings.creates_environment {
        statements.push(statement(
            &["airflow:GetEnvironment"],
            json!([environment_arn(account, primary)]),
        ));
        statements.push(statement(
            &["s3:PutObject"],
            json!([format!(
                "{}/*",
                bucket_arn(&names.backup_bucket(&primary.region))
            )]),
        ));
    }
    statements
}

/// `rate(N minutes)`, as EventBridge Scheduler spells it.
fn rate(minutes: u64) -> String {
    format!(
        "rate({minutes} {})",
        if minutes == 1 { "minute" } else { "minutes" }
    )
}

/// The primary bucket's replication of every object (and delete marker) to the secondary's.
fn replication_to_secondary(secondary_bucket: &str) -> Value {
    json!({
        "Role": {"Fn::GetAtt": ["ReplicationRole", "Arn"]},
        "Rules": [{
            "Id": "to-secondary",
            "Status": "Enabled",
            "Priority": 1,
            "Filter": {"Prefix": ""},
            "DeleteMarkerReplication": {"Status": "Enabled"},
            "Destination": {"Bucket": bucket_arn(secondary_bucket)},
        }],
    })
}

/// The role S3 replicates with: read the primary's bucket, write the secondary's.
fn replication_role(names: &Names, primary_bucket: &str, secondary_bucket: &str) -> Value {
    json!({
        "Type": "AWS::IAM::Role",
        "Properties": {
            "RoleName": names.replication_role(),
            "Path": "/service-role/",
            "AssumeRolePolicyDocument": trust("s3.amazonaws.com"),
            "Policies": [{
                "PolicyName": "replicate-backups",
                "PolicyDocument": policy(vec![
                    statement(
                        &["s3:GetReplicationConfiguration", "s3:ListBucket"],
                        json!([bucket_arn(primary_bucket)]),
                    ),
                    statement(
                        &[
                            "s3:GetObjectVersionForReplication",
                            "s3:GetObjectVersionAcl",
                            "s3:GetObjectVersionTagging",
                        ],
                        json!([format!("{}/*", bucket_arn(primary_bucket))]),
                    ),
                    statement(
                        &["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"],
                        json!([format!("{}/*", bucket_arn(secondary_bucket))]),
                    ),
                ]),
            }],
        },
    })
}

/// The primary topic's policy: the environment's execution role publishes to it.
fn primary_topic_policy(role: &str) -> Value {
    json!({
        "Type": "AWS::SNS::TopicPolicy",
        "Properties": {
            "Topics": [{"Ref": "NotificationTopic"}],
            "PolicyDocument": policy(vec![json!({
                "Sid": "ExecutionRolePublishes",
                "Effect": "Allow",
                "Principal": {"AWS": role},
                "Action": "sns:Publish",
                "Resource": {"Ref": "NotificationTopic"},
            })]),
        },
    })
}

/// MWAA_UPDATE_EXECUTION_ROLE in the primary: the role `name` uses the store and publishes
/// to the topic.
fn primary_execution_role_policy(names: &Names, name: &str) -> Value {
    json!({
        "Type": "AWS::IAM::Policy",
        "Properties": {
            "PolicyName": names.execution_role_policy(Side::Primary),
            "Roles": [name],
            "PolicyDocument": policy(vec![
                statement(STORE_ACTIONS, backup_bucket_and_objects()),
                statement(&["sns:Publish"], json!([{"Ref": "NotificationTopic"}])),
            ]),
        },
    })
}

/// The template's backup bucket and every object in it, as IAM resources.
fn backup_bucket_and_objects() -> Value {
    json!([
        {"Fn::GetAtt": ["BackupBucket", "Arn"]},
        {"Fn::Join": ["", [{"Fn::GetAtt": ["BackupBucket", "Arn"]}, "/*"]]},
    ])
}

/// The ARN of the MWAA environment of `side`.
fn environment_arn(account: &str, side: &RegionSide) -> String {
    format!(
        "arn:aws:airflow:{}:{account}:environment/{}",
        side.region, side.environment_name
    )
}

/// The state machine role's statements: only what the workflow calls.
pub fn state_machine_statements(settings: &StackSettings) -> Vec<Value> {
    let names = settings.names();
    let account = &settings.account_id;
    let secondary = &settings.secondary;
    let bucket = names.backup_bucket(&secondary.region);
    let schedule = settings.schedule_name();
    if settings.cross_region() {
        return cross_region_statements(settings);
    }
    let mut statements = vec![
        // GetMetricData has no resource-level permissions.
        statement(&["cloudwatch:GetMetricData"], json!("*")),
        statement(
            &["airflow:GetEnvironment"],
            json!([
                environment_arn(account, &settings.primary),
                environment_arn(account, secondary)
            ]),
        ),
        invoke_rest_api(account, secondary),
        statement(
            &["s3:GetObject", "s3:PutObject"],
            json!([format!("{}/*", bucket_arn(&bucket))]),
        ),
        // The newest saved definition is found by listing them.
        statement(&["s3:ListBucket"], json!([bucket_arn(&bucket)])),
        statement(
            &["scheduler:GetSchedule", "scheduler:UpdateSchedule"],
            json!([names.schedule_arn(&secondary.region, &schedule)]),
        ),
        statement(&["sns:Publish"], json!([{"Ref": "NotificationTopic"}])),
        // UpdateSchedule passes the schedule's own role again. (By name, not by reference:
        // the schedule's role refers to the state machine, which refers to this role.)
        json!({
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": [format!("arn:aws:iam::{account}:role/{}", names.scheduler_role())],
            "Condition": {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}},
        }),
    ];
    if settings.creates_environment {
        statements.extend(create_environment_statements(settings));
    }
    statements
}

/// The workflow's statements across Regions: it reads nothing of the primary (no heartbeat,
/// no definition to save), and disables the rule that starts it instead of a schedule.
fn cross_region_statements(settings: &StackSettings) -> Vec<Value> {
    let names = settings.names();
    let account = &settings.account_id;
    let secondary = &settings.secondary;
    let bucket = names.backup_bucket(&secondary.region);
    let mut statements = vec![
        statement(
            &["airflow:GetEnvironment"],
            json!([environment_arn(account, secondary)]),
        ),
        invoke_rest_api(account, secondary),
        statement(
            &["s3:GetObject"],
            json!([format!("{}/*", bucket_arn(&bucket))]),
        ),
        statement(&["s3:ListBucket"], json!([bucket_arn(&bucket)])),
        statement(
            &["events:DisableRule"],
            json!([names.rule_arn(&secondary.region, &settings.schedule_name())]),
        ),
        statement(&["sns:Publish"], json!([{"Ref": "NotificationTopic"}])),
    ];
    if settings.creates_environment {
        statements.extend(create_environment_statements(settings));
    }
    statements
}

/// InvokeRestApi on the secondary environment and its Airflow roles.
fn invoke_rest_api(account: &str, secondary: &RegionSide) -> Value {
    statement(
        &["airflow:InvokeRestApi"],
        json!([
            environment_arn(account, secondary),
            format!(
                "arn:aws:airflow:{}:{account}:role/{}/*",
                secondary.region, secondary.environment_name
            ),
        ]),
    )
}

/// What BACKUP_RESTORE's workflow needs besides: CreateEnvironment of the secondary, passing
/// its execution role, and what MWAA checks on the caller about the network it joins.
fn create_environment_statements(settings: &StackSettings) -> Vec<Value> {
    let account = &settings.account_id;
    let secondary = &settings.secondary;
    let mut statements = vec![statement(
        &["airflow:CreateEnvironment"],
        json!([environment_arn(account, secondary)]),
    )];
    if let Some(role) = &secondary.execution_role_arn {
        statements.push(json!({
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": [role],
            "Condition": {"StringEquals": {"iam:PassedToService": "airflow.amazonaws.com"}},
        }));
    }
    // What MWAA's CreateEnvironment checks on the caller: the network it joins.
    statements.push(statement(
        &[
            "ec2:DescribeSecurityGroups",
            "ec2:DescribeSubnets",
            "ec2:DescribeVpcs",
            "ec2:DescribeVpcEndpoints",
        ],
        json!("*"),
    ));
    statements.push(statement(
        &["ec2:CreateVpcEndpoint"],
        json!([
            format!("arn:aws:ec2:{}:{account}:vpc/*", secondary.region),
            format!("arn:aws:ec2:{}:{account}:vpc-endpoint/*", secondary.region),
            format!(
                "arn:aws:ec2:{}:{account}:security-group/*",
                secondary.region
            ),
            format!("arn:aws:ec2:{}:{account}:subnet/*", secondary.region),
        ]),
    ));
    statements
}

/// The secondary Region's template; `definition` is the workflow's Amazon States Language.
pub fn secondary_template(settings: &StackSettings, definition: &Value) -> Value {
    let names = settings.names();
    let secondary = &settings.secondary;
    let bucket = names.backup_bucket(&secondary.region);
    let role_arn = secondary.execution_role_arn.as_deref();
    let mut resources = serde_json::Map::new();
    resources.insert("BackupBucket".into(), backup_bucket(&bucket, None));
    resources.insert(
        "BackupBucketPolicy".into(),
        backup_bucket_policy("BackupBucket", role_arn),
    );
    resources.insert("StateMachineRole".into(), state_machine_role(settings));
    resources.insert("StateMachine".into(), state_machine(&names, definition));
    let schedule_output = if settings.cross_region() {
        alarm_resources(settings, &mut resources);
        output(
            json!({"Ref": "FailoverTriggerRule"}),
            "The rule that starts the workflow when the heartbeat alarm fires (HEALTH_CHECK_SCHEDULE_NAME)",
        )
    } else {
        resources.insert(
            "SchedulerRole".into(),
            scheduler_role(&names, &secondary.region),
        );
        resources.insert(
            "HealthCheckSchedule".into(),
            health_check_schedule(settings),
        );
        output(
            json!({"Ref": "HealthCheckSchedule"}),
            "The health-check schedule (HEALTH_CHECK_SCHEDULE_NAME)",
        )
    };
    resources.insert(
        "NotificationTopic".into(),
        topic(&names.topic(Side::Secondary), &settings.notification_emails),
    );
    resources.insert(
        "NotificationTopicPolicy".into(),
        secondary_topic_policy(role_arn),
    );
    resources.insert("FailedExecutionRule".into(), failed_execution_rule(&names));
    if settings.update_execution_role
        && let Some(name) = role_arn.and_then(role_name)
    {
        resources.insert(
            "ExecutionRolePolicy".into(),
            secondary_execution_role_policy(&names, name),
        );
    }
    if settings.create_sfn_vpce {
        resources.insert(
            "StepFunctionsEndpoint".into(),
            step_functions_endpoint(secondary),
        );
    }
    let detection = if settings.cross_region() {
        format!(
            "the heartbeat alarm on the events from {}",
            settings.primary.region
        )
    } else {
        "health-check schedule".to_string()
    };
    json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!("mwaa-dr {}: secondary Region ({}): failover workflow, {detection}, notifications, backup bucket", settings.prefix, secondary.region),
        "Resources": resources,
        "Outputs": {
            "BackupBucketName": output(json!({"Ref": "BackupBucket"}), "The backup store's bucket in this Region (replica of the primary's)"),
            "StateMachineArn": output(json!({"Ref": "StateMachine"}), "The failover workflow"),
            "ScheduleName": schedule_output,
            "NotificationTopicArn": output(json!({"Ref": "NotificationTopic"}), "The topic of failover outcomes (DR_SNS_TOPIC_ARN)"),
        },
    })
}

/// The role the failover workflow runs as, holding [`state_machine_statements`].
fn state_machine_role(settings: &StackSettings) -> Value {
    service_role(
        settings.names().state_machine_role(),
        "states.amazonaws.com",
        "failover-workflow",
        state_machine_statements(settings),
    )
}

/// The failover workflow: the Step Functions state machine running `definition`.
fn state_machine(names: &Names, definition: &Value) -> Value {
    json!({
        "Type": "AWS::StepFunctions::StateMachine",
        "Properties": {
            "StateMachineName": names.state_machine(),
            "RoleArn": {"Fn::GetAtt": ["StateMachineRole", "Arn"]},
            "DefinitionString": definition.to_string(),
        },
    })
}

/// The role the health-check schedule starts the workflow in `region` with.
fn scheduler_role(names: &Names, region: &str) -> Value {
    service_role(
        names.scheduler_role(),
        "scheduler.amazonaws.com",
        "start-failover-workflow",
        vec![statement(
            &["states:StartExecution"],
            json!([names.state_machine_arn(region)]),
        )],
    )
}

/// The EventBridge Scheduler schedule that starts the workflow: HEALTH_CHECK_ENABLED,
/// HEALTH_CHECK_INTERVAL_MINS and MWAA_SIMULATE_DR as its state, rate and input.
fn health_check_schedule(settings: &StackSettings) -> Value {
    let simulate = if settings.simulate_dr { "YES" } else { "NO" };
    json!({
        "Type": "AWS::Scheduler::Schedule",
        "Properties": {
            "Name": settings.schedule_name(),
            "Description": format!("Starts the mwaa-dr workflow: health check of {} in {}, and the recovery when it fails", settings.primary.environment_name, settings.primary.region),
            "ScheduleExpression": rate(settings.health_check_interval_mins),
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "State": if settings.health_check_enabled { "ENABLED" } else { "DISABLED" },
            "Target": {
                "Arn": {"Ref": "StateMachine"},
                "RoleArn": {"Fn::GetAtt": ["SchedulerRole", "Arn"]},
                "Input": json!({"simulate_dr": simulate}).to_string(),
            },
        },
    })
}

/// Across Regions, in the secondary's: the rule the forwarded heartbeat events match, the
/// alarm on their count, and the rule (named as the schedule: HEALTH_CHECK_ENABLED is its
/// state, and the failover disables it) that starts the workflow when the alarm goes from
/// OK to ALARM, with its role.
fn alarm_resources(settings: &StackSettings, resources: &mut serde_json::Map<String, Value>) {
    let names = settings.names();
    let secondary = &settings.secondary;
    let primary = &settings.primary;
    resources.insert(
        "HeartbeatRule".into(),
        json!({
            "Type": "AWS::Events::Rule",
            "Properties": {
                "Name": names.heartbeat_rule(),
                "Description": format!("The heartbeat events of {} from {}: the alarm counts them (AWS/Events MatchedEvents)", primary.environment_name, primary.region),
                "State": "ENABLED",
                "EventPattern": heartbeat_pattern(settings),
            },
        }),
    );
    let periods = settings.alarm_periods();
    resources.insert(
        "HeartbeatAlarm".into(),
        json!({
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmName": names.heartbeat_alarm(),
                "AlarmDescription": format!(
                    "No heartbeat event of {} from {} in {periods} periods of {} minutes (HEALTH_CHECK_INTERVAL_MINS, HEALTH_CHECK_MAX_RETRY + 1 looks): the primary, its Region, its CloudWatch or its scheduler is down",
                    primary.environment_name, primary.region, settings.health_check_interval_mins
                ),
                "Namespace": "AWS/Events",
                "MetricName": "MatchedEvents",
                "Dimensions": [{"Name": "RuleName", "Value": names.heartbeat_rule()}],
                "Statistic": "Sum",
                "Period": settings.interval_secs(),
                "EvaluationPeriods": periods,
                "DatapointsToAlarm": periods,
                "Threshold": 1,
                "ComparisonOperator": "LessThanThreshold",
                "TreatMissingData": "breaching",
            },
        }),
    );
    resources.insert(
        "FailoverTriggerRole".into(),
        service_role(
            names.failover_trigger_role(),
            "events.amazonaws.com",
            "start-failover-workflow",
            vec![statement(
                &["states:StartExecution"],
                json!([names.state_machine_arn(&secondary.region)]),
            )],
        ),
    );
    resources.insert(
        "FailoverTriggerRule".into(),
        failover_trigger_rule(settings, periods),
    );
}

/// The rule (named as the schedule: HEALTH_CHECK_ENABLED is its state, and the failover
/// disables it) that starts the workflow when the heartbeat alarm goes from OK to ALARM,
/// telling it the primary is confirmed unhealthy.
fn failover_trigger_rule(settings: &StackSettings, periods: u32) -> Value {
    let names = settings.names();
    let secondary = &settings.secondary;
    let primary = &settings.primary;
    let input = json!({
        PRIMARY_UNHEALTHY: format!(
            "alarm {}: no heartbeat of {} from {} in {periods} looks",
            names.heartbeat_alarm(),
            primary.environment_name,
            primary.region
        ),
    });
    json!({
        "Type": "AWS::Events::Rule",
        "Properties": {
            "Name": settings.schedule_name(),
            "Description": format!("Starts the mwaa-dr failover when the heartbeat alarm of {} goes from OK to ALARM; the failover disables this rule", primary.environment_name),
            "State": if settings.health_check_enabled { "ENABLED" } else { "DISABLED" },
            "EventPattern": {
                "source": ["aws.cloudwatch"],
                "detail-type": ["CloudWatch Alarm State Change"],
                "resources": [names.alarm_arn(&secondary.region, &names.heartbeat_alarm())],
                "detail": {
                    "state": {"value": ["ALARM"]},
                    // Not from INSUFFICIENT_DATA: a new alarm (before the first event
                    // arrives) or one re-created never starts a failover; only a
                    // primary seen alive, then silent, does.
                    "previousState": {"value": ["OK"]},
                },
            },
            "Targets": [{
                "Id": "failover-workflow",
                "Arn": {"Ref": "StateMachine"},
                "RoleArn": {"Fn::GetAtt": ["FailoverTriggerRole", "Arn"]},
                "Input": input.to_string(),
            }],
        },
    })
}

/// The secondary topic's policy: the failed-execution rule publishes to it, and so does the
/// environment's execution role when one is given.
fn secondary_topic_policy(role_arn: Option<&str>) -> Value {
    let mut topic_statements = vec![json!({
        "Sid": "FailedExecutionsArrive",
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sns:Publish",
        "Resource": {"Ref": "NotificationTopic"},
        "Condition": {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["FailedExecutionRule", "Arn"]}}},
    })];
    if let Some(role) = role_arn {
        topic_statements.push(json!({
            "Sid": "ExecutionRolePublishes",
            "Effect": "Allow",
            "Principal": {"AWS": role},
            "Action": "sns:Publish",
            "Resource": {"Ref": "NotificationTopic"},
        }));
    }
    json!({
        "Type": "AWS::SNS::TopicPolicy",
        "Properties": {
            "Topics": [{"Ref": "NotificationTopic"}],
            "PolicyDocument": policy(topic_statements),
        },
    })
}

/// The EventBridge rule that sends failed, timed-out and aborted executions to the topic.
fn failed_execution_rule(names: &Names) -> Value {
    json!({
        "Type": "AWS::Events::Rule",
        "Properties": {
            "Name": names.failure_rule(),
            "Description": "A failed, timed-out or aborted mwaa-dr workflow execution notifies the topic",
            "State": "ENABLED",
            "EventPattern": {
                "source": ["aws.states"],
                "detail-type": ["Step Functions Execution Status Change"],
                "detail": {
                    "status": ["FAILED", "TIMED_OUT", "ABORTED"],
                    "stateMachineArn": [{"Ref": "StateMachine"}],
                },
            },
            "Targets": [{"Id": "notification-topic", "Arn": {"Ref": "NotificationTopic"}}],
        },
    })
}

/// MWAA_UPDATE_EXECUTION_ROLE in the secondary: the role `name` answers the restore's task
/// token and uses the store.
fn secondary_execution_role_policy(names: &Names, name: &str) -> Value {
    json!({
        "Type": "AWS::IAM::Policy",
        "Properties": {
            "PolicyName": names.execution_role_policy(Side::Secondary),
            "Roles": [name],
            "PolicyDocument": policy(vec![
                statement(
                    &["states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"],
                    json!([{"Ref": "StateMachine"}]),
                ),
                statement(STORE_ACTIONS, backup_bucket_and_objects()),
            ]),
        },
    })
}

/// SECONDARY_CREATE_SFN_VPCE: the Step Functions interface endpoint in the secondary's VPC.
fn step_functions_endpoint(secondary: &RegionSide) -> Value {
    json!({
        "Type": "AWS::EC2::VPCEndpoint",
        "Properties": {
            "VpcEndpointType": "Interface",
            "ServiceName": format!("com.amazonaws.{}.states", secondary.region),
            "VpcId": secondary.vpc_id,
            "SubnetIds": secondary.subnet_ids,
            "SecurityGroupIds": secondary.security_group_ids,
            "PrivateDnsEnabled": true,
        },
    })
}

/// The state machines' definitions the templates embed.
#[derive(Debug, Clone)]
pub struct Definitions {
    /// The failover workflow, in the secondary Region.
    pub failover: Value,
    /// The heartbeat machine, in the primary Region when the Regions differ.
    pub heartbeat: Value,
}

/// The template of `side`.
pub fn template(settings: &StackSettings, side: Side, definitions: &Definitions) -> Value {
    match side {
        Side::Primary => primary_template(settings, &definitions.heartbeat),
        Side::Secondary => secondary_template(settings, &definitions.failover),
    }
}

/// Every logical id a `Ref` or `Fn::GetAtt` in `template` names (pseudo parameters left
/// out), for checking that each exists.
pub fn references(template: &Value) -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner) {
                        ("Ref", Value::String(target)) if !target.starts_with("AWS::") => {
                            out.push(target.clone());
                        }
                        ("Fn::GetAtt", Value::Array(parts)) => {
                            if let Some(Value::String(target)) = parts.first() {
                                out.push(target.clone());
                            }
                        }
                        _ => walk(inner, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(template, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn settings() -> StackSettings {
        StackSettings {
            prefix: "mwaa-dr-test".into(),
            account_id: "123456789012".into(),
            creates_environment: true,
            primary: RegionSide {
                region: "us-east-1".into(),
                environment_name: "env-primary".into(),
                execution_role_arn: Some(
                    "arn:aws:iam::123456789012:role/service-role/primary-role".into(),
                ),
                ..RegionSide::default()
            },
            secondary: RegionSide {
                region: "us-east-2".into(),
                environment_name: "env-secondary".into(),
                execution_role_arn: Some(
                    "arn:aws:iam::123456789012:role/service-role/secondary-role".into(),
                ),
                vpc_id: Some("vpc-1".into()),
                subnet_ids: vec!["subnet-1".into(), "subnet-2".into()],
                security_group_ids: vec!["sg-1".into()],
            },
            health_check_enabled: true,
            health_check_interval_mins: 5,
            simulate_dr: false,
            schedule_name: None,
            notification_emails: vec!["ops@example.com".into(), "dr@example.com".into()],
            update_execution_role: true,
            create_sfn_vpce: true,
            health_check_looks: 3,
        }
    }

    /// Both environments in one Region.
    fn same_region() -> StackSettings {
        let mut s = settings();
        s.secondary.region = s.primary.region.clone();
        s
    }

    fn definition() -> Value {
        json!({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
    }

    fn definitions() -> Definitions {
        Definitions {
            failover: definition(),
            heartbeat: json!({"StartAt": "Look", "States": {"Look": {"Type": "Succeed"}}}),
        }
    }

    fn resources(template: &Value) -> &serde_json::Map<String, Value> {
        template["Resources"].as_object().expect("resources")
    }

    fn of_type<'a>(template: &'a Value, kind: &str) -> Vec<&'a Value> {
        resources(template)
            .values()
            .filter(|r| r["Type"] == kind)
            .collect()
    }

    #[test]
    fn every_ref_and_getatt_names_a_resource_of_the_same_template() {
        let s = settings();
        for side in Side::BOTH {
            let t = template(&s, side, &definitions());
            let known = resources(&t);
            for target in references(&t) {
                assert!(
                    known.contains_key(&target),
                    "{side:?}: {target} is referenced but not defined"
                );
            }
        }
    }

    #[test]
    fn names_derive_from_the_prefix() {
        let s = settings();
        let primary = primary_template(&s, &definition());
        let secondary = secondary_template(&s, &definition());
        let mut named = Vec::new();
        for t in [&primary, &secondary] {
            for r in resources(t).values() {
                for key in [
                    "BucketName",
                    "RoleName",
                    "TopicName",
                    "StateMachineName",
                    "AlarmName",
                    "Name",
                    "PolicyName",
                ] {
                    if let Some(Value::String(name)) = r["Properties"].get(key) {
                        named.push(name.clone());
                    }
                }
            }
        }
        assert!(named.len() >= 10, "{named:?}");
        for name in &named {
            assert!(name.starts_with("mwaa-dr-test-"), "{name}");
        }
        assert_eq!(
            of_type(&primary, "AWS::S3::Bucket")[0]["Properties"]["BucketName"],
            "mwaa-dr-test-backup-123456789012-us-east-1"
        );
        assert_eq!(s.names().stack(Side::Secondary), "mwaa-dr-test-secondary");
    }

    #[test]
    fn buckets_are_versioned_and_the_primary_replicates_to_the_secondary() {
        let s = settings();
        let primary = primary_template(&s, &definition());
        let secondary = secondary_template(&s, &definition());
        for t in [&primary, &secondary] {
            let bucket = of_type(t, "AWS::S3::Bucket")[0];
            assert_eq!(
                bucket["Properties"]["VersioningConfiguration"]["Status"],
                "Enabled"
            );
        }
        let rule = &of_type(&primary, "AWS::S3::Bucket")[0]["Properties"]["ReplicationConfiguration"]
            ["Rules"][0];
        assert_eq!(
            rule["Destination"]["Bucket"],
            "arn:aws:s3:::mwaa-dr-test-backup-123456789012-us-east-2"
        );
        assert!(
            of_type(&secondary, "AWS::S3::Bucket")[0]["Properties"]
                .get("ReplicationConfiguration")
                .is_none()
        );
    }

    fn actions(statements: &[Value]) -> Vec<String> {
        let mut out: Vec<String> = statements
            .iter()
            .flat_map(|s| match &s["Action"] {
                Value::String(a) => vec![a.clone()],
                Value::Array(list) => list
                    .iter()
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect(),
                _ => vec![],
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn the_workflow_role_holds_only_what_the_workflow_calls() {
        let mut s = same_region();
        s.creates_environment = false;
        assert_eq!(
            actions(&state_machine_statements(&s)),
            [
                "airflow:GetEnvironment",
                "airflow:InvokeRestApi",
                "cloudwatch:GetMetricData",
                "iam:PassRole",
                "s3:GetObject",
                "s3:ListBucket",
                "s3:PutObject",
                "scheduler:GetSchedule",
                "scheduler:UpdateSchedule",
                "sns:Publish",
            ]
        );
        s.creates_environment = true;
        let with_create = actions(&state_machine_statements(&s));
        assert!(with_create.contains(&"airflow:CreateEnvironment".to_string()));
        for statement in state_machine_statements(&s) {
            assert!(
                !statement.to_string().contains("\"*:*\""),
                "no wildcard action"
            );
            let Some(Value::String(action)) = statement.get("Action") else {
                continue;
            };
            if action == "iam:PassRole" {
                assert!(statement["Condition"]["StringEquals"]["iam:PassedToService"].is_string());
            }
        }
        // Only the environment's role may be passed to MWAA.
        let passes: Vec<_> = state_machine_statements(&s)
            .into_iter()
            .filter(|st| {
                st["Condition"]["StringEquals"]["iam:PassedToService"] == "airflow.amazonaws.com"
            })
            .collect();
        assert_eq!(
            passes[0]["Resource"][0],
            "arn:aws:iam::123456789012:role/service-role/secondary-role"
        );
    }

    #[test]
    fn the_schedule_follows_the_health_check_variables() {
        let mut s = same_region();
        s.health_check_enabled = false;
        s.health_check_interval_mins = 7;
        s.simulate_dr = true;
        s.schedule_name = Some("my-schedule".into());
        let t = secondary_template(&s, &definition());
        let schedule = &of_type(&t, "AWS::Scheduler::Schedule")[0]["Properties"];
        assert_eq!(schedule["ScheduleExpression"], "rate(7 minutes)");
        assert_eq!(schedule["State"], "DISABLED");
        assert_eq!(schedule["Name"], "my-schedule");
        assert_eq!(schedule["Target"]["Input"], r#"{"simulate_dr":"YES"}"#);
        let role = state_machine_statements(&s);
        assert!(role.iter().any(|st| st["Resource"][0]
            == "arn:aws:scheduler:us-east-1:123456789012:schedule/default/my-schedule"));
    }

    #[test]
    fn optional_resources_follow_their_variables() {
        let mut s = settings();
        let t = secondary_template(&s, &definition());
        let endpoint = &of_type(&t, "AWS::EC2::VPCEndpoint")[0]["Properties"];
        assert_eq!(endpoint["ServiceName"], "com.amazonaws.us-east-2.states");
        assert_eq!(endpoint["VpcId"], "vpc-1");
        let policy = &of_type(&t, "AWS::IAM::Policy")[0]["Properties"];
        assert_eq!(policy["Roles"][0], "secondary-role");
        assert!(policy.to_string().contains("states:SendTaskSuccess"));
        let topic = &of_type(&t, "AWS::SNS::Topic")[0]["Properties"];
        assert_eq!(topic["Subscription"][1]["Endpoint"], "dr@example.com");

        s.create_sfn_vpce = false;
        s.update_execution_role = false;
        s.notification_emails.clear();
        let t = secondary_template(&s, &definition());
        assert!(of_type(&t, "AWS::EC2::VPCEndpoint").is_empty());
        assert!(of_type(&t, "AWS::IAM::Policy").is_empty());
        assert!(
            of_type(&t, "AWS::SNS::Topic")[0]["Properties"]
                .get("Subscription")
                .is_none()
        );
        assert!(of_type(&primary_template(&s, &definition()), "AWS::IAM::Policy").is_empty());
    }

    #[test]
    fn the_definition_is_embedded_as_given() {
        let t = secondary_template(&settings(), &definition());
        let machine = &of_type(&t, "AWS::StepFunctions::StateMachine")[0]["Properties"];
        let embedded: Value =
            serde_json::from_str(machine["DefinitionString"].as_str().expect("string"))
                .expect("JSON");
        assert_eq!(embedded, definition());
    }

    #[test]
    fn a_bad_prefix_or_missing_network_is_refused_naming_the_variable() {
        for bad in ["", "Upper", "a--b", "-a", &"x".repeat(40)] {
            let mut s = settings();
            s.prefix = bad.to_string();
            let err = s.check().expect_err(bad).to_string();
            assert!(err.contains("STACK_NAME_PREFIX"), "{err}");
        }
        let mut s = settings();
        s.secondary.subnet_ids.clear();
        let err = s.check().expect_err("no subnets").to_string();
        assert!(err.contains("SECONDARY_SUBNET_IDS"), "{err}");
        let mut s = settings();
        s.secondary.execution_role_arn = Some("arn:aws:iam::1:user/x".into());
        let err = s.check().expect_err("not a role").to_string();
        assert!(err.contains("SECONDARY_MWAA_ROLE_ARN"), "{err}");
        settings().check().expect("valid");
    }

    #[test]
    fn role_names_come_from_the_arn_path() {
        assert_eq!(
            role_name("arn:aws:iam::123456789012:role/service-role/x-role"),
            Some("x-role")
        );
        assert_eq!(
            role_name("arn:aws:iam::123456789012:role/plain"),
            Some("plain")
        );
        assert_eq!(role_name("arn:aws:iam::123456789012:user/u"), None);
    }

    fn named<'a>(template: &'a Value, logical: &str) -> &'a Value {
        &template["Resources"][logical]["Properties"]
    }

    #[test]
    fn across_regions_an_alarm_on_the_forwarded_heartbeat_starts_the_workflow() {
        let mut s = settings();
        let t = secondary_template(&s, &definition());
        // No schedule: the rule the alarm fires carries its name.
        assert!(of_type(&t, "AWS::Scheduler::Schedule").is_empty());
        let arrivals = named(&t, "HeartbeatRule");
        assert_eq!(arrivals["Name"], "mwaa-dr-test-heartbeat-arrivals");
        assert_eq!(
            arrivals["EventPattern"],
            json!({"source": ["mwaa-dr"], "detail-type": ["primary healthy"], "detail": {"environment": ["env-primary"]}})
        );
        assert!(arrivals.get("Targets").is_none());
        let alarm = named(&t, "HeartbeatAlarm");
        assert_eq!(alarm["Namespace"], "AWS/Events");
        assert_eq!(alarm["MetricName"], "MatchedEvents");
        assert_eq!(
            alarm["Dimensions"],
            json!([{"Name": "RuleName", "Value": "mwaa-dr-test-heartbeat-arrivals"}])
        );
        assert_eq!(alarm["Statistic"], "Sum");
        assert_eq!(alarm["Period"], 300);
        assert_eq!(alarm["EvaluationPeriods"], 3);
        assert_eq!(alarm["DatapointsToAlarm"], 3);
        assert_eq!(alarm["ComparisonOperator"], "LessThanThreshold");
        assert_eq!(alarm["Threshold"], 1);
        assert_eq!(alarm["TreatMissingData"], "breaching");
        let trigger = named(&t, "FailoverTriggerRule");
        assert_eq!(trigger["Name"], s.schedule_name());
        assert_eq!(trigger["Name"], "mwaa-dr-test-scheduler");
        assert_eq!(trigger["State"], "ENABLED");
        let pattern = &trigger["EventPattern"];
        assert_eq!(
            pattern["resources"][0],
            "arn:aws:cloudwatch:us-east-2:123456789012:alarm:mwaa-dr-test-primary-heartbeat"
        );
        assert_eq!(pattern["detail"]["state"]["value"], json!(["ALARM"]));
        assert_eq!(pattern["detail"]["previousState"]["value"], json!(["OK"]));
        let target = &trigger["Targets"][0];
        assert_eq!(target["Arn"], json!({"Ref": "StateMachine"}));
        assert_eq!(
            target["RoleArn"],
            json!({"Fn::GetAtt": ["FailoverTriggerRole", "Arn"]})
        );
        let input: Value =
            serde_json::from_str(target["Input"].as_str().expect("text")).expect("JSON");
        assert!(
            input["primary_unhealthy"]
                .as_str()
                .is_some_and(|r| r.contains("mwaa-dr-test-primary-heartbeat")),
            "{input}"
        );
        let role = named(&t, "FailoverTriggerRole");
        assert_eq!(
            role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"],
            "events.amazonaws.com"
        );
        assert_eq!(
            role["Policies"][0]["PolicyDocument"]["Statement"],
            json!([{"Effect": "Allow", "Action": ["states:StartExecution"], "Resource": ["arn:aws:states:us-east-2:123456789012:stateMachine:mwaa-dr-test-state-machine"]}])
        );
        assert_eq!(
            t["Outputs"]["ScheduleName"]["Value"],
            json!({"Ref": "FailoverTriggerRule"})
        );

        // HEALTH_CHECK_ENABLED=NO: the rule is created disabled; one look still means two
        // periods (a heartbeat late by a second must not count as a miss).
        s.health_check_enabled = false;
        s.health_check_looks = 1;
        s.health_check_interval_mins = 2;
        let t = secondary_template(&s, &definition());
        assert_eq!(named(&t, "FailoverTriggerRule")["State"], "DISABLED");
        assert_eq!(named(&t, "HeartbeatAlarm")["EvaluationPeriods"], 2);
        assert_eq!(named(&t, "HeartbeatAlarm")["Period"], 120);
    }

    #[test]
    fn across_regions_the_primary_runs_the_heartbeat_and_forwards_its_events() {
        let mut s = settings();
        s.creates_environment = false;
        let heartbeat = json!({"StartAt": "Look", "States": {"Look": {"Type": "Succeed"}}});
        let t = primary_template(&s, &heartbeat);
        let machine = named(&t, "HeartbeatStateMachine");
        assert_eq!(machine["StateMachineName"], "mwaa-dr-test-heartbeat");
        assert_eq!(
            serde_json::from_str::<Value>(machine["DefinitionString"].as_str().expect("text"))
                .expect("JSON"),
            heartbeat
        );
        let schedule = named(&t, "HeartbeatSchedule");
        assert_eq!(schedule["Name"], "mwaa-dr-test-heartbeat-schedule");
        assert_eq!(schedule["ScheduleExpression"], "rate(5 minutes)");
        assert_eq!(schedule["State"], "ENABLED");
        assert_eq!(
            schedule["Target"]["Arn"],
            json!({"Ref": "HeartbeatStateMachine"})
        );
        assert_eq!(
            named(&t, "HeartbeatSchedulerRole")["Policies"][0]["PolicyDocument"]["Statement"],
            json!([{"Effect": "Allow", "Action": ["states:StartExecution"], "Resource": [{"Ref": "HeartbeatStateMachine"}]}])
        );
        let forward = named(&t, "HeartbeatForwardRule");
        let secondary = secondary_template(&s, &definition());
        assert_eq!(
            forward["EventPattern"],
            named(&secondary, "HeartbeatRule")["EventPattern"]
        );
        assert_eq!(
            forward["Targets"][0]["Arn"],
            "arn:aws:events:us-east-2:123456789012:event-bus/default"
        );
        assert_eq!(
            forward["Targets"][0]["RoleArn"],
            json!({"Fn::GetAtt": ["HeartbeatForwardRole", "Arn"]})
        );
        assert_eq!(
            named(&t, "HeartbeatForwardRole")["Policies"][0]["PolicyDocument"]["Statement"],
            json!([{"Effect": "Allow", "Action": ["events:PutEvents"], "Resource": ["arn:aws:events:us-east-2:123456789012:event-bus/default"]}])
        );
        // The heartbeat's role: read, announce; Backup-Restore also saves the definition in
        // this Region's bucket (replicated to the secondary's).
        assert_eq!(
            actions(&heartbeat_statements(&s)),
            ["cloudwatch:GetMetricData", "events:PutEvents"]
        );
        assert_eq!(
            heartbeat_statements(&s)[1]["Resource"],
            json!(["arn:aws:events:us-east-1:123456789012:event-bus/default"])
        );
        s.creates_environment = true;
        let br = heartbeat_statements(&s);
        assert_eq!(
            actions(&br),
            [
                "airflow:GetEnvironment",
                "cloudwatch:GetMetricData",
                "events:PutEvents",
                "s3:PutObject"
            ]
        );
        assert_eq!(
            br[2]["Resource"],
            json!(["arn:aws:airflow:us-east-1:123456789012:environment/env-primary"])
        );
        assert_eq!(
            br[3]["Resource"],
            json!(["arn:aws:s3:::mwaa-dr-test-backup-123456789012-us-east-1/*"])
        );
    }

    #[test]
    fn across_regions_the_workflow_reads_nothing_of_the_primary_and_disables_the_rule() {
        let mut s = settings();
        s.creates_environment = false;
        assert_eq!(
            actions(&state_machine_statements(&s)),
            [
                "airflow:GetEnvironment",
                "airflow:InvokeRestApi",
                "events:DisableRule",
                "s3:GetObject",
                "s3:ListBucket",
                "sns:Publish",
            ]
        );
        let statements = state_machine_statements(&s);
        let disable = statements
            .iter()
            .find(|st| st["Action"][0] == "events:DisableRule")
            .expect("DisableRule");
        assert_eq!(
            disable["Resource"],
            json!(["arn:aws:events:us-east-2:123456789012:rule/mwaa-dr-test-scheduler"])
        );
        assert!(
            !statements
                .iter()
                .any(|st| st.to_string().contains("env-primary")),
            "the primary is not touched from here"
        );
    }

    #[test]
    fn in_one_region_nothing_crosses_regions() {
        let s = same_region();
        let primary = primary_template(&s, &definition());
        assert!(of_type(&primary, "AWS::StepFunctions::StateMachine").is_empty());
        assert!(of_type(&primary, "AWS::Events::Rule").is_empty());
        let secondary = secondary_template(&s, &definition());
        assert!(of_type(&secondary, "AWS::CloudWatch::Alarm").is_empty());
        assert_eq!(
            of_type(&secondary, "AWS::Scheduler::Schedule")[0]["Properties"]["State"],
            "ENABLED"
        );
        assert_eq!(
            of_type(&secondary, "AWS::Events::Rule").len(),
            1,
            "only the failure rule"
        );
    }

    #[test]
    fn an_alarm_longer_than_cloudwatch_allows_is_refused_naming_the_variables() {
        let mut s = settings();
        s.health_check_interval_mins = 30;
        s.health_check_looks = 49;
        let err = s.check().expect_err("a day and a half").to_string();
        assert!(err.contains("HEALTH_CHECK_INTERVAL_MINS"), "{err}");
        assert!(err.contains("HEALTH_CHECK_MAX_RETRY"), "{err}");
        s.health_check_looks = 48;
        s.check().expect("one day");
        s.health_check_interval_mins = 60;
        s.health_check_looks = 168;
        s.check().expect("seven days with hourly periods");
        // In one Region there is no alarm.
        let mut s = same_region();
        s.health_check_interval_mins = 30;
        s.health_check_looks = 49;
        s.check().expect("no alarm");
    }
}
