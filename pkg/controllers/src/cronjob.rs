//! The cronjob controller: creates a Job for each scheduled time of a CronJob (standard
//! five-field schedules and the `@yearly`..`@hourly` macros, in `spec.timeZone`), honouring
//! `concurrencyPolicy`, `startingDeadlineSeconds` and `suspend`, prunes finished Jobs beyond the
//! history limits, keeps `status.active`/`lastScheduleTime`/`lastSuccessfulTime`, and requeues
//! itself at the next scheduled time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use mini_runtime::owner::{controller_ref, is_controlled_by};
use mini_runtime::{EventRecorder, EventType};

use crate::job::finished_condition;
use crate::{Context, ControllerError};

/// The annotation with the time a Job was scheduled for.
pub(crate) const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// More missed start times than this are reported as `TooManyMissedTimes`.
const MAX_MISSED: usize = 100;

/// A parsed cron schedule: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Schedule {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    /// The day-of-month or day-of-week field was `*` or `?`: both must then match (otherwise
    /// either may), as in Vixie cron and robfig/cron.
    dom_star: bool,
    dow_star: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn parse_value(s: &str, names: &[&str], offset: u32) -> Result<u32, String> {
    if let Ok(v) = s.parse::<u32>() {
        return Ok(v);
    }
    let lower = s.to_ascii_lowercase();
    names
        .iter()
        .position(|n| *n == lower)
        .map(|i| i as u32 + offset)
        .ok_or_else(|| format!("failed to parse int from {s}"))
}

/// Parses one field into a bit set; returns whether it was `*`/`?`.
fn parse_field(
    field: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_offset: u32,
) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step = s
                    .parse::<u32>()
                    .map_err(|_| format!("failed to parse int from {s}"))?;
                if step == 0 {
                    return Err(format!("step of range should be a positive number: {item}"));
                }
                (r, Some(step))
            }
            None => (item, None),
        };
        let (start, end) = if range == "*" || range == "?" {
            star = step.is_none_or(|s| s == 1);
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (
                parse_value(a, names, name_offset)?,
                parse_value(b, names, name_offset)?,
            )
        } else {
            let v = parse_value(range, names, name_offset)?;
            (v, if step.is_some() { max } else { v })
        };
        // Sunday may be written 7.
        let (start, end) = if max == 6 && end == 7 {
            if start == 7 {
                bits |= 1;
                continue;
            }
            bits |= 1;
            (start, 6)
        } else {
            (start, end)
        };
        if start < min || end > max || start > end {
            return Err(format!(
                "invalid range {item}: values must be within {min}-{max}"
            ));
        }
        let step = step.unwrap_or(1);
        let mut v = start;
        while v <= end {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

impl Schedule {
    /// Parses a standard five-field schedule or one of the `@` macros.
    pub(crate) fn parse(s: &str) -> Result<Schedule, String> {
        let s = s.trim();
        let expr = match s {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(format!("unrecognized descriptor: {other}"))
            }
            other => other,
        };
        let fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: {s}",
                fields.len()
            ));
        }
        let (minute, _) = parse_field(fields[0], 0, 59, &[], 0)?;
        let (hour, _) = parse_field(fields[1], 0, 23, &[], 0)?;
        let (dom, dom_star) = parse_field(fields[2], 1, 31, &[], 0)?;
        let (month, _) = parse_field(fields[3], 1, 12, &MONTHS, 1)?;
        let (dow, dow_star) = parse_field(fields[4], 0, 6, &DAYS, 0)?;
        Ok(Schedule {
            minute,
            hour,
            dom,
            month,
            dow,
            dom_star,
            dow_star,
        })
    }

    fn day_matches(&self, dt: DateTime) -> bool {
        let dom = self.dom & (1 << dt.day()) != 0;
        let dow = self.dow & (1 << dt.weekday().to_sunday_zero_offset()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first scheduled time strictly after `t`, with the schedule read in `tz`; `None` if
    /// there is none within five years (e.g. `0 0 30 2 *`).
    pub(crate) fn next_after(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = tz.to_datetime(t);
        let mut dt = local
            .date()
            .at(local.hour(), local.minute(), 0, 0)
            .checked_add(1.minute())
            .ok()?;
        let limit = dt.year() + 5;
        loop {
            if dt.year() > limit {
                return None;
            }
            if self.month & (1 << dt.month()) == 0 {
                dt = dt
                    .date()
                    .first_of_month()
                    .checked_add(1.month())
                    .ok()?
                    .at(0, 0, 0, 0);
                continue;
            }
            if !self.day_matches(dt) {
                dt = dt.date().tomorrow().ok()?.at(0, 0, 0, 0);
                continue;
            }
            if self.hour & (1 << dt.hour()) == 0 {
                dt = dt
                    .date()
                    .at(dt.hour(), 0, 0, 0)
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if self.minute & (1 << dt.minute()) == 0 {
                dt = dt.checked_add(1.minute()).ok()?;
                continue;
            }
            let ts = tz.to_timestamp(dt).ok()?;
            if ts > t {
                return Some(ts);
            }
            dt = dt.checked_add(1.minute()).ok()?;
        }
    }
}

/// The most recent scheduled time in `(earliest, now]` and how many there are (counting stops
/// past [`MAX_MISSED`]).
pub(crate) fn missed_schedules(
    sched: &Schedule,
    tz: &TimeZone,
    earliest: Timestamp,
    now: Timestamp,
) -> (Option<Timestamp>, usize) {
    let mut count = 0;
    let mut last = None;
    let mut t = earliest;
    while let Some(next) = sched.next_after(t, tz).filter(|n| *n <= now) {
        count += 1;
        last = Some(next);
        t = next;
        if count > MAX_MISSED {
            break;
        }
    }
    if count <= MAX_MISSED {
        return (last, count);
    }
    // Too many to walk: find the most recent one in windows growing back from now.
    for window in [
        3_600i64,
        86_400,
        32 * 86_400,
        367 * 86_400,
        5 * 366 * 86_400,
    ] {
        let from = Timestamp::from_second(now.as_second() - window)
            .unwrap_or(earliest)
            .max(t);
        let mut t = from;
        let mut found = None;
        while let Some(next) = sched.next_after(t, tz).filter(|n| *n <= now) {
            found = Some(next);
            t = next;
        }
        if found.is_some() {
            return (found, count);
        }
    }
    (last, count)
}

/// The Job name for a scheduled time: `<cronjob>-<minutes since the epoch>`.
pub(crate) fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// `spec.timeZone` (UTC when unset).
pub(crate) fn time_zone(name: Option<&str>) -> Result<TimeZone, String> {
    match name {
        None | Some("") | Some("UTC") | Some("Etc/UTC") => Ok(TimeZone::UTC),
        Some(n) => TimeZone::get(n).map_err(|e| format!("unknown time zone {n}: {e}")),
    }
}

/// RFC 3339 in `tz`, `Z` for UTC (Go's `time.RFC3339`).
fn format_rfc3339(t: Timestamp, tz: &TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    if z.offset().seconds() == 0 {
        t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// What the schedule asks for at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Due {
    /// The scheduled time to start a Job for (the most recent missed one).
    pub scheduled: Option<Timestamp>,
    /// Missed start times counted (more than [`MAX_MISSED`] → `TooManyMissedTimes`).
    pub missed: usize,
    /// The most recent one is older than `startingDeadlineSeconds`.
    pub too_late: bool,
    /// The next scheduled time after `now`.
    pub next: Option<Timestamp>,
}

/// The pure scheduling decision for `cj` at `now`.
pub(crate) fn due(cj: &CronJob, sched: &Schedule, tz: &TimeZone, now: Timestamp) -> Due {
    let spec = cj.spec.as_ref();
    let created = cj
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    let mut earliest = cj
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref())
        .map(|t| t.0)
        .unwrap_or(created);
    let deadline = spec.and_then(|s| s.starting_deadline_seconds);
    if let Some(sds) = deadline {
        if let Ok(from) = Timestamp::from_second(now.as_second() - sds) {
            earliest = earliest.max(from);
        }
    }
    let (scheduled, missed) = if earliest > now {
        (None, 0)
    } else {
        missed_schedules(sched, tz, earliest, now)
    };
    let too_late = match (scheduled, deadline) {
        (Some(s), Some(sds)) => s.as_second() + sds < now.as_second(),
        _ => false,
    };
    Due {
        scheduled,
        missed,
        too_late,
        next: sched.next_after(now, tz),
    }
}

struct State {
    client: kube::Client,
    recorder: EventRecorder,
}

pub(crate) async fn run(ctx: Arc<Context>) -> Result<(), ControllerError> {
    let state = Arc::new(State {
        client: ctx.client.clone(),
        recorder: EventRecorder::new(ctx.client.clone(), "cronjob-controller"),
    });
    Controller::new(
        Api::<CronJob>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Job>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
    .run(reconcile, error_policy, state)
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "cronjob reconcile failed");
        }
    })
    .await;
    Ok(())
}

fn error_policy(cj: Arc<CronJob>, err: &ControllerError, _: Arc<State>) -> Action {
    tracing::warn!(cronjob = %cj.name_any(), error = %err, "syncing cronjob failed");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(cj: Arc<CronJob>, st: Arc<State>) -> Result<Action, ControllerError> {
    sync(&cj, &st, Timestamp::now()).await
}

fn job_ref(job: &Job) -> ObjectReference {
    let mut r = job.object_ref(&());
    r.api_version = Some("batch/v1".into());
    r.kind = Some("Job".into());
    r
}

fn start_time(job: &Job) -> Option<Timestamp> {
    job.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .or(job.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
}

fn requeue_at(next: Option<Timestamp>, now: Timestamp) -> Action {
    match next {
        Some(n) => {
            let ms = (n.as_millisecond() - now.as_millisecond()).max(0) as u64 + 100;
            Action::requeue(Duration::from_millis(ms))
        }
        None => Action::await_change(),
    }
}

async fn event(st: &State, cj: &CronJob, type_: EventType, reason: &str, message: &str) {
    if let Err(e) = st
        .recorder
        .record(&cj.object_ref(&()), type_, reason, message)
        .await
    {
        tracing::debug!(error = %e, reason, "recording cronjob event failed");
    }
}

async fn delete_job(api: &Api<Job>, name: &str) -> Result<(), ControllerError> {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// One reconcile of `cj` at `now` (injectable for tests).
async fn sync(cj: &CronJob, st: &State, now: Timestamp) -> Result<Action, ControllerError> {
    let Some(uid) = cj.uid() else {
        return Ok(Action::await_change());
    };
    let name = cj.name_any();
    let ns = cj.namespace().unwrap_or_else(|| "default".into());
    let jobs_api: Api<Job> = Api::namespaced(st.client.clone(), &ns);
    let spec = cj.spec.clone().unwrap_or_default();
    let old_status = cj.status.clone().unwrap_or_default();
    let jobs: Vec<Job> = jobs_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|j| is_controlled_by(&j.metadata, &uid))
        .collect();

    // Reconcile the active list with the Jobs that exist.
    let mut active: Vec<ObjectReference> = old_status
        .active
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| jobs.iter().any(|j| j.uid() == r.uid))
        .collect();
    let mut last_successful = old_status.last_successful_time.as_ref().map(|t| t.0);
    for job in &jobs {
        let in_active = active.iter().any(|r| r.uid == job.uid());
        match finished_condition(job.status.as_ref()) {
            Some(cond) if in_active => {
                active.retain(|r| r.uid != job.uid());
                event(
                    st,
                    cj,
                    EventType::Normal,
                    "SawCompletedJob",
                    &format!(
                        "Saw completed job: {}, condition: {}",
                        job.name_any(),
                        cond.type_
                    ),
                )
                .await;
                if cond.type_ == "Complete" {
                    let done = job
                        .status
                        .as_ref()
                        .and_then(|s| s.completion_time.as_ref())
                        .map(|t| t.0);
                    if let Some(done) = done {
                        last_successful = Some(last_successful.map_or(done, |l| l.max(done)));
                    }
                }
            }
            // Created by us before a restart lost the status update.
            None if !in_active
                && job.metadata.deletion_timestamp.is_none()
                && job.annotations().contains_key(SCHEDULED_TIMESTAMP) =>
            {
                active.push(job_ref(job));
            }
            _ => {}
        }
    }

    // Prune finished Jobs beyond the history limits, oldest first.
    let mut pruned = Vec::new();
    for (type_, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let mut finished: Vec<&Job> = jobs
            .iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .filter(|j| finished_condition(j.status.as_ref()).is_some_and(|c| c.type_ == type_))
            .collect();
        let limit = limit.max(0) as usize;
        if finished.len() > limit {
            finished.sort_by_key(|j| start_time(j));
            for job in &finished[..finished.len() - limit] {
                delete_job(&jobs_api, &job.name_any()).await?;
                event(
                    st,
                    cj,
                    EventType::Normal,
                    "SuccessfulDelete",
                    &format!("Deleted job {}", job.name_any()),
                )
                .await;
                pruned.push(job.uid());
            }
        }
    }
    active.retain(|r| !pruned.contains(&r.uid));

    let mut last_schedule = old_status.last_schedule_time.as_ref().map(|t| t.0);
    let action = if cj.metadata.deletion_timestamp.is_some() || spec.suspend == Some(true) {
        Action::await_change()
    } else {
        schedule(
            cj,
            st,
            &jobs_api,
            &spec,
            &mut active,
            &mut last_schedule,
            now,
        )
        .await?
    };

    let status = serde_json::json!({
        "status": {
            "active": if active.is_empty() { serde_json::Value::Null } else { serde_json::to_value(&active).unwrap_or_default() },
            "lastScheduleTime": last_schedule.map(|t| t.to_string()),
            "lastSuccessfulTime": last_successful.map(|t| t.to_string()),
        }
    });
    let old = serde_json::json!({
        "status": {
            "active": old_status.active.as_ref().filter(|a| !a.is_empty()).map(|a| serde_json::to_value(a).unwrap_or_default()),
            "lastScheduleTime": old_status.last_schedule_time.as_ref().map(|t| t.0.to_string()),
            "lastSuccessfulTime": old_status.last_successful_time.as_ref().map(|t| t.0.to_string()),
        }
    });
    if status != old {
        let api: Api<CronJob> = Api::namespaced(st.client.clone(), &ns);
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
    }
    Ok(action)
}

/// Starts the Job due at `now`, if any, and says when to look again.
async fn schedule(
    cj: &CronJob,
    st: &State,
    jobs_api: &Api<Job>,
    spec: &k8s_openapi::api::batch::v1::CronJobSpec,
    active: &mut Vec<ObjectReference>,
    last_schedule: &mut Option<Timestamp>,
    now: Timestamp,
) -> Result<Action, ControllerError> {
    let name = cj.name_any();
    let tz = match time_zone(spec.time_zone.as_deref()) {
        Ok(tz) => tz,
        Err(e) => {
            event(st, cj, EventType::Warning, "UnknownTimeZone", &e).await;
            return Ok(Action::await_change());
        }
    };
    let sched = match Schedule::parse(&spec.schedule) {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("unparseable schedule: {}: {e}", spec.schedule);
            event(st, cj, EventType::Warning, "UnparseableSchedule", &msg).await;
            return Ok(Action::await_change());
        }
    };
    let due = due(cj, &sched, &tz, now);
    if due.missed > MAX_MISSED {
        event(
            st,
            cj,
            EventType::Warning,
            "TooManyMissedTimes",
            "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew",
        )
        .await;
    }
    let next = requeue_at(due.next, now);
    let Some(scheduled) = due.scheduled else {
        return Ok(next);
    };
    if due.too_late {
        let msg = format!(
            "Missed scheduled time to start a job: {}",
            format_rfc3339(scheduled, &tz)
        );
        event(st, cj, EventType::Warning, "MissSchedule", &msg).await;
        return Ok(next);
    }
    let job_name = job_name(&name, scheduled);
    if *last_schedule == Some(scheduled)
        || active.iter().any(|r| r.name.as_deref() == Some(&job_name))
    {
        return Ok(next);
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !active.is_empty() => {
            event(
                st,
                cj,
                EventType::Normal,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid",
            )
            .await;
            return Ok(next);
        }
        Some("Replace") => {
            for r in std::mem::take(active) {
                let Some(old) = r.name else { continue };
                delete_job(jobs_api, &old).await?;
                event(
                    st,
                    cj,
                    EventType::Normal,
                    "SuccessfulDelete",
                    &format!("Deleted job {old}"),
                )
                .await;
            }
        }
        _ => {}
    }

    let template = spec.job_template.clone();
    let mut meta = template.metadata.unwrap_or_default();
    meta.name = Some(job_name.clone());
    meta.generate_name = None;
    meta.namespace = cj.namespace();
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(SCHEDULED_TIMESTAMP.into(), format_rfc3339(scheduled, &tz));
    meta.owner_references = Some(vec![controller_ref(cj)]);
    let job = Job {
        metadata: meta,
        spec: template.spec,
        status: None,
    };
    let created = match jobs_api.create(&PostParams::default(), &job).await {
        Ok(j) => {
            event(
                st,
                cj,
                EventType::Normal,
                "SuccessfulCreate",
                &format!("Created job {job_name}"),
            )
            .await;
            j
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = jobs_api.get(&job_name).await?;
            if !is_controlled_by(&existing.metadata, &cj.uid().unwrap_or_default()) {
                return Err(ControllerError::Other(format!(
                    "job {job_name} already exists and is not owned by the cronjob"
                )));
            }
            existing
        }
        Err(kube::Error::Api(e)) => {
            event(
                st,
                cj,
                EventType::Warning,
                "FailedCreate",
                &format!("Error creating job: {}", e.message),
            )
            .await;
            return Err(kube::Error::Api(e).into());
        }
        Err(e) => return Err(e.into()),
    };
    if finished_condition(created.status.as_ref()).is_none()
        && !active.iter().any(|r| r.uid == created.uid())
    {
        active.push(job_ref(&created));
    }
    *last_schedule = Some(scheduled);
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mini_testenv::TestEnv;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn cronjob(schedule: &str, created: &str, extra: serde_json::Value) -> CronJob {
        let mut spec = serde_json::json!({
            "schedule": schedule,
            "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]
            }}}}
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "cj", "namespace": "default", "creationTimestamp": created},
            "spec": spec,
        }))
        .expect("cronjob json")
    }

    #[test]
    fn schedule_every_minute_fires_at_the_next_minute_boundary() {
        let s = Schedule::parse("* * * * *").expect("parse");
        let next = s.next_after(ts("2024-05-01T10:15:42Z"), &TimeZone::UTC);
        assert_eq!(next, Some(ts("2024-05-01T10:16:00Z")));
        assert_eq!(
            s.next_after(ts("2024-05-01T10:16:00Z"), &TimeZone::UTC),
            Some(ts("2024-05-01T10:17:00Z"))
        );
    }

    #[test]
    fn schedule_fields_ranges_steps_names_and_macros_parse() {
        let utc = TimeZone::UTC;
        let s = Schedule::parse("*/15 9-17 * * MON-FRI").expect("parse");
        // Saturday 2024-05-04 → Monday 09:00.
        assert_eq!(
            s.next_after(ts("2024-05-03T17:50:00Z"), &utc),
            Some(ts("2024-05-06T09:00:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2024-05-06T09:00:00Z"), &utc),
            Some(ts("2024-05-06T09:15:00Z"))
        );
        let monthly = Schedule::parse("@monthly").expect("parse");
        assert_eq!(
            monthly.next_after(ts("2024-01-31T12:00:00Z"), &utc),
            Some(ts("2024-02-01T00:00:00Z"))
        );
        let yearly = Schedule::parse("@yearly").expect("parse");
        assert_eq!(
            yearly.next_after(ts("2024-03-01T00:00:00Z"), &utc),
            Some(ts("2025-01-01T00:00:00Z"))
        );
        let weekly = Schedule::parse("@weekly").expect("parse");
        assert_eq!(
            weekly.next_after(ts("2024-05-01T00:00:00Z"), &utc),
            Some(ts("2024-05-05T00:00:00Z"))
        );
        assert_eq!(Schedule::parse("0 0 * * 7"), Schedule::parse("0 0 * * 0"));
        assert_eq!(
            Schedule::parse("0 0 * JAN,feb *"),
            Schedule::parse("0 0 * 1-2 *")
        );
        // Day of month OR day of week when both are restricted.
        let either = Schedule::parse("0 0 13 * 5").expect("parse");
        assert_eq!(
            either.next_after(ts("2024-05-01T00:00:00Z"), &utc),
            Some(ts("2024-05-03T00:00:00Z"))
        );
        assert_eq!(
            either.next_after(ts("2024-05-10T00:00:00Z"), &utc),
            Some(ts("2024-05-13T00:00:00Z"))
        );
        assert_eq!(
            Schedule::parse("0 0 30 2 *")
                .expect("parse")
                .next_after(ts("2024-01-01T00:00:00Z"), &utc),
            None
        );
        for bad in [
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "*/0 * * * *",
            "@every 5m",
            "a * * * *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn timezone_schedule_nine_in_paris_is_utc_seven_in_summer_and_eight_in_winter() {
        let paris = time_zone(Some("Europe/Paris")).expect("tz");
        let s = Schedule::parse("0 9 * * *").expect("parse");
        assert_eq!(
            s.next_after(ts("2024-07-01T06:00:00Z"), &paris),
            Some(ts("2024-07-01T07:00:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2024-07-01T07:00:00Z"), &paris),
            Some(ts("2024-07-02T07:00:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2024-01-15T10:00:00Z"), &paris),
            Some(ts("2024-01-16T08:00:00Z"))
        );
        assert_eq!(
            format_rfc3339(ts("2024-07-01T07:00:00Z"), &paris),
            "2024-07-01T09:00:00+02:00"
        );
        assert_eq!(
            format_rfc3339(ts("2024-07-01T07:00:00Z"), &TimeZone::UTC),
            "2024-07-01T07:00:00Z"
        );
        assert!(time_zone(Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn job_name_is_minutes_since_epoch() {
        assert_eq!(
            job_name("backup", ts("2024-05-01T10:16:00Z")),
            "backup-28575976"
        );
    }

    #[test]
    fn due_picks_most_recent_missed_time_and_counts_too_many() {
        let cj = cronjob("* * * * *", "2024-05-01T10:15:42Z", serde_json::json!({}));
        let s = Schedule::parse("* * * * *").expect("parse");
        let utc = TimeZone::UTC;
        let d = due(&cj, &s, &utc, ts("2024-05-01T10:15:59Z"));
        assert_eq!(
            (d.scheduled, d.next),
            (None, Some(ts("2024-05-01T10:16:00Z")))
        );
        let d = due(&cj, &s, &utc, ts("2024-05-01T10:18:30Z"));
        assert_eq!(
            (d.scheduled, d.missed),
            (Some(ts("2024-05-01T10:18:00Z")), 3)
        );
        // A day later: more than 100 missed, still the most recent one.
        let d = due(&cj, &s, &utc, ts("2024-05-02T10:18:30Z"));
        assert!(d.missed > MAX_MISSED);
        assert_eq!(d.scheduled, Some(ts("2024-05-02T10:18:00Z")));
        // A starting deadline bounds how far back missed times are looked for.
        let cj = cronjob(
            "0 * * * *",
            "2024-05-01T00:00:30Z",
            serde_json::json!({"startingDeadlineSeconds": 60}),
        );
        let hourly = Schedule::parse("0 * * * *").expect("parse");
        let d = due(&cj, &hourly, &utc, ts("2024-05-01T05:00:30Z"));
        assert_eq!(
            (d.scheduled, d.missed, d.too_late),
            (Some(ts("2024-05-01T05:00:00Z")), 1, false)
        );
        let d = due(&cj, &hourly, &utc, ts("2024-05-01T05:02:00Z"));
        assert_eq!(d.scheduled, None);
    }

    async fn setup(policy: &str, extra: serde_json::Value) -> (TestEnv, State, CronJob) {
        let env = TestEnv::start().await;
        let st = State {
            client: env.controllers_client(),
            recorder: EventRecorder::new(env.controllers_client(), "cronjob-controller"),
        };
        let mut extra = extra;
        extra["concurrencyPolicy"] = serde_json::json!(policy);
        let mut cj = cronjob("* * * * *", "2024-01-01T00:00:00Z", extra);
        cj.metadata.creation_timestamp = None;
        let cj = Api::<CronJob>::namespaced(env.admin_client(), "default")
            .create(&PostParams::default(), &cj)
            .await
            .expect("creating the cronjob");
        (env, st, cj)
    }

    async fn fresh(env: &TestEnv) -> CronJob {
        Api::<CronJob>::namespaced(env.admin_client(), "default")
            .get("cj")
            .await
            .expect("get cronjob")
    }

    async fn jobs(env: &TestEnv) -> Vec<Job> {
        Api::<Job>::namespaced(env.admin_client(), "default")
            .list(&ListParams::default())
            .await
            .expect("list jobs")
            .items
            .into_iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// The n-th minute boundary after the cronjob's creation, plus one second.
    fn minute_after(cj: &CronJob, n: i64) -> Timestamp {
        let created = cj
            .metadata
            .creation_timestamp
            .as_ref()
            .expect("created")
            .0
            .as_second();
        Timestamp::from_second((created.div_euclid(60) + n) * 60 + 1).expect("ts")
    }

    #[tokio::test]
    async fn cronjob_every_minute_creates_job_named_by_scheduled_minute() {
        let (env, st, cj) = setup("Allow", serde_json::json!({})).await;
        sync(&cj, &st, minute_after(&cj, 0)).await.expect("sync");
        assert!(
            jobs(&env).await.is_empty(),
            "nothing before the first boundary"
        );
        let now = minute_after(&cj, 1);
        let scheduled = Timestamp::from_second(now.as_second() - 1).expect("ts");
        sync(&cj, &st, now).await.expect("sync");
        let js = jobs(&env).await;
        assert_eq!(js.len(), 1);
        assert_eq!(js[0].name_any(), job_name("cj", scheduled));
        assert_eq!(
            js[0]
                .annotations()
                .get(SCHEDULED_TIMESTAMP)
                .map(String::as_str),
            Some(format_rfc3339(scheduled, &TimeZone::UTC).as_str())
        );
        assert!(is_controlled_by(&js[0].metadata, &cj.uid().expect("uid")));
        let cj = fresh(&env).await;
        let status = cj.status.clone().expect("status");
        assert_eq!(status.last_schedule_time.map(|t| t.0), Some(scheduled));
        assert_eq!(status.active.map(|a| a.len()), Some(1));
        // The same schedule again is idempotent.
        sync(&cj, &st, now).await.expect("sync");
        assert_eq!(jobs(&env).await.len(), 1);
        // Allow: the next minute starts another while the first runs.
        sync(&cj, &st, minute_after(&cj, 2)).await.expect("sync");
        assert_eq!(jobs(&env).await.len(), 2);
    }

    #[tokio::test]
    async fn cronjob_forbid_does_not_start_second_while_one_is_active() {
        let (env, st, cj) = setup("Forbid", serde_json::json!({})).await;
        sync(&cj, &st, minute_after(&cj, 1)).await.expect("sync");
        let cj = fresh(&env).await;
        sync(&cj, &st, minute_after(&cj, 2)).await.expect("sync");
        assert_eq!(jobs(&env).await.len(), 1);
    }

    #[tokio::test]
    async fn cronjob_replace_deletes_the_running_job() {
        let (env, st, cj) = setup("Replace", serde_json::json!({})).await;
        sync(&cj, &st, minute_after(&cj, 1)).await.expect("sync");
        let first = jobs(&env).await[0].name_any();
        let cj = fresh(&env).await;
        sync(&cj, &st, minute_after(&cj, 2)).await.expect("sync");
        let names: Vec<String> = jobs(&env).await.iter().map(|j| j.name_any()).collect();
        assert_eq!(names.len(), 1);
        assert_ne!(names[0], first);
        let active = fresh(&env)
            .await
            .status
            .and_then(|s| s.active)
            .expect("active");
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].name.as_deref(), Some(names[0].as_str()));
    }

    #[tokio::test]
    async fn cronjob_history_limits_prune_oldest_finished_jobs() {
        let (env, st, cj) = setup(
            "Allow",
            serde_json::json!({"successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1}),
        )
        .await;
        let admin: Api<Job> = Api::namespaced(env.admin_client(), "default");
        for (i, kind) in ["Complete", "Complete", "Complete", "Failed", "Failed"]
            .iter()
            .enumerate()
        {
            let mut job = Job {
                metadata: kube::api::ObjectMeta {
                    name: Some(format!("old-{i}")),
                    owner_references: Some(vec![controller_ref(&cj)]),
                    ..Default::default()
                },
                spec: cj.spec.as_ref().and_then(|s| s.job_template.spec.clone()),
                status: None,
            };
            if let Some(spec) = job.spec.as_mut() {
                spec.suspend = Some(true);
            }
            admin
                .create(&PostParams::default(), &job)
                .await
                .expect("create job");
            let start = format!("2024-05-01T10:0{i}:00Z");
            let patch = serde_json::json!({"status": {
                "startTime": start,
                "completionTime": if *kind == "Complete" { Some(start.clone()) } else { None },
                "conditions": [{"type": kind, "status": "True", "lastTransitionTime": start}]
            }});
            admin
                .patch_status(
                    &format!("old-{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .expect("finish job");
        }
        sync(&cj, &st, minute_after(&cj, 0)).await.expect("sync");
        let mut names: Vec<String> = jobs(&env).await.iter().map(|j| j.name_any()).collect();
        names.sort();
        assert_eq!(names, vec!["old-2", "old-4"]);
    }
}
