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

use serde_json::{Value, json};

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
}

impl StackSettings {
    /// Whether the schedule runs the workflow unattended. Step Functions' SDK integrations
    /// reach only the state machine's own Region, so a machine in the secondary Region cannot
    /// read a primary in another Region: it would find no heartbeat and fail over on every
    /// run. Across Regions the schedule is created disabled, whatever HEALTH_CHECK_ENABLED
    /// says, and the workflow is started by `failover --via-step-functions`, which checks the
    /// primary's health from outside first.
    pub fn schedule_enabled(&self) -> bool {
        self.health_check_enabled && self.primary.region == self.secondary.region
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

/// The primary Region's template.
pub fn primary_template(settings: &StackSettings) -> Value {
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
    json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!("mwaa-dr {}: primary Region ({}): backup bucket replicated to {}, notifications", settings.prefix, settings.primary.region, settings.secondary.region),
        "Resources": resources,
        "Outputs": {
            "BackupBucketName": output(json!({"Ref": "BackupBucket"}), "The backup store's bucket in this Region (DR_BACKUP_BUCKET of the primary's DAGs)"),
            "NotificationTopicArn": output(json!({"Ref": "NotificationTopic"}), "The topic a failed backup notifies (DR_SNS_TOPIC_ARN)"),
        },
    })
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
        statement(
            &["airflow:InvokeRestApi"],
            json!([
                environment_arn(account, secondary),
                format!(
                    "arn:aws:airflow:{}:{account}:role/{}/*",
                    secondary.region, secondary.environment_name
                ),
            ]),
        ),
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
    resources.insert(
        "SchedulerRole".into(),
        scheduler_role(&names, &secondary.region),
    );
    resources.insert(
        "HealthCheckSchedule".into(),
        health_check_schedule(settings),
    );
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
    json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!("mwaa-dr {}: secondary Region ({}): failover workflow, health-check schedule, notifications, backup bucket", settings.prefix, secondary.region),
        "Resources": resources,
        "Outputs": {
            "BackupBucketName": output(json!({"Ref": "BackupBucket"}), "The backup store's bucket in this Region (replica of the primary's)"),
            "StateMachineArn": output(json!({"Ref": "StateMachine"}), "The failover workflow"),
            "ScheduleName": output(json!({"Ref": "HealthCheckSchedule"}), "The health-check schedule (HEALTH_CHECK_SCHEDULE_NAME)"),
            "NotificationTopicArn": output(json!({"Ref": "NotificationTopic"}), "The topic of failover outcomes (DR_SNS_TOPIC_ARN)"),
        },
    })
}

/// The role the failover workflow runs as, holding [`state_machine_statements`].
fn state_machine_role(settings: &StackSettings) -> Value {
    json!({
        "Type": "AWS::IAM::Role",
        "Properties": {
            "RoleName": settings.names().state_machine_role(),
            "AssumeRolePolicyDocument": trust("states.amazonaws.com"),
            "Policies": [{
                "PolicyName": "failover-workflow",
                "PolicyDocument": policy(state_machine_statements(settings)),
            }],
        },
    })
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
    json!({
        "Type": "AWS::IAM::Role",
        "Properties": {
            "RoleName": names.scheduler_role(),
            "AssumeRolePolicyDocument": trust("scheduler.amazonaws.com"),
            "Policies": [{
                "PolicyName": "start-failover-workflow",
                "PolicyDocument": policy(vec![statement(
                    &["states:StartExecution"],
                    json!([names.state_machine_arn(region)]),
                )]),
            }],
        },
    })
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
            "ScheduleExpression": format!("rate({} {})", settings.health_check_interval_mins, if settings.health_check_interval_mins == 1 { "minute" } else { "minutes" }),
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "State": if settings.schedule_enabled() { "ENABLED" } else { "DISABLED" },
            "Target": {
                "Arn": {"Ref": "StateMachine"},
                "RoleArn": {"Fn::GetAtt": ["SchedulerRole", "Arn"]},
                "Input": json!({"simulate_dr": simulate}).to_string(),
            },
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

/// The template of `side`.
pub fn template(settings: &StackSettings, side: Side, definition: &Value) -> Value {
    match side {
        Side::Primary => primary_template(settings),
        Side::Secondary => secondary_template(settings, definition),
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
        }
    }

    fn definition() -> Value {
        json!({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
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
            let t = template(&s, side, &definition());
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
        let primary = primary_template(&s);
        let secondary = secondary_template(&s, &definition());
        let mut named = Vec::new();
        for t in [&primary, &secondary] {
            for r in resources(t).values() {
                for key in [
                    "BucketName",
                    "RoleName",
                    "TopicName",
                    "StateMachineName",
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
        let primary = primary_template(&s);
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
        let mut s = settings();
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
        let mut s = settings();
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
            == "arn:aws:scheduler:us-east-2:123456789012:schedule/default/my-schedule"));
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
        assert!(of_type(&primary_template(&s), "AWS::IAM::Policy").is_empty());
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

    #[test]
    fn across_regions_the_schedule_is_created_disabled() {
        let mut s = settings();
        s.health_check_enabled = true;
        s.secondary.region = s.primary.region.clone();
        assert!(s.schedule_enabled());
        s.secondary.region = format!("{}-other", s.primary.region);
        assert!(!s.schedule_enabled());
    }
}
