//! The health-check schedule: an EventBridge Scheduler schedule, or an EventBridge rule.

use async_trait::async_trait;
use aws_sdk_scheduler::error::SdkError;
use aws_sdk_scheduler::types::ScheduleState;
use serde::Serialize;

use super::{endpoint_override, sdk_config, sdk_error};
use crate::error::{Error, Result};
use crate::model::AwsTimeouts;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disabled {
    /// It was enabled and is now disabled.
    Now,
    /// It was disabled already.
    Already,
}

#[async_trait]
pub trait Schedules: Send + Sync {
    /// Disables the schedule (or rule) `name`; an error when neither exists.
    async fn disable(&self, name: &str) -> Result<Disabled>;
}

pub struct AwsSchedules {
    scheduler: aws_sdk_scheduler::Client,
    events: aws_sdk_eventbridge::Client,
}

impl AwsSchedules {
    pub async fn new(region: Option<&str>, timeouts: &AwsTimeouts) -> Self {
        let shared = sdk_config(region, timeouts).await;
        let mut scheduler = aws_sdk_scheduler::config::Builder::from(&shared);
        if let Some(endpoint) = endpoint_override(&shared, "SCHEDULER") {
            scheduler = scheduler.endpoint_url(endpoint);
        }
        let mut events = aws_sdk_eventbridge::config::Builder::from(&shared);
        if let Some(endpoint) = endpoint_override(&shared, "EVENTBRIDGE") {
            events = events.endpoint_url(endpoint);
        }
        AwsSchedules {
            scheduler: aws_sdk_scheduler::Client::from_conf(scheduler.build()),
            events: aws_sdk_eventbridge::Client::from_conf(events.build()),
        }
    }

    /// Disables the EventBridge rule `name`; `None` when there is no such rule.
    pub async fn disable_rule(&self, name: &str) -> Result<Option<Disabled>> {
        let rule = match self.events.describe_rule().name(name).send().await {
            Ok(rule) => rule,
            Err(aws_sdk_eventbridge::error::SdkError::ServiceError(e))
                if e.err().is_resource_not_found_exception() =>
            {
                return Ok(None);
            }
            Err(e) => {
                return Err(sdk_error(
                    "DescribeRule",
                    format!("EventBridge rule {name}"),
                    e,
                ));
            }
        };
        if rule.state().map(|s| s.as_str()) == Some("DISABLED") {
            return Ok(Some(Disabled::Already));
        }
        self.events
            .disable_rule()
            .name(name)
            .send()
            .await
            .map_err(|e| sdk_error("DisableRule", format!("EventBridge rule {name}"), e))?;
        Ok(Some(Disabled::Now))
    }
}

#[async_trait]
impl Schedules for AwsSchedules {
    async fn disable(&self, name: &str) -> Result<Disabled> {
        let resource = || format!("EventBridge Scheduler schedule {name}");
        let schedule = match self.scheduler.get_schedule().name(name).send().await {
            Ok(s) => s,
            Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => {
                return self.disable_rule(name).await?.ok_or_else(|| {
                    Error::failed(
                        "disable the health check",
                        name,
                        "no EventBridge Scheduler schedule and no EventBridge rule has this name (HEALTH_CHECK_SCHEDULE_NAME)",
                    )
                });
            }
            Err(e) => return Err(sdk_error("GetSchedule", resource(), e)),
        };
        if schedule.state() == Some(&ScheduleState::Disabled) {
            return Ok(Disabled::Already);
        }
        // UpdateSchedule replaces the whole schedule: send back everything it had, with the
        // state DISABLED (always explicit: a missing state means ENABLED on AWS).
        self.scheduler
            .update_schedule()
            .name(name)
            .set_group_name(schedule.group_name().map(str::to_string))
            .set_schedule_expression(schedule.schedule_expression().map(str::to_string))
            .set_schedule_expression_timezone(
                schedule.schedule_expression_timezone().map(str::to_string),
            )
            .set_start_date(schedule.start_date().cloned())
            .set_end_date(schedule.end_date().cloned())
            .set_description(schedule.description().map(str::to_string))
            .set_flexible_time_window(schedule.flexible_time_window().cloned())
            .set_target(schedule.target().cloned())
            .set_kms_key_arn(schedule.kms_key_arn().map(str::to_string))
            .set_action_after_completion(schedule.action_after_completion().cloned())
            .state(ScheduleState::Disabled)
            .send()
            .await
            .map_err(|e| sdk_error("UpdateSchedule", resource(), e))?;
        Ok(Disabled::Now)
    }
}
