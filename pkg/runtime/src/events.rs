//! Recording core/v1 Events (what `kubectl describe` and `kubectl get events` read), with
//! upstream-style aggregation of repeats into `count` and `lastTimestamp`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(&self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Repeats within this window update the existing Event instead of creating a new one.
const AGGREGATION_WINDOW: Duration = Duration::from_secs(600);

struct Seen {
    name: String,
    namespace: String,
    count: i32,
    at: Instant,
}

/// Writes Events on behalf of one component (`deployment-controller`, `default-scheduler`, ...).
pub struct EventRecorder {
    client: kube::Client,
    component: String,
    host: Option<String>,
    seen: Mutex<HashMap<(String, String, String, String), Seen>>,
}

impl EventRecorder {
    pub fn new(client: kube::Client, component: &str) -> Self {
        EventRecorder {
            client,
            component: component.to_string(),
            host: None,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Sets `source.host` (agents report their node name).
    pub fn with_host(mut self, host: &str) -> Self {
        self.host = Some(host.to_string());
        self
    }

    /// Records an Event about `regarding`. Failures are returned but callers usually log and
    /// go on: an Event is never worth failing a reconcile for.
    pub async fn record(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        let namespace = regarding
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let key = (
            regarding.uid.clone().unwrap_or_default(),
            regarding.name.clone().unwrap_or_default(),
            reason.to_string(),
            message.to_string(),
        );
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let repeat = {
            let mut seen = self.seen.lock().expect("event cache poisoned");
            seen.retain(|_, s| s.at.elapsed() < AGGREGATION_WINDOW);
            seen.get_mut(&key).map(|s| {
                s.count += 1;
                s.at = Instant::now();
                (s.name.clone(), s.namespace.clone(), s.count)
            })
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Some((name, ns, count)) = repeat {
            let patch = serde_json::json!({"count": count, "lastTimestamp": now});
            let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let name = format!(
            "{}.{:016x}",
            regarding.name.clone().unwrap_or_default(),
            rand::random::<u64>()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: regarding.clone(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(type_.as_str().to_string()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: self.host.clone(),
            }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.host.clone().unwrap_or_else(|| self.component.clone())),
            ..Default::default()
        };
        api.create(&PostParams::default(), &event).await?;
        self.seen.lock().expect("event cache poisoned").insert(
            key,
            Seen {
                name,
                namespace,
                count: 1,
                at: Instant::now(),
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ListParams;

    #[tokio::test]
    async fn record_twice_aggregates_into_one_event_with_count_two() {
        let env = mini_testenv::TestEnv::start().await;
        let rec = EventRecorder::new(env.admin_client(), "test-controller");
        let regarding = ObjectReference {
            kind: Some("Pod".into()),
            name: Some("p1".into()),
            namespace: Some("default".into()),
            uid: Some("u1".into()),
            api_version: Some("v1".into()),
            ..Default::default()
        };
        rec.record(&regarding, EventType::Warning, "Failed", "it broke")
            .await
            .unwrap();
        rec.record(&regarding, EventType::Warning, "Failed", "it broke")
            .await
            .unwrap();
        let api: Api<Event> = Api::namespaced(env.admin_client(), "default");
        let events = api
            .list(&ListParams::default().fields("involvedObject.name=p1"))
            .await
            .unwrap();
        assert_eq!(events.items.len(), 1);
        assert_eq!(events.items[0].count, Some(2));
        assert_eq!(
            events.items[0]
                .source
                .as_ref()
                .unwrap()
                .component
                .as_deref(),
            Some("test-controller")
        );
    }
}
